"""Parity at random weights with independent implementations (transformers, test-only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pi0_ros.model.config import GemmaConfig, SiglipConfig
from pi0_ros.model.gemma import GemmaStack
from pi0_ros.model.siglip import SiglipVisionTower

import transformers  # test-only dependency (pinned in requirements/lock.txt)

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


def _hf_pi0(cfg):
    """transformers' PI0ForConditionalGeneration with the geometry of our PI0Config."""
    image_token_id = cfg.vocab_size - 1
    hf_cfg = transformers.PI0Config(
        vlm_config={
            "model_type": "paligemma",
            "text_config": {
                "model_type": "gemma",
                "hidden_size": cfg.vlm.width,
                "num_hidden_layers": cfg.vlm.depth,
                "intermediate_size": cfg.vlm.mlp_dim,
                "num_attention_heads": cfg.vlm.num_heads,
                "num_key_value_heads": cfg.vlm.num_kv_heads,
                "head_dim": cfg.vlm.head_dim,
                "vocab_size": cfg.vocab_size,
                "hidden_activation": "gelu_pytorch_tanh",
            },
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": cfg.vision.width,
                "intermediate_size": cfg.vision.mlp_dim,
                "num_hidden_layers": cfg.vision.depth,
                "num_attention_heads": cfg.vision.num_heads,
                "patch_size": cfg.vision.patch_size,
                "image_size": cfg.vision.image_size,
                "vision_use_head": False,
            },
            "projection_dim": cfg.vlm.width,
            "image_token_id": image_token_id,
        },
        dit_config={
            "model_type": "gemma",
            "hidden_size": cfg.expert.width,
            "num_hidden_layers": cfg.expert.depth,
            "intermediate_size": cfg.expert.mlp_dim,
            "num_attention_heads": cfg.expert.num_heads,
            "num_key_value_heads": cfg.expert.num_kv_heads,
            "head_dim": cfg.expert.head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
        },
        chunk_size=cfg.chunk_size,
        max_state_dim=cfg.action_dim,
        max_action_dim=cfg.action_dim,
    )
    return transformers.PI0ForConditionalGeneration(hf_cfg).eval(), image_token_id


_HF_TO_OURS = (
    ("model.vlm.vision_tower.", "paligemma_with_expert.paligemma.model.vision_tower.vision_model."),
    ("model.vlm.multi_modal_projector.", "paligemma_with_expert.paligemma.model.multi_modal_projector."),
    ("model.vlm.language_model.", "paligemma_with_expert.paligemma.model.language_model."),
    ("model.dit.", "paligemma_with_expert.gemma_expert.model."),
    ("embed_action_time.", ""),
    ("action_out_proj.", "action_out_proj."),
)


def test_full_pi0_sampling_matches_transformers_pi0():
    """End to end against transformers' independent PI0 (HF 'dit' = our action expert)."""
    from model_test_helpers import MICRO, make_inputs

    from pi0_ros.model import PI0Model

    torch.manual_seed(0)
    cfg = MICRO
    hf, image_token_id = _hf_pi0(cfg)
    _perturb_norms(hf)
    state = {}
    for key, value in hf.state_dict().items():
        if key == "model.dit.embed_tokens.weight":
            continue  # the action expert has no token embedding
        for old, new in _HF_TO_OURS:
            if key.startswith(old):
                state[new + key[len(old) :]] = value
                break
        else:
            raise AssertionError(f"unmapped transformers key {key}")
    ours = PI0Model(cfg).eval()
    ours.load_state_dict(state, strict=True)

    inputs = make_inputs(cfg, batch=2, seed=3)
    inputs.image_masks[:] = True  # transformers' PI0 gathers features of present cameras only
    inputs.tokens = inputs.tokens % image_token_id  # keep text ids clear of the image token id
    B, N = inputs.image_masks.shape
    T = cfg.vision.tokens_per_image
    input_ids = torch.cat((torch.full((B, N * T), image_token_id), inputs.tokens), dim=1)
    attention_mask = torch.cat((torch.ones(B, N * T, dtype=torch.long), inputs.token_masks.long()), dim=1)
    noise = torch.randn(B, cfg.chunk_size, cfg.action_dim)
    with torch.no_grad():
        expected = hf.sample_actions(
            state=inputs.state,
            input_ids=input_ids,
            pixel_values=inputs.images,
            noise=noise,
            attention_mask=attention_mask,
            pixel_attention_mask=inputs.image_masks,
            num_steps=10,
        )
        got = ours.sample_actions(inputs, noise=noise, num_steps=10)
    # (transformers embeds time in float32 and steps t = 1 + k*dt; openpi and we use float64
    # sinusoids and accumulate t in float32: tiny differences only)
    assert (expected - noise).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- π0.5
# No transformers release has PI05ForConditionalGeneration yet (5.24.0, the newest on PyPI,
# ships only models/pi0), so π0.5 is checked against a reference assembled in this test from
# transformers' own parts: PI0's prefix path (SigLIP, projector, PaliGemma's VLM and its KV
# cache, image-token gather) and, for the action expert, the Gemma layers' projections, RoPE
# tables, apply_rotary_pos_emb and eager attention, with openpi's adaRMS and gated residuals
# written out below. Nothing of our gemma.py / pi0.py (mixture, masks, cache, sampler) is used.


def _ada_rms(x, cond, dense):
    """openpi RMSNorm(cond): rmsnorm(x) * (1 + scale) + shift, and the gate (scale|shift|gate)."""
    scale, shift, gate = dense(cond)[:, None, :].chunk(3, dim=-1)
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    return normed * (1 + scale) + shift, gate


