"""The typed input contract of the pi0 network (already preprocessed, batched tensors)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import PI0Config


@dataclass
class ModelInputs:
    """One batch of observations, ready for the network.

    images:      (B, N_cam, 3, S, S) float in [-1, 1], camera slots in CAMERA_NAMES order
    image_masks: (B, N_cam) bool, False = camera missing (its tokens are padding)
    tokens:      (B, L) int64 prompt token ids, L <= max_token_len
    token_masks: (B, L) bool, False = padding
    state:       (B, action_dim) float, normalised and zero-padded (π0.5 does not read it: its
                 state is text in the tokens, see tokenizer.py)
    """

    images: Tensor
    image_masks: Tensor
    tokens: Tensor
    token_masks: Tensor
    state: Tensor

    def to(self, device: torch.device | str) -> ModelInputs:
        return ModelInputs(
            images=self.images.to(device),
            image_masks=self.image_masks.to(device),
            tokens=self.tokens.to(device),
            token_masks=self.token_masks.to(device),
            state=self.state.to(device),
        )

    @property
    def batch_size(self) -> int:
        return self.state.shape[0]

    def validate(self, config: PI0Config) -> None:
        """Raise ValueError if shapes or dtypes do not fit ``config`` (no device sync)."""
        B = self.state.shape[0] if self.state.ndim == 2 else -1
        s = config.vision.image_size
        errors = []
        if self.state.ndim != 2 or self.state.shape[1] != config.action_dim:
            errors.append(f"state must be (B, {config.action_dim}), got {tuple(self.state.shape)}")
        if self.images.ndim != 5 or self.images.shape[0] != B or tuple(self.images.shape[2:]) != (3, s, s):
            errors.append(f"images must be (B, N_cam, 3, {s}, {s}), got {tuple(self.images.shape)}")
        elif not 1 <= self.images.shape[1] <= config.num_cameras:
            errors.append(f"images has {self.images.shape[1]} cameras, config allows 1..{config.num_cameras}")
        if not self.images.is_floating_point():
            errors.append(f"images must be floating point, got {self.images.dtype}")
        if self.image_masks.shape != self.images.shape[:2] or self.image_masks.dtype != torch.bool:
            errors.append(
                f"image_masks must be bool {tuple(self.images.shape[:2])}, got "
                f"{self.image_masks.dtype} {tuple(self.image_masks.shape)}"
            )
        if self.tokens.ndim != 2 or self.tokens.shape[0] != B or self.tokens.shape[1] > config.max_token_len:
            errors.append(f"tokens must be (B, L<={config.max_token_len}), got {tuple(self.tokens.shape)}")
        if self.tokens.dtype not in (torch.int64, torch.int32):
            errors.append(f"tokens must be int64, got {self.tokens.dtype}")
        if self.token_masks.shape != self.tokens.shape or self.token_masks.dtype != torch.bool:
            errors.append(
                f"token_masks must be bool {tuple(self.tokens.shape)}, got "
                f"{self.token_masks.dtype} {tuple(self.token_masks.shape)}"
            )
        if errors:
            raise ValueError("invalid ModelInputs: " + "; ".join(errors))
