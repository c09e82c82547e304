"""Real-time chunking: the guide's alignment and weights, the inpainting sampler, delta actions."""
import numpy as np
import pytest
import torch

from pi0_ros.model.normalize import NormStats, Normalizer
from pi0_ros.policy import Policy, PolicyInput
from pi0_ros.realtime_chunking import ChunkGuide, RealTimeChunking, overlap_weights

DT = 0.02


def test_overlap_weights_freeze_then_decay_to_zero():
    w = overlap_weights(50, overlap=25, frozen=4)
    assert w.shape == (50,)
    assert np.all(w[:4] == 1)
    assert np.all(np.diff(w[4:25]) < 0) and 0 < w[24] < 0.05 and w[4] < 1
    assert np.all(w[25:] == 0)
    assert np.all(overlap_weights(50, 0, 3) == 0)
    assert np.all(overlap_weights(50, 10, 20)[:10] == 1)       # frozen never exceeds the overlap
    assert np.all(overlap_weights(50, 10, 20)[10:] == 0)


def test_guide_realigns_the_previous_chunk_to_the_new_observation_time():
    rtc = RealTimeChunking(DT)
    assert rtc.guide(1.0) is None                                # nothing executed yet
    prev = np.arange(50, dtype=float)[:, None] * np.ones((1, 4))  # action i = i
    rtc.remember(1.0, prev)
    g = rtc.guide(1.0 + 20 * DT, delay=3 * DT)
    assert isinstance(g, ChunkGuide)
    np.testing.assert_array_equal(g.actions[:30, 0], np.arange(20, 50))  # same wall-clock slots
    assert np.all(g.weights[:3] == 1) and np.all(g.weights[30:] == 0) and g.weights[3] < 1
    # Stale, future or fully elapsed previous chunks guide nothing.
    assert rtc.guide(1.0 + 60 * DT) is None
    assert rtc.guide(1.0 - DT) is None
    short = RealTimeChunking(DT, max_gap=0.1)
    short.remember(1.0, prev)
    assert short.guide(1.05) is not None and short.guide(1.2) is None  # older than max_gap
    # A new prompt never continues the old task's chunk.
    rtc.remember(1.0, prev, prompt="pick up the red cube")
    assert rtc.guide(1.0 + DT, prompt="pick up the red cube") is not None
    assert rtc.guide(1.0 + DT, prompt="pick up the blue cube") is None
    rtc.reset()
    assert rtc.guide(1.0 + DT, prompt="pick up the red cube") is None
    with pytest.raises(ValueError):
        ChunkGuide(np.zeros((5, 2)), np.full(5, 1.5))
    with pytest.raises(ValueError):
        ChunkGuide(np.zeros((5, 2)), np.ones(4))


@pytest.fixture(scope="module", params=["pi0", "pi05"])
def policy(request):
    return Policy.tiny_random(seed=0, num_cameras=1, family=request.param)


def _inp(policy, state=None, guide=None):
    state = np.zeros(policy.action_dim) if state is None else state
    return PolicyInput({"base_0_rgb": np.full((16, 16, 3), 90, np.uint8)}, state, "pick up the red cube", guide=guide)


def test_sampler_keeps_weight_one_actions_and_continues_from_them(policy):
    H, D = policy.chunk_size, policy.action_dim
    noise = np.random.default_rng(0).standard_normal((H, D)).astype(np.float32)
    free = policy.infer(_inp(policy), noise=noise).actions
    # Weight 0 everywhere is exactly the unguided sampler.
    zero = ChunkGuide(np.full((H, D), 3.0), np.zeros(H))
    np.testing.assert_allclose(policy.infer(_inp(policy, guide=zero), noise=noise).actions, free, atol=1e-5)
    # A frozen prefix comes out exactly, and the free actions after it change because the
    # action expert attends to the guided ones (it is inpainting, not overwriting).
    target = np.full((H, D), 0.8)
    w = overlap_weights(H, overlap=20, frozen=10)
    out = policy.infer(_inp(policy, guide=ChunkGuide(target, w)), noise=noise).actions
    np.testing.assert_allclose(out[:10], target[:10], atol=1e-5)
    assert np.abs(out[30:] - free[30:]).max() > 1e-3
    # Partial weights land between the free sample and the guide: element-wise for π0's random
    # model; on average for π0.5's (its adaRMS expert overshoots in one dim at this seed; the
    # integrator only promises the pull, not a per-dim bound).
    mid = out[12]
    if policy.config.family == "pi0":
        assert np.all(np.abs(mid - target[12]) <= np.abs(free[12] - target[12]) + 1e-6)
    assert np.abs(mid - target[12]).mean() < np.abs(free[12] - target[12]).mean()


def test_guide_is_converted_to_delta_actions_and_normalised(policy):
    """With delta actions and norm stats, a fully weighted guide (absolute units) is returned as is."""
    H, D = policy.chunk_size, policy.action_dim
    rng = np.random.default_rng(1)
    stats = NormStats(mean=rng.normal(size=14), std=rng.uniform(0.5, 2.0, 14))
    mask = np.ones(14, bool)
    mask[[6, 13]] = False                                       # grippers absolute
    p = Policy(policy.model, policy.tokenizer, Normalizer({"state": stats, "actions": stats}),
               delta_action_mask=mask)
    state = np.zeros(D)
    state[:14] = rng.uniform(-1, 1, 14)
    target = np.zeros((H, D))
    target[:, :14] = rng.uniform(-1, 1, (H, 14))
    out = p.infer(_inp(p, state, ChunkGuide(target, np.ones(H))), noise=np.zeros((H, D), np.float32)).actions
    np.testing.assert_allclose(out[:, :14], target[:, :14], atol=1e-4)
    with pytest.raises(ValueError, match="guide actions"):
        p.infer(_inp(p, state, ChunkGuide(np.zeros((H - 1, D)), np.ones(H - 1))))


def test_model_rejects_bad_guides(policy):
    model = policy.model
    inputs = policy.make_inputs(_inp(policy))
    H, D = policy.chunk_size, policy.action_dim
    with pytest.raises(ValueError, match="guide_weights"):
        model.sample_actions(inputs, guide=torch.zeros(1, H, D))
    with pytest.raises(ValueError, match="within"):
        model.sample_actions(inputs, guide=torch.zeros(1, H, D), guide_weights=torch.full((H,), 2.0))
    with pytest.raises(ValueError, match="guide must be"):
        model.sample_actions(inputs, guide=torch.zeros(1, H - 1, D), guide_weights=torch.ones(H))
