"""The sampler: KV-cached == uncached, the Euler integrator, noise injection."""

from __future__ import annotations


import pytest
import torch
from model_test_helpers import MICRO, make_inputs, make_model

from pi0_ros.model import PI0Model, get_preset
from pi0_ros.model.pi0 import euler_times, sinusoidal_time_embedding

CACHE_ATOL = 1e-5


@pytest.mark.parametrize("num_steps", [1, 3, 10])
def test_cached_equals_uncached(num_steps):
    model = make_model()
    inputs = make_inputs(MICRO, batch=3)
    noise = torch.randn(3, MICRO.chunk_size, MICRO.action_dim, generator=torch.Generator().manual_seed(1))
    cached = model.sample_actions(inputs, noise=noise, num_steps=num_steps)
    reference = model.sample_actions_reference(inputs, noise=noise, num_steps=num_steps)
    assert cached.shape == (3, MICRO.chunk_size, MICRO.action_dim)
    assert cached.dtype == torch.float32
    torch.testing.assert_close(cached, reference, atol=CACHE_ATOL, rtol=0)
    assert (cached - noise).abs().max() > 1e-3  # the network really moved the sample


def test_cached_equals_uncached_tiny_preset():
    torch.manual_seed(0)
    cfg = get_preset("tiny", num_cameras=2, max_token_len=12)
    model = PI0Model(cfg).eval()
    inputs = make_inputs(cfg, batch=1)
    noise = torch.randn(1, cfg.chunk_size, cfg.action_dim)
    torch.testing.assert_close(
        model.sample_actions(inputs, noise=noise, num_steps=2),
        model.sample_actions_reference(inputs, noise=noise, num_steps=2),
        atol=CACHE_ATOL,
        rtol=0,
    )


def test_missing_camera_slots_are_skipped_without_changing_the_result():
    model = make_model()
    inputs = make_inputs(MICRO, batch=2)
    inputs.image_masks[:, 2] = False  # slot 2 missing in the whole batch -> dropped
    noise = torch.randn(2, MICRO.chunk_size, MICRO.action_dim)
    torch.testing.assert_close(
        model.sample_actions(inputs, noise=noise),
        model.sample_actions_reference(inputs, noise=noise),
        atol=CACHE_ATOL,
        rtol=0,
    )


def test_noise_injection_is_deterministic_and_matters():
    model = make_model()
    inputs = make_inputs(MICRO, batch=1)
    n1 = torch.randn(1, MICRO.chunk_size, MICRO.action_dim)
    a = model.sample_actions(inputs, noise=n1)
    b = model.sample_actions(inputs, noise=n1.clone())
    c = model.sample_actions(inputs, noise=n1 + 1.0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="noise must be"):
        model.sample_actions(inputs, noise=torch.zeros(1, 3, 3))


def test_euler_recovers_target_for_constant_field(monkeypatch):
    """v = noise - A* (the exact flow of a single data point): Euler from t=1 to 0 lands on A*."""
    model = make_model()
    inputs = make_inputs(MICRO, batch=2)
    noise = torch.randn(2, MICRO.chunk_size, MICRO.action_dim)
    target = torch.randn(2, MICRO.chunk_size, MICRO.action_dim)
    monkeypatch.setattr(model, "_denoise_step", lambda cache, x_t, time_emb: noise - target)
    out = model.sample_actions(inputs, noise=noise, num_steps=10)
    torch.testing.assert_close(out, target, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_steps", [1, 4, 10])
def test_euler_linear_field_closed_form(monkeypatch, num_steps):
    """v = x: each Euler step multiplies by (1 + dt), dt = -1/n, so x_0 = (1 - 1/n)^n * noise;
    the times passed to the step are 1, 1 - 1/n, ..., 1/n."""
    model = make_model()
    inputs = make_inputs(MICRO, batch=1)
    noise = torch.randn(1, MICRO.chunk_size, MICRO.action_dim)
    seen = []

    def velocity(cache, x_t, time_emb):
        seen.append(time_emb)
        return x_t

    monkeypatch.setattr(model, "_denoise_step", velocity)
    out = model.sample_actions(inputs, noise=noise, num_steps=num_steps)
    torch.testing.assert_close(out, noise * (1 - 1 / num_steps) ** num_steps, atol=1e-6, rtol=1e-5)
    assert len(seen) == num_steps
    # times are accumulated in float32 like openpi (t += dt), i.e. 1 - k/n up to rounding
    times = torch.tensor(euler_times(num_steps))
    torch.testing.assert_close(times, torch.tensor([1 - k / num_steps for k in range(num_steps)]))
    expected = sinusoidal_time_embedding(times, MICRO.expert.width)
    torch.testing.assert_close(torch.cat(seen), expected, atol=1e-6, rtol=0)


def test_euler_times():
    assert euler_times(1) == [1.0]
    times = euler_times(10)
    assert len(times) == 10
    assert times[0] == 1.0 and abs(times[-1] - 0.1) < 1e-6
    with pytest.raises(ValueError):
        euler_times(0)


def test_time_embedding_matches_openpi_formula():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = sinusoidal_time_embedding(t, 8)
    fraction = torch.linspace(0, 1, 4, dtype=torch.float64)
    period = 4e-3 * (4.0 / 4e-3) ** fraction
    x = t.double()[:, None] * (2 * torch.pi / period)[None]
    torch.testing.assert_close(emb, torch.cat((x.sin(), x.cos()), 1).float())
    assert emb.dtype == torch.float32


def test_invalid_inputs_are_rejected_with_clear_messages():
    model = make_model()
    good = make_inputs(MICRO, batch=2)
    bad_state = make_inputs(MICRO, batch=2)
    bad_state.state = torch.zeros(2, MICRO.action_dim + 1)
    with pytest.raises(ValueError, match=r"state must be \(B, 6\)"):
        model.sample_actions(bad_state)
    bad_tokens = make_inputs(MICRO, batch=2)
    bad_tokens.tokens = torch.zeros(2, MICRO.max_token_len + 1, dtype=torch.long)
    bad_tokens.token_masks = torch.ones(2, MICRO.max_token_len + 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="tokens must be"):
        model.sample_actions(bad_tokens)
    bad_images = make_inputs(MICRO, batch=2)
    bad_images.images = (good.images * 127).to(torch.uint8)
    with pytest.raises(ValueError, match="floating point"):
        model.loss(bad_images, torch.zeros(2, MICRO.chunk_size, MICRO.action_dim))


def test_inputs_to_device():
    inputs = make_inputs(MICRO, batch=1).to("cpu")
    assert inputs.images.device.type == "cpu" and inputs.batch_size == 1


@pytest.mark.slow
def test_compiled_sampler_matches_eager():
    import dataclasses

    torch.manual_seed(0)
    model = PI0Model(dataclasses.replace(MICRO, compile_sampler=True)).eval()
    inputs = make_inputs(MICRO, batch=2)
    noise = torch.randn(2, MICRO.chunk_size, MICRO.action_dim)
    compiled = model.sample_actions(inputs, noise=noise, num_steps=3)
    again = model.sample_actions(inputs, noise=noise, num_steps=3)  # reuses the compiled step
    reference = model.sample_actions_reference(inputs, noise=noise, num_steps=3)
    torch.testing.assert_close(compiled, reference, atol=CACHE_ATOL, rtol=0)
    assert torch.equal(compiled, again)
