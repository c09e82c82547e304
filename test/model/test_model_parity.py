"""Parity at random weights with independent implementations (transformers, test-only)."""

from __future__ import annotations

import pytest
import torch

from pi0_ros.model.config import GemmaConfig, SiglipConfig
from pi0_ros.model.gemma import GemmaStack
from pi0_ros.model.siglip import SiglipVisionTower

transformers = pytest.importorskip("transformers")

ATOL = 1e-5  # fp32, max abs difference


def _perturb_norms(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))


def test_siglip_matches_transformers():
    torch.manual_seed(0)
    cfg = SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=7, image_size=28)
    hf_cfg = transformers.SiglipVisionConfig(
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    hf = transformers.SiglipVisionModel(hf_cfg).eval()
    _perturb_norms(hf)
    ours = SiglipVisionTower(cfg).eval()
    ours.vision_model.load_state_dict(hf.state_dict(), strict=True)  # same names
    pixels = torch.rand(3, 3, 28, 28) * 2 - 1
    with torch.no_grad():
        expected = hf(pixel_values=pixels).last_hidden_state
        got = ours(pixels)
    assert got.shape == (3, cfg.tokens_per_image, cfg.width)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 1), (4, 2)])
def test_gemma_stack_matches_transformers(num_heads, num_kv_heads):
    torch.manual_seed(0)
    cfg = GemmaConfig(width=48, depth=2, mlp_dim=96, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=16)
    hf_cfg = transformers.GemmaConfig(
        vocab_size=64,
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        max_position_embeddings=256,
        attention_dropout=0.0,
    )
    hf_cfg._attn_implementation = "eager"
    hf = transformers.GemmaModel(hf_cfg).eval()
    _perturb_norms(hf)
    ours = GemmaStack(cfg, vocab_size=64).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)

    B, L = 2, 11
    x = torch.randn(B, L, cfg.width)
    pad = torch.ones(B, L, dtype=torch.bool)
    pad[1, :3] = False  # left padding in sample 1
    positions = (torch.cumsum(pad.long(), dim=1) - 1).clamp(min=0)
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    mask = causal[None] & pad[:, None, :] & pad[:, :, None]
    with torch.no_grad():
        expected = hf(inputs_embeds=x, attention_mask=pad.long(), position_ids=positions).last_hidden_state
        got, _ = ours(x, mask, positions)
    valid = pad[..., None].expand_as(got)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[valid], expected[valid], atol=ATOL, rtol=0)
    # RoPE is relative: a uniform shift of positions changes nothing, a stretch does
    with torch.no_grad():
        shifted, _ = ours(x, mask, positions + 5)
        stretched, _ = ours(x, mask, positions * 2)
    torch.testing.assert_close(shifted[valid], expected[valid], atol=1e-4, rtol=0)
    assert (stretched[valid] - expected[valid]).abs().max() > 1e-4


def test_gemma_embedding_scaling_matches_transformers():
    """Our prefix scales text embeddings by sqrt(width) exactly like HF Gemma's scaled embedding."""
    torch.manual_seed(0)
    from pi0_ros.model.pi0 import PI0Model

    from model_test_helpers import MICRO, make_inputs

    model = PI0Model(MICRO).eval()
    inputs = make_inputs(MICRO)
    embs, pad, ar = model.embed_prefix(inputs)
    n_img = MICRO.num_cameras * MICRO.vision.tokens_per_image
    expected = model.vlm.embed_tokens(inputs.tokens) * MICRO.vlm.width**0.5
    torch.testing.assert_close(embs[:, n_img:], expected, atol=1e-6, rtol=1e-6)
    assert embs.shape == (2, n_img + MICRO.max_token_len, MICRO.vlm.width)
    assert not ar.any()
