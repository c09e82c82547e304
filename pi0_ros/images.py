"""Image decoding/encoding between ROS image fields and numpy (ROS-free).

The nodes pass a sensor_msgs/Image's fields (or a CompressedImage's bytes) here and get an
RGB uint8 array (H, W, 3). Supported encodings: rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, 8UC3
(taken as bgr8, OpenCV's default), mono16, 16UC1 (scaled to 8 bit), rgb16, bgr16. Also the
model's aspect-preserving `resize_with_pad` (torch-free, so the observation node needs no torch),
and a camera's region of interest (`crop_region`), applied before it wherever a camera image
becomes a model image: the observation node, bag -> dataset conversion and VLM grounding renders.
"""
from __future__ import annotations

import cv2
import numpy as np

# encoding -> (channels, numpy dtype)
ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "8UC3": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "8UC1": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
    "rgb16": (3, np.dtype(np.uint16)),
    "bgr16": (3, np.dtype(np.uint16)),
}


class ImageDecodeError(ValueError):
    """An image message cannot be decoded; the message says why."""


def decode_raw(height: int, width: int, encoding: str, step: int, is_bigendian: bool,
               data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """sensor_msgs/Image fields -> RGB uint8 (H, W, 3). Validates sizes; never reads past data."""
    if encoding not in ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"empty image {width}x{height}")
    ch, dtype = ENCODINGS[encoding]
    row_bytes = width * ch * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(f"step {step} < width*channels*bytes {row_bytes}")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageDecodeError(f"data has {buf.size} bytes, {encoding} {width}x{height} step {step} needs {step * height}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1))
    px = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if is_bigendian else "<") if dtype.itemsize > 1 else dtype)
    px = px.reshape(height, width, ch)
    if dtype.itemsize > 1:
        # 16 bit -> 8 bit over the full range (depth in mm becomes a coarse grey image).
        px = (px.astype(np.uint32) >> 8).astype(np.uint8)
    if encoding in ("rgb8", "rgb16"):
        return px if px.flags.c_contiguous else np.ascontiguousarray(px)
    if encoding in ("bgr8", "8UC3", "bgr16"):
        return cv2.cvtColor(px, cv2.COLOR_BGR2RGB)
    if encoding == "rgba8":
        return cv2.cvtColor(px, cv2.COLOR_RGBA2RGB)
    if encoding == "bgra8":
        return cv2.cvtColor(px, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(px[..., 0], cv2.COLOR_GRAY2RGB)  # mono


def decode_compressed(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """sensor_msgs/CompressedImage data (jpeg/png) -> RGB uint8 (H, W, 3)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    if buf.size == 0:
        raise ImageDecodeError("empty CompressedImage")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageDecodeError("CompressedImage data is not a decodable jpeg/png")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) -> jpeg/png bytes (for tests, the simulator and recording)."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageDecodeError(f"cannot encode {fmt}")
    return enc.tobytes()


def _check_rgb_uint8(img: np.ndarray, name: str = "image") -> None:
    """Raise ValueError unless `img` is an (H, W, 3) uint8 array with H, W >= 1."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        raise ValueError(
            f"{name}: grayscale image of shape {img.shape}; π0 expects RGB (H, W, 3). "
            "Convert explicitly, e.g. np.repeat(img[..., None], 3, axis=-1)."
        )
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name}: expected an RGB image of shape (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {img.dtype}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{name}: empty image of shape {img.shape}")


Crop = tuple[float, float, float, float]  # (top, left, height, width) as fractions of the image


def check_crop(crop: object, name: str = "crop") -> Crop:
    """Validate a region of interest [top, left, height, width] (fractions of the image's height
    and width); return it as a tuple of floats. Raises ValueError saying what is wrong."""
    if not isinstance(crop, (list, tuple)) or len(crop) != 4:
        raise ValueError(f"{name}: expected [top, left, height, width] as fractions of the image, got {crop!r}")
    try:
        top, left, h, w = (float(v) for v in crop)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected four numbers [top, left, height, width], got {crop!r}") from None
    if not all(np.isfinite((top, left, h, w))):
        raise ValueError(f"{name}: values must be finite, got {crop!r}")
    if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > 1 + 1e-9 or left + w > 1 + 1e-9:
        raise ValueError(f"{name}: [top, left, height, width] = {crop!r} must satisfy 0 <= top, 0 <= left, "
                         "0 < height, 0 < width, top + height <= 1 and left + width <= 1 (fractions of the image)")
    return top, left, h, w


def crop_region(img: np.ndarray, crop: Crop | None) -> np.ndarray:
    """The region of interest of an (H, W, 3) image (a view, no copy); `crop` = (top, left,
    height, width) as fractions of H and W (see `check_crop`), None = the whole image.

    Fractions rather than pixels, so one setting serves the camera's native frames (e.g. 640x480
    on the robot) and the 224x224 frames stored in datasets alike. Rows and columns are rounded to
    the nearest pixel; the region is at least 1x1.
    """
    if crop is None:
        return img
    top, left, h, w = crop
    rows, cols = img.shape[:2]
    r0 = min(rows - 1, int(round(top * rows)))
    c0 = min(cols - 1, int(round(left * cols)))
    r1 = min(rows, r0 + max(1, int(round(h * rows))))
    c1 = min(cols, c0 + max(1, int(round(w * cols))))
    return img[r0:r1, c0:c1]


def model_image(img: np.ndarray, crop: Crop | None, size: int) -> np.ndarray:
    """A camera frame (H, W, 3) uint8 as the model sees it: its region of interest, resized with
    padding to (size, size, 3). The one definition the observation node, bag2dataset, the VLM
    grounding renders and diagnose-grasp share, so training and serving see the same pixels."""
    return resize_with_pad(crop_region(img, crop), size, size)


def resized_shape(cur_height: int, cur_width: int, height: int, width: int) -> tuple[int, int]:
    """Size (h, w) of the image content inside the padded output (openpi's formula)."""
    ratio = max(cur_width / width, cur_height / height)
    return max(1, int(cur_height / ratio)), max(1, int(cur_width / ratio))


def resize_with_pad(
    img: np.ndarray,
    height: int = 224,
    width: int = 224,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Resize an (H, W, 3) uint8 RGB image to (height, width, 3) keeping its aspect ratio.

    The image is scaled so that it fits, centred, and the rest is filled with black (0).
    With an odd amount of padding the extra row/column goes to the bottom/right, as in
    openpi (and tf.image.resize_with_pad). `out`, if given, must be a (height, width, 3)
    uint8 array; it is filled in place and returned (no other allocation).
    """
    _check_rgb_uint8(img)
    cur_h, cur_w = img.shape[:2]
    new_h, new_w = resized_shape(cur_h, cur_w, height, width)
    if out is None:
        out = np.zeros((height, width, 3), dtype=np.uint8)
    else:
        if out.shape != (height, width, 3) or out.dtype != np.uint8:
            raise ValueError(f"out: expected ({height}, {width}, 3) uint8, got {out.shape} {out.dtype}")
        out.fill(0)
    top = (height - new_h) // 2
    left = (width - new_w) // 2
    region = out[top : top + new_h, left : left + new_w]
    if (new_h, new_w) == (cur_h, cur_w):
        region[...] = img
    else:
        shrinking = new_h < cur_h or new_w < cur_w
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        if not img.flags.c_contiguous:
            img = np.ascontiguousarray(img)
        result = cv2.resize(img, (new_w, new_h), dst=region, interpolation=interpolation)
        if not np.shares_memory(result, out):  # OpenCV chose its own buffer; copy it in.
            region[...] = result
    return out
