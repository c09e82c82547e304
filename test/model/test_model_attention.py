"""The block-causal attention mask: hand-written example and a property test."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_test_helpers import MICRO, make_inputs, make_model

from pi0_ros.model.gemma import sdpa_mask
from pi0_ros.model.pi0 import make_attention_mask


def test_three_blocks_and_padding_hand_written():
    # 3 prefix tokens (the 3rd is padding) | state | 2 actions
    pad = torch.tensor([[1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    ar = torch.tensor([[0, 0, 0, 1, 1, 0]])
    expected = torch.tensor(
        [
            # p0 p1 p2 st a0 a1    (keys)
            [1, 1, 0, 0, 0, 0],  # p0: prefix only, not the padding, not later blocks
            [1, 1, 0, 0, 0, 0],  # p1
            [0, 0, 0, 0, 0, 0],  # p2 is padding: attends nothing
            [1, 1, 0, 1, 0, 0],  # state: prefix + itself
            [1, 1, 0, 1, 1, 1],  # actions: everything valid, bidirectional among actions
            [1, 1, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    got = make_attention_mask(pad, ar)
    assert got.shape == (1, 6, 6)
    assert torch.equal(got[0], expected)


def test_causal_and_prefix_lm_special_cases():
    pad = torch.ones(1, 4, dtype=torch.bool)
    causal = make_attention_mask(pad, torch.ones(1, 4, dtype=torch.long))
    assert torch.equal(causal[0], torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    full = make_attention_mask(pad, torch.zeros(1, 4, dtype=torch.long))
    assert full.all()


def test_sdpa_mask_opens_fully_masked_rows_only():
    allowed = torch.tensor([[[True, False], [False, False]]])
    bias = sdpa_mask(allowed, group=1)
    assert bias.shape == (1, 1, 2, 2)
    assert bias[0, 0, 0, 0] == 0 and bias[0, 0, 0, 1] == float("-inf")
    assert (bias[0, 0, 1] == 0).all()  # padding query: uniform, never NaN
    folded = sdpa_mask(allowed, group=3)
    assert folded.shape == (1, 1, 6, 2)
    assert torch.equal(folded[0, 0, :3], bias[0, 0, :1].expand(3, 2))


def _forward(model, inputs, actions, time):
    prefix_embs, prefix_pad, prefix_ar = model.embed_prefix(inputs)
    suffix_embs, suffix_pad, suffix_ar, _ = model.embed_suffix(inputs.state, actions, time)
    pad = torch.cat((prefix_pad, suffix_pad), 1)
    mask = make_attention_mask(pad, torch.cat((prefix_ar, suffix_ar), 1))
    positions = torch.cumsum(pad.long(), 1) - 1
    (prefix_out, suffix_out), _ = model.forward_experts(prefix_embs, suffix_embs, mask, positions)
    return prefix_out, suffix_out, prefix_pad


_MODEL = make_model()
_INPUTS = make_inputs(MICRO)


@settings(max_examples=25, deadline=None)
@given(
    index=st.integers(0, MICRO.chunk_size - 1),
    scale=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**16),
)
def test_changing_an_action_never_changes_prefix_or_state(index, scale, seed):
    g = torch.Generator().manual_seed(seed)
    B = _INPUTS.batch_size
    actions = torch.randn(B, MICRO.chunk_size, MICRO.action_dim, generator=g)
    time = torch.rand(B, generator=g)
    changed = actions.clone()
    changed[:, index] += scale * torch.randn(B, MICRO.action_dim, generator=g)
    with torch.no_grad():
        p0, s0, pad = _forward(_MODEL, _INPUTS, actions, time)
        p1, s1, _ = _forward(_MODEL, _INPUTS, changed, time)
    valid = pad[..., None].expand_as(p0)
    torch.testing.assert_close(p1[valid], p0[valid], atol=1e-6, rtol=0)
    torch.testing.assert_close(s1[:, 0], s0[:, 0], atol=1e-6, rtol=0)  # the state token
    # ... while the action block itself is bidirectional: every action token sees the change
    assert ((s1[:, 1:] - s0[:, 1:]).abs().amax(dim=-1) > 1e-6).all()


def test_padding_tokens_do_not_leak():
    """Changing padded prompt tokens or a missing camera's pixels changes no valid output."""
    model = _MODEL
    inputs = make_inputs(MICRO)
    actions = torch.randn(inputs.batch_size, MICRO.chunk_size, MICRO.action_dim)
    time = torch.full((inputs.batch_size,), 0.5)
    other = make_inputs(MICRO)
    other.tokens = torch.where(inputs.token_masks, inputs.tokens, (inputs.tokens + 7) % MICRO.vocab_size)
    other.images = inputs.images.clone()
    other.images[0, 1] = -inputs.images[0, 1]  # camera 1 of sample 0 is missing
    with torch.no_grad():
        p0, s0, pad = _forward(model, inputs, actions, time)
        p1, s1, _ = _forward(model, other, actions, time)
    valid = pad[..., None].expand_as(p0)
    torch.testing.assert_close(p1[valid], p0[valid], atol=1e-6, rtol=0)
    torch.testing.assert_close(s1, s0, atol=1e-6, rtol=0)
    assert torch.isfinite(p0).all() and torch.isfinite(s0).all()
