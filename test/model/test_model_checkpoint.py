"""Checkpoints: our round trip, openpi / LeRobot layouts and configs, defensive errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from model_test_helpers import MICRO, make_inputs, make_model
from safetensors.torch import load_file, save_file

from pi0_ros.model import CheckpointError, PI0Model, load_checkpoint, save_checkpoint
from pi0_ros.model.checkpoint import EMBED_KEY, LM_HEAD_KEY, config_from_dict

EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"


def _outputs(model: PI0Model) -> torch.Tensor:
    inputs = make_inputs(model.config, batch=2, seed=5)
    noise = torch.randn(2, model.config.chunk_size, model.config.action_dim, generator=torch.Generator().manual_seed(9))
    return model.sample_actions(inputs, noise=noise, num_steps=3)


def _write(directory, state: dict, config: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = make_model()
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    keys = set(load_file(str(tmp_path / "ckpt" / "model.safetensors")))
    assert keys == set(model.state_dict())
    assert "paligemma_with_expert.paligemma.model.language_model.layers.0.self_attn.q_proj.weight" in keys
    assert "paligemma_with_expert.gemma_expert.model.layers.1.mlp.gate_proj.weight" in keys
    assert "paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias" in keys
    assert "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight" in keys
    assert {"state_proj.bias", "action_in_proj.weight", "action_time_mlp_in.weight", "action_out_proj.bias"} <= keys
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_bfloat16_round_trip_and_dtype_override(tmp_path):
    torch.manual_seed(0)
    model = PI0Model(dataclasses.replace(MICRO, dtype="bfloat16"))
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.vlm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert loaded.vlm.layers[0].input_layernorm.weight.dtype == torch.float32
    assert torch.equal(_outputs(loaded), _outputs(model))
    as_fp32 = load_checkpoint(tmp_path, dtype=torch.float32)
    assert as_fp32.config.dtype == "float32"
    assert as_fp32.vlm.layers[0].mlp.up_proj.weight.dtype == torch.float32
    assert torch.equal(as_fp32.vlm.layers[0].mlp.up_proj.weight, model.vlm.layers[0].mlp.up_proj.weight.float())


def test_openpi_layout_with_tied_embedding_only_as_lm_head(tmp_path):
    model = make_model()
    state = dict(model.state_dict())
    state[LM_HEAD_KEY] = state.pop(EMBED_KEY)  # safetensors dedup kept only lm_head
    state[EXPERT_LM_HEAD] = torch.randn(MICRO.vocab_size, MICRO.expert.width)  # unused, ignored
    _write(tmp_path, state, {"format": "pi0_ros", **MICRO.to_dict()})
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded.vlm.embed_tokens.weight, model.vlm.embed_tokens.weight)
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_openpi_layout_with_both_embed_and_lm_head(tmp_path):
    model = make_model()
    state = dict(model.state_dict())
    state[LM_HEAD_KEY] = state[EMBED_KEY].clone()
    _write(tmp_path, state, MICRO.to_dict())
    assert torch.equal(_outputs(load_checkpoint(tmp_path)), _outputs(model))


def test_lerobot_prefixed_layout(tmp_path):
    model = make_model()
    state = {"model." + k: v for k, v in model.state_dict().items()}
    state["model." + LM_HEAD_KEY] = state.pop("model." + EMBED_KEY)
    _write(tmp_path, state, {"format": "pi0_ros", **MICRO.to_dict()})
    assert torch.equal(_outputs(load_checkpoint(tmp_path)), _outputs(model))


def test_legacy_transformers_names(tmp_path):
    model = make_model()
    state = {}
    for k, v in model.state_dict().items():
        k = k.replace("paligemma.model.language_model.", "paligemma.language_model.model.")
        k = k.replace("paligemma.model.vision_tower.", "paligemma.vision_tower.")
        k = k.replace("paligemma.model.multi_modal_projector.", "paligemma.multi_modal_projector.")
        state[k] = v
    _write(tmp_path, state, MICRO.to_dict())
    assert torch.equal(_outputs(load_checkpoint(tmp_path)), _outputs(model))


def _broken(tmp_path, edit) -> str:
    model = make_model()
    state = dict(model.state_dict())
    edit(state)
    _write(tmp_path, state, MICRO.to_dict())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    return str(info.value)


def test_missing_key_is_named(tmp_path):
    key = "paligemma_with_expert.gemma_expert.model.layers.1.self_attn.o_proj.weight"
    msg = _broken(tmp_path, lambda s: s.pop(key))
    assert "missing" in msg and key in msg


def test_missing_embedding_is_named(tmp_path):
    msg = _broken(tmp_path, lambda s: s.pop(EMBED_KEY))
    assert EMBED_KEY in msg


def test_unexpected_key_is_named(tmp_path):
    msg = _broken(tmp_path, lambda s: s.update({"time_mlp_in.weight": torch.zeros(2, 2)}))
    assert "unexpected" in msg and "time_mlp_in.weight" in msg


def test_misshapen_key_is_named(tmp_path):
    key = "action_out_proj.weight"
    msg = _broken(tmp_path, lambda s: s.update({key: torch.zeros(MICRO.action_dim + 1, MICRO.expert.width)}))
    assert "misshapen" in msg and key in msg and "(7, 32)" in msg


def test_all_problems_reported_together(tmp_path):
    def edit(s):
        s.pop("state_proj.bias")
        s["extra.weight"] = torch.zeros(1)
        s["action_in_proj.bias"] = torch.zeros(3)

    msg = _broken(tmp_path, edit)
    assert "state_proj.bias" in msg and "extra.weight" in msg and "action_in_proj.bias" in msg


def test_missing_files_and_bad_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unrecognised format"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(MICRO.to_dict()))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**MICRO.to_dict(), "action_dim": -3}))
    with pytest.raises(CheckpointError, match="action_dim"):
        load_checkpoint(tmp_path)


def test_openpi_and_lerobot_config_formats():
    openpi = config_from_dict(
        {
            "action_dim": 32,
            "action_horizon": 50,
            "paligemma_variant": "gemma_2b",
            "action_expert_variant": "gemma_300m",
            "precision": "bfloat16",
        }
    )
    from pi0_ros.model import get_preset

    assert openpi == get_preset("full")
    lerobot = config_from_dict(
        {
            "type": "pi0",
            "paligemma_variant": "gemma_2b",
            "action_expert_variant": "gemma_300m",
            "dtype": "float32",
            "chunk_size": 50,
            "n_action_steps": 50,
            "max_state_dim": 32,
            "max_action_dim": 32,
            "tokenizer_max_length": 48,
            "image_resolution": [224, 224],
        }
    )
    assert lerobot == get_preset("full", dtype="float32")
    # pi0.5 configs: test_model_pi05.py
    with pytest.raises(CheckpointError, match="pi0fast"):
        config_from_dict({"type": "pi0fast", "max_action_dim": 32})
    with pytest.raises(CheckpointError, match="paligemma_variant"):
        config_from_dict({"action_horizon": 50, "paligemma_variant": "gemma_7b"})


def test_full_model_expects_openpi_key_names():
    """The full model's parameter names are exactly the openpi PyTorch checkpoint keys."""
    from pi0_ros.model import get_preset

    keys = set(PI0Model(get_preset("full"), device="meta").state_dict())
    p = "paligemma_with_expert.paligemma.model."
    for i in (0, 17):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"):
            assert f"{p}language_model.layers.{i}.{name}.weight" in keys
            assert f"paligemma_with_expert.gemma_expert.model.layers.{i}.{name}.weight" in keys
    for i in (0, 26):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                     "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            for suffix in ("weight", "bias"):
                assert f"{p}vision_tower.vision_model.encoder.layers.{i}.{name}.{suffix}" in keys
    assert f"{p}language_model.norm.weight" in keys
    assert f"{p}language_model.embed_tokens.weight" in keys
    assert "paligemma_with_expert.gemma_expert.model.norm.weight" in keys
    assert f"{p}vision_tower.vision_model.post_layernorm.weight" in keys
    assert f"{p}vision_tower.vision_model.embeddings.patch_embedding.weight" in keys
    assert f"{p}vision_tower.vision_model.embeddings.position_embedding.weight" in keys
    assert f"{p}multi_modal_projector.linear.bias" in keys
    assert not any("lm_head" in k for k in keys)
    assert len(keys) == 2 + 1 + 27 * 16 + 2 + 2 + 1 + 18 * 9 + 1 + 18 * 9 + 1 + 10
