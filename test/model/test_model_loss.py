"""The flow-matching training loss."""

from __future__ import annotations

import pytest
import torch
from model_test_helpers import MICRO, make_inputs, make_model

from pi0_ros.model import PI0Model


def test_loss_shape_and_manual_computation():
    model = make_model()
    inputs = make_inputs(MICRO, batch=3)
    g = torch.Generator().manual_seed(3)
    actions = torch.randn(3, MICRO.chunk_size, MICRO.action_dim, generator=g)
    noise = torch.randn(3, MICRO.chunk_size, MICRO.action_dim, generator=g)
    t = torch.tensor([0.1, 0.5, 0.95])
    with torch.no_grad():
        loss = model.loss(inputs, actions, noise=noise, time=t)
        # openpi convention: x_t = t * noise + (1 - t) * actions, target u = noise - actions
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
        v = model.velocity_uncached(inputs, x_t, t)
    assert loss.shape == (3, MICRO.chunk_size, MICRO.action_dim)
    torch.testing.assert_close(loss, (v - (noise - actions)) ** 2, atol=1e-6, rtol=1e-6)
    # and that velocity is what the sampler integrates: one Euler step from t=1 uses v(noise, 1)
    with torch.no_grad():
        v1 = model.velocity_uncached(inputs, noise, torch.ones(3))
        one_step = model.sample_actions(inputs, noise=noise, num_steps=1)
    torch.testing.assert_close(one_step, noise - v1, atol=1e-5, rtol=0)


def test_loss_rejects_wrong_action_shape():
    model = make_model()
    inputs = make_inputs(MICRO, batch=1)
    with pytest.raises(ValueError, match="actions must be"):
        model.loss(inputs, torch.zeros(1, MICRO.chunk_size + 1, MICRO.action_dim))


def test_sample_time_distribution():
    model = make_model()
    torch.manual_seed(0)
    t = model.sample_time(20_000, torch.device("cpu"))
    assert t.min() >= 0.001 and t.max() <= 1.0
    # Beta(1.5, 1) has mean 0.6 -> 0.6 * 0.999 + 0.001
    assert abs(t.mean().item() - (0.6 * 0.999 + 0.001)) < 0.01


def test_loss_has_gradients_for_all_trained_parts():
    model = make_model().train()
    inputs = make_inputs(MICRO, batch=2)
    actions = torch.randn(2, MICRO.chunk_size, MICRO.action_dim)
    model.loss(inputs, actions).mean().backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    # pi0 discards the VLM's outputs: only the keys/values of its last layer are used
    last = f"paligemma_with_expert.paligemma.model.language_model.layers.{MICRO.vlm.depth - 1}."
    unused = [
        last + n for n in ("self_attn.q_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight")
    ]
    unused += [last + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")]
    unused += ["paligemma_with_expert.paligemma.model.language_model.norm.weight"]
    assert sorted(no_grad) == sorted(unused)


def test_tiny_model_overfits_small_set():
    torch.manual_seed(0)
    model = PI0Model(MICRO).train()
    inputs = make_inputs(MICRO, batch=4, seed=1)
    g = torch.Generator().manual_seed(2)
    actions = torch.randn(4, MICRO.chunk_size, MICRO.action_dim, generator=g)
    noise = torch.randn(4, MICRO.chunk_size, MICRO.action_dim, generator=g)
    t = torch.rand(4, generator=g) * 0.999 + 0.001
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(300):  # ~30 steps are enough (well under a second on an idle CPU)
        loss = model.loss(inputs, actions, noise=noise, time=t).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        if loss.item() < first / 20:
            break
    assert loss.item() < first / 10, (first, loss.item())


def test_forward_is_the_loss_and_checks_noise_and_time_shapes():
    model = make_model()
    inputs = make_inputs(MICRO, batch=2)
    actions = torch.randn(2, MICRO.chunk_size, MICRO.action_dim)
    noise = torch.randn_like(actions)
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        loss = model.loss(inputs, actions, noise=noise, time=t)
        assert torch.equal(model(inputs, actions, noise=noise, time=t), loss)
    with pytest.raises(ValueError, match="noise must have"):
        model.loss(inputs, actions, noise=noise[:, :2])
    with pytest.raises(ValueError, match="time must be"):
        model.loss(inputs, actions, time=torch.ones(3))
