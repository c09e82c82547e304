"""π0.5 beside π0: presets, adaRMS, suffix layout, sampler, loss, checkpoints, prompt format."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from model_test_helpers import MICRO, MICRO_PI05, make_inputs, make_model
from safetensors.torch import save_file

from pi0_ros.model import CheckpointError, PI0Model, get_preset, load_checkpoint, save_checkpoint
from pi0_ros.model.checkpoint import EMBED_KEY, LM_HEAD_KEY, config_from_dict
from pi0_ros.model.layers import AdaRMSNorm, RMSNorm
from pi0_ros.model.pi0 import sinusoidal_time_embedding
from pi0_ros.model.tokenizer import discretize_state, pi05_prompt, tiny_tokenizer

CACHE_ATOL = 1e-5
EXPERT = "paligemma_with_expert.gemma_expert.model."
PI05_HEADS = {"action_in_proj", "time_mlp_in", "time_mlp_out", "action_out_proj"}
PI0_ONLY_HEADS = {"state_proj", "action_time_mlp_in", "action_time_mlp_out"}


def _noise(cfg, batch: int = 2, seed: int = 9) -> torch.Tensor:
    return torch.randn(batch, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(seed))


def _write(directory, state: dict, config: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))


# --------------------------------------------------------------------------- config / presets


def test_pi05_presets_differ_from_pi0_only_where_the_model_does():
    for pi0, pi05 in (("full", "pi05_full"), ("tiny", "pi05_tiny")):
        a, b = get_preset(pi0), get_preset(pi05)
        assert (a.family, b.family) == ("pi0", "pi05")
        assert b.max_token_len == 200 and a.max_token_len == 48  # openpi's prompt budgets
        assert (a.default_norm_mode, b.default_norm_mode) == ("zscore", "quantile")
        assert (a.num_state_tokens, b.num_state_tokens) == (1, 0)
        assert dataclasses.replace(b, family="pi0", max_token_len=48) == a
    with pytest.raises(ValueError, match="family"):
        dataclasses.replace(MICRO, family="pi1")


def test_pi05_full_parameter_names_are_the_openpi_keys():
    """The real-size π0.5 on the meta device: openpi PyTorch key names, adaRMS in the expert only."""
    keys = set(PI0Model(get_preset("pi05_full"), device="meta").state_dict())
    pi0_keys = set(PI0Model(get_preset("full"), device="meta").state_dict())
    heads = {k.split(".")[0] for k in keys if not k.startswith("paligemma_with_expert.")}
    assert heads == PI05_HEADS
    for i in (0, 17):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            assert f"{EXPERT}layers.{i}.{norm}.dense.weight" in keys
            assert f"{EXPERT}layers.{i}.{norm}.dense.bias" in keys
            assert f"{EXPERT}layers.{i}.{norm}.weight" not in keys
            # the VLM keeps Gemma's plain norms
            assert f"paligemma_with_expert.paligemma.model.language_model.layers.{i}.{norm}.weight" in keys
    assert {f"{EXPERT}norm.dense.weight", f"{EXPERT}norm.dense.bias"} <= keys
    assert f"{EXPERT}norm.weight" not in keys
    # same backbone and expert matrices; the 37 expert norms: weight -> dense.{weight,bias}
    shared = {k for k in pi0_keys if not k.split(".")[0] in PI0_ONLY_HEADS and not (k.startswith(EXPERT) and "norm" in k)}
    assert shared <= keys
    assert len(keys) == len(pi0_keys) - 6 + 4 + 37  # -state_proj, -action_time_mlp_*, +time_mlp_*
    model = PI0Model(get_preset("pi05_full"), device="meta")
    dense = model.expert.layers[0].input_layernorm.dense
    assert tuple(dense.weight.shape) == (3 * 1024, 1024) and dense.weight.dtype == torch.float32  # kept fp32
    assert model.time_mlp_in.weight.dtype == torch.float32
    assert model.expert.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


# --------------------------------------------------------------------------- adaRMS


def test_adarms_with_constant_modulation_is_gemma_rmsnorm():
    torch.manual_seed(0)
    W, C = 16, 8
    ada, plain = AdaRMSNorm(W, C), RMSNorm(W)
    w, g = torch.randn(W), torch.randn(W)
    with torch.no_grad():
        plain.weight.copy_(w)
        ada.dense.weight.zero_()
        ada.dense.bias.copy_(torch.cat((w, torch.zeros(W), g)))  # scale = w, shift = 0, gate = g
    x, cond = torch.randn(3, 5, W), torch.randn(3, C)
    y, gate = ada(x, cond)
    torch.testing.assert_close(y, plain(x), atol=1e-6, rtol=0)
    assert gate.shape == (3, 1, W)
    torch.testing.assert_close(gate, g.expand(3, 1, W))
    # per-sample modulation: scale, shift and gate come from each sample's cond, in that order
    with torch.no_grad():
        ada.dense.weight.normal_()
    y, gate = ada(x, cond)
    scale, shift, g2 = ada.dense(cond).chunk(3, dim=-1)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gate, g2[:, None])


def test_fresh_pi05_expert_blocks_start_as_identity():
    """openpi zero-initialises the modulation: gate 0, so the expert layers pass tokens through and
    the velocity is action_out_proj(rmsnorm(action_in_proj(x_t))), whatever the prefix."""
    torch.manual_seed(0)
    model = PI0Model(MICRO_PI05).eval()
    inputs = make_inputs(MICRO_PI05, batch=2)
    x_t, t = _noise(MICRO_PI05), torch.tensor([0.3, 0.9])
    v = model.velocity_uncached(inputs, x_t, t)
    a = model.action_in_proj(x_t)
    expected = model.action_out_proj(torch.nn.functional.rms_norm(a, (a.shape[-1],), eps=1e-6))
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- suffix and sampler


def test_pi05_suffix_has_only_action_tokens_and_a_time_condition():
    model = make_model(MICRO_PI05)
    B, H, D, We = 2, MICRO_PI05.chunk_size, MICRO_PI05.action_dim, MICRO_PI05.expert.width
    x_t = _noise(MICRO_PI05)
    embs, pad, ar, cond = model.embed_suffix(torch.randn(B, D), x_t, torch.tensor([0.2, 0.7]))
    assert embs.shape == (B, H, We) and pad.shape == (B, H) and pad.all()
    assert ar.tolist() == [[1] + [0] * (H - 1)] * B  # one block: actions see the prefix and each other
    assert cond.shape == (B, We)
    # no time in the action tokens (no action-time MLP); the time only reaches the norms
    torch.testing.assert_close(embs, model.action_in_proj(x_t))
    emb = sinusoidal_time_embedding(torch.tensor([0.2, 0.7]), We)
    expected = torch.nn.functional.silu(model.time_mlp_out(torch.nn.functional.silu(model.time_mlp_in(emb))))
    torch.testing.assert_close(cond, expected)
    # π0 for comparison: state token + actions, two blocks
    _, _, ar0, cond0 = make_model(MICRO).embed_suffix(torch.randn(B, D), x_t, torch.tensor([0.2, 0.7]))
    assert ar0[0, :2].tolist() == [1, 1] and cond0 is None


@pytest.mark.parametrize("num_steps", [1, 3, 10])
def test_pi05_cached_equals_uncached(num_steps):
    model = make_model(MICRO_PI05)
    inputs = make_inputs(MICRO_PI05, batch=3)
    noise = _noise(MICRO_PI05, batch=3)
    cached = model.sample_actions(inputs, noise=noise, num_steps=num_steps)
    reference = model.sample_actions_reference(inputs, noise=noise, num_steps=num_steps)
    assert cached.shape == (3, MICRO_PI05.chunk_size, MICRO_PI05.action_dim) and cached.dtype == torch.float32
    torch.testing.assert_close(cached, reference, atol=CACHE_ATOL, rtol=0)
    assert (cached - noise).abs().max() > 1e-3


def test_pi05_ignores_the_continuous_state_and_reads_the_prompt():
    model = make_model(MICRO_PI05)
    inputs = make_inputs(MICRO_PI05, batch=2)
    noise = _noise(MICRO_PI05)
    a = model.sample_actions(inputs, noise=noise, num_steps=2)
    inputs.state = inputs.state + 5.0
    torch.testing.assert_close(model.sample_actions(inputs, noise=noise, num_steps=2), a, atol=0, rtol=0)
    inputs.tokens[:, 0] = (inputs.tokens[:, 0] + 1) % MICRO_PI05.vocab_size
    assert (model.sample_actions(inputs, noise=noise, num_steps=2) - a).abs().max() > 1e-6


def test_pi05_guided_sampling_keeps_the_guide():
    """Real-time chunking's inpainting works unchanged for π0.5."""
    model = make_model(MICRO_PI05)
    inputs = make_inputs(MICRO_PI05, batch=1)
    H, D = MICRO_PI05.chunk_size, MICRO_PI05.action_dim
    guide = torch.randn(1, H, D)
    w = torch.zeros(H)
    w[:2] = 1.0
    out = model.sample_actions(inputs, noise=_noise(MICRO_PI05, batch=1), guide=guide, guide_weights=w)
    torch.testing.assert_close(out[:, :2], guide[:, :2])


