"""Image preprocessing for π0: aspect-preserving resize with black padding, then [-1, 1] CHW.

Conventions (openpi, see docs/pi0-facts.md):
- input images are RGB, HWC, uint8;
- `resize_with_pad` keeps the aspect ratio and pads with black (0) so the image is centred,
  putting the odd pixel of padding on the bottom / right (openpi `image_tools.resize_with_pad`);
- the model sees float32 CHW values in [-1, 1]: `x / 255 * 2 - 1`;
- a missing camera is an all-zero uint8 image (-1.0 after scaling) with a False mask.

Interpolation differs from openpi in one detail: openpi resizes with an antialiased bilinear
filter (jax.image.resize); here OpenCV's INTER_AREA is used for shrinking (also antialiased,
and much faster) and INTER_LINEAR for enlarging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch

from pi0_ros.images import _check_rgb_uint8, resize_with_pad, resized_shape  # noqa: F401 (re-exported)

from .config import CAMERA_NAMES

# Camera slot names in the order the model sees them (PI0Config.camera_names is a prefix).
CAMERA_SLOTS: tuple[str, ...] = CAMERA_NAMES

IMAGE_SIZE = 224  # SigLIP input resolution, pixels.


def images_to_model(
    images: Mapping[str, np.ndarray | None],
    camera_slots: Sequence[str] = CAMERA_SLOTS,
    height: int = IMAGE_SIZE,
    width: int = IMAGE_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn per-slot RGB uint8 images into the model's image tensors.

    Args:
        images: camera slot name -> (H, W, 3) uint8 RGB image. Missing slots (or None) are
            allowed; keys that are not in `camera_slots` raise ValueError.
        camera_slots: the model's slots, in model order.

    Returns:
        pixels: (N_cam, 3, height, width) float32 in [-1, 1]; a missing camera is all -1
            (an all-black uint8 image, as openpi fills missing cameras).
        mask: (N_cam,) bool, True where the camera was present.
    """
    unknown = sorted(set(images) - set(camera_slots))
    if unknown:
        raise ValueError(f"unknown camera slot(s) {unknown}; the model's slots are {list(camera_slots)}")
    n = len(camera_slots)
    staging = np.zeros((n, height, width, 3), dtype=np.uint8)  # HWC uint8, resized in place
    mask = torch.zeros(n, dtype=torch.bool)
    for i, slot in enumerate(camera_slots):
        img = images.get(slot)
        if img is None:
            continue
        _check_rgb_uint8(img, name=slot)
        if img.shape[:2] == (height, width):
            staging[i] = img
        else:
            resize_with_pad(img, height, width, out=staging[i])
        mask[i] = True
    # HWC -> CHW on the uint8 bytes (4x less to move), then one float32 allocation scaled in place.
    # (A converting copy_ from the permuted uint8 view takes a slow strided path: 100x slower.)
    pixels = torch.from_numpy(staging).permute(0, 3, 1, 2).contiguous().to(torch.float32)
    pixels.div_(127.5).sub_(1.0)  # x / 255 * 2 - 1; 127.5 is exact, so 0 -> -1 and 255 -> 1 exactly
    return pixels, mask
