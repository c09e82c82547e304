"""Config validation, presets, serialisation, the meta-device build and the dtype policy."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_test_helpers import MICRO

from pi0_ros.model import PRESETS, GemmaConfig, PI0Config, PI0Model, SiglipConfig, get_preset
from pi0_ros.model.pi0 import keeps_fp32


def test_presets_are_valid_and_round_trip_through_dicts():
    assert {"full", "tiny", "small"} <= set(PRESETS)
    for name, cfg in PRESETS.items():
        assert PI0Config.from_dict(cfg.to_dict()) == cfg, name
    full = PRESETS["full"]
    assert (full.vision.width, full.vision.depth, full.vision.mlp_dim, full.vision.patch_size) == (1152, 27, 4304, 14)
    assert (full.vlm.width, full.vlm.depth, full.vlm.mlp_dim, full.vlm.num_kv_heads, full.vlm.head_dim) == (
        2048, 18, 16384, 1, 256,
    )
    assert (full.expert.width, full.expert.mlp_dim) == (1024, 4096)
    assert (full.vocab_size, full.action_dim, full.chunk_size, full.max_token_len) == (257152, 32, 50, 48)
    assert full.vision.tokens_per_image == 256
    assert full.camera_names == ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


def test_get_preset_overrides_and_unknown_name():
    cfg = get_preset("tiny", num_cameras=2, dtype="bfloat16")
    assert cfg.num_cameras == 2 and cfg.dtype == "bfloat16"
    assert get_preset("tiny").num_cameras == 3
    with pytest.raises(ValueError, match=r"unknown pi0 preset 'huge'.*full.*small.*tiny"):
        get_preset("huge")


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(expert=dataclasses.replace(MICRO.expert, depth=3)), "expert.depth"),
        (dict(expert=dataclasses.replace(MICRO.expert, num_heads=2)), "expert.num_heads"),
        (dict(expert=dataclasses.replace(MICRO.expert, head_dim=8)), "expert.head_dim"),
        (dict(action_dim=0), "action_dim must be a positive"),
        (dict(chunk_size=-1), "chunk_size must be a positive"),
        (dict(num_cameras=4), "num_cameras"),
        (dict(dtype="float8"), "dtype must be one of"),
    ],
)
def test_invalid_pi0_config(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(MICRO, **change)


def test_invalid_sub_configs():
    with pytest.raises(ValueError, match="multiple of"):
        GemmaConfig(width=8, depth=1, mlp_dim=8, num_heads=3, num_kv_heads=2, head_dim=4)
    with pytest.raises(ValueError, match="even"):
        GemmaConfig(width=8, depth=1, mlp_dim=8, num_heads=2, num_kv_heads=1, head_dim=5)
    with pytest.raises(ValueError, match="image_size"):
        SiglipConfig(width=8, depth=1, mlp_dim=8, num_heads=2, patch_size=14, image_size=100)
    with pytest.raises(ValueError, match="width must be a positive"):
        SiglipConfig(width=0, depth=1, mlp_dim=8, num_heads=2, patch_size=14)
    with pytest.raises(ValueError, match="unknown PI0Config fields"):
        PI0Config.from_dict({**MICRO.to_dict(), "bogus": 1})


def test_full_param_count_on_meta_device():
    model = PI0Model(PRESETS["full"], device="meta")
    n = model.num_parameters()
    assert 3.2e9 <= n <= 3.6e9, n
    assert all(p.is_meta for p in model.parameters())
    # big matrices bf16, norms / patch / position embeddings / action heads fp32
    params = dict(model.named_parameters())
    layer = "paligemma_with_expert.paligemma.model.language_model.layers.0."
    assert params[layer + "self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert params[layer + "self_attn.q_proj.weight"].shape == (2048, 2048)
    assert params[layer + "self_attn.k_proj.weight"].shape == (256, 2048)
    assert params[layer + "input_layernorm.weight"].dtype == torch.float32
    assert params["paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"].dtype == torch.bfloat16
    assert params["paligemma_with_expert.gemma_expert.model.layers.17.mlp.up_proj.weight"].shape == (4096, 1024)
    vt = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
    assert params[vt + "embeddings.patch_embedding.weight"].dtype == torch.float32
    assert params[vt + "embeddings.patch_embedding.weight"].shape == (1152, 3, 14, 14)
    assert params[vt + "embeddings.position_embedding.weight"].shape == (256, 1152)
    assert params[vt + "encoder.layers.26.mlp.fc1.weight"].dtype == torch.bfloat16
    assert params["paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight"].shape == (2048, 1152)
    for head in ("state_proj", "action_in_proj", "action_time_mlp_in", "action_time_mlp_out", "action_out_proj"):
        assert params[head + ".weight"].dtype == torch.float32
    assert params["action_time_mlp_in.weight"].shape == (1024, 2048)
    assert params["action_out_proj.weight"].shape == (32, 1024)


def test_dtype_policy_names():
    assert keeps_fp32("paligemma_with_expert.gemma_expert.model.norm.weight")
    assert keeps_fp32("paligemma_with_expert.gemma_expert.model.layers.3.post_attention_layernorm.weight")
    vt = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
    assert keeps_fp32(vt + "encoder.layers.0.layer_norm1.bias")
    assert keeps_fp32(vt + "embeddings.patch_embedding.weight")
    assert not keeps_fp32(vt + "encoder.layers.0.mlp.fc1.weight")
    assert not keeps_fp32("paligemma_with_expert.gemma_expert.model.layers.3.mlp.down_proj.weight")


def test_bfloat16_model_runs_and_keeps_float32_islands():
    cfg = dataclasses.replace(MICRO, dtype="bfloat16")
    torch.manual_seed(0)
    model = PI0Model(cfg).eval()
    assert model.vlm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.vlm.layers[0].input_layernorm.weight.dtype == torch.float32
    from model_test_helpers import make_inputs

    inputs = make_inputs(cfg, batch=2)
    noise = torch.randn(2, cfg.chunk_size, cfg.action_dim)
    out = model.sample_actions(inputs, noise=noise, num_steps=3)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    ref = model.sample_actions_reference(inputs, noise=noise, num_steps=3)
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.05)  # bf16 rounding only
    # same weights in fp32 give nearly the same answer
    fp32 = PI0Model(MICRO).eval()
    fp32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(fp32.sample_actions(inputs, noise=noise, num_steps=3), out, atol=0.1, rtol=0.05)


@pytest.mark.slow
def test_full_model_materialises_once_in_bfloat16():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    model = PI0Model(PRESETS["full"], device="cpu")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert 6.0e9 < n_bytes < 7.5e9  # bf16 matrices, not 13 GB of fp32
    assert peak * 1024 < 1.3 * n_bytes  # never materialised twice
    assert not any(p.is_meta for p in model.parameters())
