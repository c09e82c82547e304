"""Small building blocks shared by the SigLIP and Gemma stacks.

Mixed precision convention (openpi): big matrices may be bfloat16, norms are computed in
float32, and every layer casts its input to its own weight dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Linear(nn.Linear):
    """nn.Linear that casts its input to the weight dtype (bf16 matrices, fp32 activations)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, returned in the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """Gemma RMSNorm: ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = F.rms_norm(x.float(), self.weight.shape, eps=self.eps)  # x * rsqrt(mean(x^2) + eps)
        return (y * (1.0 + self.weight.float())).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class AdaRMSNorm(nn.Module):
    """π0.5's adaptive RMSNorm (openpi ``RMSNorm`` with ``cond``; "adaRMS").

    A linear map of the conditioning vector (the action expert's time embedding) predicts a
    per-sample scale, shift and residual gate: ``y = rmsnorm(x) * (1 + scale) + shift``; the
    caller multiplies the residual branch by ``gate`` (see ``gated_residual``). There is no
    learned weight: the scale lives in ``dense``'s bias. Computed in float32 like RMSNorm.
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = Linear(cond_dim, 3 * dim)  # -> [scale | shift | gate], openpi's order

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, W), cond (B, C) -> (normalised x (B, L, W) in x's dtype, gate (B, 1, W))."""
        if cond.ndim != 2 or cond.shape[0] != x.shape[0]:
            raise ValueError(f"adaRMS cond must be (B={x.shape[0]}, C), got {tuple(cond.shape)}")
        scale, shift, gate = self.dense(cond.float()).float()[:, None, :].chunk(3, dim=-1)
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return (y * (1.0 + scale) + shift).to(x.dtype), gate.to(x.dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")
