"""SigLIP vision tower (PaliGemma's image encoder), without the pooling head.

Module names follow transformers' SiglipVisionModel so that openpi checkpoint keys
(``...vision_tower.vision_model.encoder.layers.{i}.self_attn.q_proj.weight``) map 1:1.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SiglipConfig
from .layers import LayerNorm, Linear, gelu_tanh


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """(grid*grid, width) 2-D sine-cosine position table (MAE's), row-major like the patches:
    half the channels encode the patch row, half the column, each as sin/cos at width/4
    frequencies. Values in [-1, 1]."""
    if width % 4:
        raise ValueError(f"width {width} must be divisible by 4 for a 2-D sincos table")
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))  # (W/4,)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for pos in (rows.reshape(-1), cols.reshape(-1)):
        angles = pos[:, None] * omega[None]  # (T, W/4)
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()  # (T, W)


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.tokens_per_image, cfg.width)

    @torch.no_grad()
    def init_position_table(self) -> None:
        """Random-init only (pretrained checkpoints bring their own table): a 2-D sincos table at
        the scale of the usual N(0, 1/width) init. Neighbouring patches start out similar and
        image coordinates are linearly readable, so a tower trained from scratch on a few
        hundred demonstrations learns where an object is far sooner than from a random table."""
        w = self.position_embedding.weight
        grid = int(round(w.shape[0] ** 0.5))
        table = sincos_2d(grid, w.shape[1]) * (2.0 / w.shape[1]) ** 0.5  # element std ~ width**-0.5
        w.copy_(table.to(device=w.device, dtype=w.dtype))

    def forward(self, pixels: Tensor) -> Tensor:
        # pixels (N, 3, S, S) -> (N, T, W); patch conv and position table stay float32
        w = self.patch_embedding.weight
        x = F.conv2d(pixels.to(w.dtype), w, self.patch_embedding.bias, stride=self.patch_embedding.stride)
        return x.flatten(2).transpose(1, 2) + self.position_embedding.weight


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.width // cfg.num_heads
        self.q_proj = Linear(cfg.width, cfg.width)
        self.k_proj = Linear(cfg.width, cfg.width)
        self.v_proj = Linear(cfg.width, cfg.width)
        self.out_proj = Linear(cfg.width, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        N, T, W = x.shape
        q = self.q_proj(x).view(N, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(N, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(N, T, self.num_heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, h, T, d), full bidirectional
        return self.out_proj(y.transpose(1, 2).reshape(N, T, W))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.fc1 = Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layer_norm1 = LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.depth))
        self.gradient_checkpointing = False  # recompute each layer in backward (training memory)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, T, W) -> (N, T, W)."""
        for layer in self.layers:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, pixels: Tensor, dtype=None) -> Tensor:
        """pixels (N, 3, S, S) in [-1, 1] -> (N, T, W) token features in ``dtype``."""
        x = self.embeddings(pixels)
        if dtype is not None:
            x = x.to(dtype)
        return self.post_layernorm(self.encoder(x))


class SiglipVisionTower(nn.Module):
    """Wrapper so parameter names read ``vision_tower.vision_model.*`` as in transformers."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.config = cfg
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, pixels: Tensor, dtype=None) -> Tensor:
        return self.vision_model(pixels, dtype=dtype)