def _reference_pi05_velocity(hf, heads, past, prefix_mask, x_t, time):
    """One π0.5 denoising step: action tokens attend to the cached prefix and to each other."""
    from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb, eager_attention_forward

    dit = hf.model.dit
    B, H, _ = x_t.shape
    time_emb = hf.embed_action_time.sinusoid_embeds(time)  # transformers' sinusoid, float32
    cond = F.silu(heads["time_mlp_out"](F.silu(heads["time_mlp_in"](time_emb))))
    h = hf.embed_action_time.action_in_proj(x_t)  # no action-time fusion in π0.5
    keys_valid = torch.cat((prefix_mask, torch.ones(B, H, dtype=prefix_mask.dtype)), dim=1)
    positions = (torch.cumsum(keys_valid, dim=1) - 1)[:, -H:]
    cos, sin = dit.rotary_emb(h, positions)
    additive = torch.zeros(B, 1, H, keys_valid.shape[1]).masked_fill(keys_valid[:, None, None, :] == 0, float("-inf"))
    for i, layer in enumerate(dit.layers):
        attn = layer.self_attn
        x, gate = _ada_rms(h, cond, heads[f"in{i}"])
        shape = (B, H, -1, attn.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)
        k = attn.k_proj(x).view(shape).transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = torch.cat((past.layers[i].keys, k), dim=2)
        v = torch.cat((past.layers[i].values, v), dim=2)
        y, _ = eager_attention_forward(attn, q, k, v, additive, scaling=attn.scaling)
        h = h + attn.o_proj(y.reshape(B, H, -1)) * gate
        x, gate = _ada_rms(h, cond, heads[f"post{i}"])
        h = h + layer.mlp(x) * gate
    h, _ = _ada_rms(h, cond, heads["final"])
    return hf.action_out_proj(h)


def test_full_pi05_sampling_matches_transformers_reference():
    from model_test_helpers import MICRO_PI05, make_inputs

    from pi0_ros.model import PI0Model

    torch.manual_seed(0)
    cfg = MICRO_PI05
    hf, image_token_id = _hf_pi0(cfg)
    _perturb_norms(hf)
    We = cfg.expert.width
    heads = torch.nn.ModuleDict({"time_mlp_in": torch.nn.Linear(We, We), "time_mlp_out": torch.nn.Linear(We, We)})
    for i in range(cfg.expert.depth):
        heads[f"in{i}"] = torch.nn.Linear(We, 3 * We)
        heads[f"post{i}"] = torch.nn.Linear(We, 3 * We)
    heads["final"] = torch.nn.Linear(We, 3 * We)
    with torch.no_grad():
        for name, p in heads.named_parameters():
            if name.startswith(("in", "post", "final")):
                p.mul_(0.5).add_(0.05 * torch.randn_like(p))  # non-trivial scale, shift and gate

    expert = "paligemma_with_expert.gemma_expert.model."
    state = {}
    for key, value in hf.state_dict().items():
        if key == "model.dit.embed_tokens.weight" or key.startswith(("embed_action_time.state_proj.",
                                                                     "embed_action_time.action_time_mlp")):
            continue  # not in π0.5
        if key.startswith("model.dit.") and key.endswith("norm.weight"):
            continue  # the expert's norms are adaptive in π0.5 (heads below)
        for old, new in _HF_TO_OURS:
            if key.startswith(old):
                state[new + key[len(old):]] = value
                break
        else:
            raise AssertionError(f"unmapped transformers key {key}")
    for name, p in heads.state_dict().items():
        module, param = name.split(".")
        if module.startswith("time_mlp"):
            state[name] = p
        elif module == "final":
            state[f"{expert}norm.dense.{param}"] = p
        else:
            norm, layer = ("input_layernorm", module[2:]) if module.startswith("in") else (
                "post_attention_layernorm", module[4:])
            state[f"{expert}layers.{layer}.{norm}.dense.{param}"] = p
    ours = PI0Model(cfg).eval()
    ours.load_state_dict(state, strict=True)

    inputs = make_inputs(cfg, batch=2, seed=3)
    inputs.image_masks[:] = True  # transformers' PI0 gathers features of present cameras only
    inputs.tokens = inputs.tokens % image_token_id
    B, N = inputs.image_masks.shape
    T = cfg.vision.tokens_per_image
    input_ids = torch.cat((torch.full((B, N * T), image_token_id), inputs.tokens), dim=1)
    attention_mask = torch.cat((torch.ones(B, N * T, dtype=torch.long), inputs.token_masks.long()), dim=1)
    noise = torch.randn(B, cfg.chunk_size, cfg.action_dim)
    num_steps = 10
    with torch.no_grad():
        embeds = hf.model.embed_prefix(input_ids, inputs.images, inputs.image_masks)
        past = hf.model.vlm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=attention_mask.cumsum(-1) - 1,
            token_type_ids=torch.zeros_like(attention_mask),
            use_cache=True,
        ).past_key_values
        expected = noise.clone()
        for k in range(num_steps):  # transformers' stepping: t = 1 + k dt
            t = torch.full((B,), 1.0 - k / num_steps)
            expected = expected - _reference_pi05_velocity(hf, heads, past, attention_mask, expected, t) / num_steps
        got = ours.sample_actions(inputs, noise=noise, num_steps=num_steps)
    # conventions: (1) transformers' sinusoid is float32 and its times are 1 + k*dt, openpi and we
    # use float64 sinusoids and accumulate t in float32 (as for π0); (2) the adaRMS order is
    # [scale | shift | gate] and the final norm's gate is discarded (openpi)
    assert (expected - noise).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    print(f"pi05 parity max |delta| = {(got - expected).abs().max().item():.2e}")
