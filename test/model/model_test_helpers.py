"""Shared helpers for the pi0 network tests: a micro config, random inputs, a seeded model.

Imported by the test modules as ``model_test_helpers`` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import dataclasses

import torch

from pi0_ros.model import GemmaConfig, ModelInputs, PI0Config, PI0Model, SiglipConfig

# A config small enough that a forward pass takes milliseconds: 28x28 images, 16 tokens each.
MICRO = PI0Config(
    vision=SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=7, image_size=28),
    vlm=GemmaConfig(width=48, depth=2, mlp_dim=96, num_heads=4, num_kv_heads=1, head_dim=16),
    expert=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=16),
    vocab_size=64,
    action_dim=6,
    chunk_size=5,
    max_token_len=8,
    num_cameras=3,
)

# The same micro geometry as π0.5 (adaRMS expert, no state token). Random prompt tokens stand
# in for the state text, so the short prompt budget is kept.
MICRO_PI05 = dataclasses.replace(MICRO, family="pi05")


def make_inputs(config: PI0Config, batch: int = 2, seed: int = 0, num_cameras: int | None = None) -> ModelInputs:
    """Random inputs with some padding: camera 1 missing for sample 0, ragged prompts."""
    g = torch.Generator().manual_seed(seed)
    n = num_cameras or config.num_cameras
    s = config.vision.image_size
    L = config.max_token_len
    image_masks = torch.ones(batch, n, dtype=torch.bool)
    if n > 1:
        image_masks[0, 1] = False
    token_masks = torch.zeros(batch, L, dtype=torch.bool)
    for b in range(batch):
        token_masks[b, : max(1, L - 3 * b)] = True
    return ModelInputs(
        images=torch.rand(batch, n, 3, s, s, generator=g) * 2 - 1,
        image_masks=image_masks,
        tokens=torch.randint(0, config.vocab_size, (batch, L), generator=g),
        token_masks=token_masks,
        state=torch.randn(batch, config.action_dim, generator=g),
    )


def make_model(config: PI0Config = MICRO, seed: int = 0) -> PI0Model:
    torch.manual_seed(seed)
    model = PI0Model(config).eval()
    # non-zero norm scales so that the parity / caching tests exercise them
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model