def test_pi05_loss_and_gradients():
    model = make_model(MICRO_PI05).train()
    inputs = make_inputs(MICRO_PI05, batch=2)
    actions = torch.randn(2, MICRO_PI05.chunk_size, MICRO_PI05.action_dim)
    noise, t = _noise(MICRO_PI05), torch.tensor([0.25, 0.8])
    loss = model.loss(inputs, actions, noise=noise, time=t)
    assert loss.shape == actions.shape
    # the loss is the flow-matching MSE of the (uncached) velocity at x_t
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
    v = model.velocity_uncached(inputs, x_t, t)
    torch.testing.assert_close(loss, (v - (noise - actions)) ** 2)
    loss.mean().backward()
    for p in (model.time_mlp_in.weight, model.action_in_proj.weight, model.expert.layers[0].input_layernorm.dense.weight,
              model.expert.norm.dense.bias, model.vlm.layers[0].self_attn.q_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    s = model.sample_time(10_000, torch.device("cpu"))  # openpi: Beta(1.5, 1) * 0.999 + 0.001, as π0
    assert 0.001 <= float(s.min()) and float(s.max()) <= 1.0 and abs(float(s.mean()) - (0.6 * 0.999 + 0.001)) < 0.01


# --------------------------------------------------------------------------- checkpoints


def _outputs(model: PI0Model) -> torch.Tensor:
    return model.sample_actions(make_inputs(model.config, batch=2, seed=5), noise=_noise(model.config), num_steps=3)


def test_pi05_round_trip_keeps_the_family(tmp_path):
    model = make_model(MICRO_PI05)
    save_checkpoint(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["family"] == "pi05"
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == MICRO_PI05
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_pi05_bfloat16_keeps_adarms_and_time_mlp_in_float32(tmp_path):
    torch.manual_seed(0)
    model = PI0Model(dataclasses.replace(MICRO_PI05, dtype="bfloat16"))
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.expert.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert loaded.expert.layers[0].post_attention_layernorm.dense.weight.dtype == torch.float32
    assert loaded.time_mlp_out.weight.dtype == torch.float32
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_pi05_openpi_layout_loads(tmp_path):
    """openpi PyTorch layout: bare keys, tied embedding only as lm_head, unused expert lm_head."""
    model = make_model(MICRO_PI05)
    state = dict(model.state_dict())
    state[LM_HEAD_KEY] = state.pop(EMBED_KEY)
    state["paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.randn(MICRO.vocab_size, MICRO.expert.width)
    _write(tmp_path, state, {"format": "pi0_ros", **MICRO_PI05.to_dict()})
    assert torch.equal(_outputs(load_checkpoint(tmp_path)), _outputs(model))


def test_pi05_lerobot_layout_loads(tmp_path):
    model = make_model(MICRO_PI05)
    state = {"model." + k: v for k, v in model.state_dict().items()}
    _write(tmp_path, state, {"format": "pi0_ros", **MICRO_PI05.to_dict()})
    assert torch.equal(_outputs(load_checkpoint(tmp_path)), _outputs(model))


def test_family_mismatch_names_the_differing_keys(tmp_path):
    _write(tmp_path, make_model(MICRO_PI05).state_dict(), {"format": "pi0_ros", **MICRO.to_dict()})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    msg = str(info.value)
    assert "pi0 config" in msg
    assert "missing keys" in msg and "state_proj.weight" in msg and "action_time_mlp_in.weight" in msg
    assert "unexpected keys" in msg and "time_mlp_in.weight" in msg and f"{EXPERT}norm.dense.weight" in msg
    # and a π0.5 config with a misshapen adaRMS matrix
    state = dict(make_model(MICRO_PI05).state_dict())
    key = f"{EXPERT}layers.1.input_layernorm.dense.weight"
    state[key] = state[key][:-1]
    _write(tmp_path, state, {"format": "pi0_ros", **MICRO_PI05.to_dict()})
    with pytest.raises(CheckpointError, match=r"misshapen keys: .*layers\.1\.input_layernorm\.dense\.weight"):
        load_checkpoint(tmp_path)


def test_openpi_and_lerobot_pi05_config_formats():
    openpi = config_from_dict(
        {"action_dim": 32, "action_horizon": 50, "paligemma_variant": "gemma_2b",
         "action_expert_variant": "gemma_300m", "precision": "bfloat16", "pi05": True}
    )
    assert openpi == get_preset("pi05_full")
    lerobot = config_from_dict(
        {"type": "pi05", "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
         "dtype": "float32", "chunk_size": 50, "n_action_steps": 50, "max_state_dim": 32, "max_action_dim": 32,
         "image_resolution": [224, 224]}
    )
    assert lerobot == get_preset("pi05_full", dtype="float32")  # tokenizer_max_length defaults to 200
    assert config_from_dict({"type": "pi05", "max_action_dim": 32, "tokenizer_max_length": 180}).max_token_len == 180
    # configs written before π0.5 existed (no "family") are π0
    old = {"format": "pi0_ros", **MICRO.to_dict()}
    del old["family"]
    assert config_from_dict(old).family == "pi0"


# --------------------------------------------------------------------------- prompt


def test_state_discretisation_follows_openpi():
    edges = np.linspace(-1, 1, 257)[:-1]
    x = np.array([-1.5, -1.0, -0.999, 0.0, 0.5, 0.99, 1.0, 2.0])
    np.testing.assert_array_equal(discretize_state(x), np.digitize(x, bins=edges) - 1)
    assert discretize_state(x).tolist() == [-1, 0, 0, 128, 192, 254, 255, 255]
    with pytest.raises(ValueError):
        discretize_state(np.array([np.nan]))


def test_pi05_prompt_text_and_tokens():
    text = pi05_prompt("  pick_up the\ncube ", np.array([0.0, -1.0, 0.999]))
    assert text == "Task: pick up the cube, State: 128 0 255;\nAction: "
    tok = tiny_tokenizer(max_len=200)
    state = np.linspace(-1, 1, 32)
    ids, mask = tok.encode("pick up the red cube", state)
    n = int(mask.sum())
    assert ids[0] == tok.bos_id and n < 200 and not mask[n:].any()
    assert tok.decode(ids, mask) == pi05_prompt("pick up the red cube", state)
    # the π0 format is unchanged: BOS + text + "\n"
    ids0, mask0 = tok.encode("pick up the red cube")
    assert tok.decode(ids0, mask0) == "pick up the red cube\n"
