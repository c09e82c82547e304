"""Tests for pi0_ros.policy (Policy wrapper, checkpoint directory round trip)."""

import logging
import threading

import numpy as np
import pytest
import torch
from torch import nn

from pi0_ros.model.config import get_preset
from pi0_ros.model.normalize import NormStats, Normalizer, load_norm_stats
from pi0_ros.model.tokenizer import tiny_tokenizer
from pi0_ros.policy import Policy, PolicyInput, PolicyOutput, save_policy_checkpoint

H, D = 50, 32
ROBOT_DIM = 14  # e.g. ALOHA: stats cover 14 dims, the rest is padding


class FakeModel(nn.Module):
    """Stands in for PI0Model: returns a fixed velocity-free answer and records its inputs."""

    def __init__(self, answer=None):
        super().__init__()
        self.config = get_preset("tiny")
        self.w = nn.Parameter(torch.zeros(1))
        self.answer = answer
        self.seen = []

    def sample_actions(self, inputs, noise=None, num_steps=10):
        self.seen.append((inputs, noise, num_steps))
        if self.answer is not None:
            return self.answer.clone()[None]
        return torch.zeros(inputs.state.shape[0], H, D)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def stats():
    rng = np.random.default_rng(0)
    mk = lambda: NormStats(mean=rng.normal(size=ROBOT_DIM), std=rng.uniform(0.5, 2, ROBOT_DIM),  # noqa: E731
                           q01=-np.ones(ROBOT_DIM), q99=np.ones(ROBOT_DIM))
    return {"state": mk(), "actions": mk()}


def _img(h=480, w=640, value=128):
    return np.full((h, w, 3), value, dtype=np.uint8)


def _input(prompt="pick up the red cube", state=None, **images):
    images = images or {"base_0_rgb": _img(), "left_wrist_0_rgb": _img(), "right_wrist_0_rgb": _img()}
    return PolicyInput(images=images, state=np.zeros(D) if state is None else state, prompt=prompt)


def test_unnormalisation_applied_zero_model_gives_mean(tok, stats):
    policy = Policy(FakeModel(), tok, Normalizer(stats))
    out = policy.infer(_input())
    assert isinstance(out, PolicyOutput)
    assert out.actions.shape == (H, D) and out.actions.dtype == np.float64
    np.testing.assert_allclose(out.actions[:, :ROBOT_DIM], np.broadcast_to(stats["actions"].mean, (H, ROBOT_DIM)))
    assert (out.actions[:, ROBOT_DIM:] == 0).all()  # padding dims pass through


def test_unnormalisation_matches_reference(tok, stats):
    answer = torch.linspace(-2, 2, H * D).reshape(H, D)
    policy = Policy(FakeModel(answer), tok, Normalizer(stats))
    out = policy.infer(_input()).actions
    a = stats["actions"]
    ref = answer.numpy().astype(np.float64).copy()
    ref[:, :ROBOT_DIM] = ref[:, :ROBOT_DIM] * (a.std + 1e-6) + a.mean
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_inputs_handed_to_model(tok, stats):
    model = FakeModel()
    policy = Policy(model, tok, Normalizer(stats), num_steps=7)
    state = np.zeros(D)
    state[:ROBOT_DIM] = np.arange(ROBOT_DIM) / 10
    policy.infer(_input(state=state, base_0_rgb=_img(value=255), right_wrist_0_rgb=_img(100, 50, 0)))
    inputs, noise, steps = model.seen[-1]
    assert steps == 7 and noise is None
    assert inputs.images.shape == (1, 3, 3, 224, 224)
    assert inputs.image_masks.tolist() == [[True, False, True]]  # left wrist missing
    assert (inputs.images[0, 1] == -1).all()  # missing camera: black
    assert (inputs.images[0, 0, :, 28:196] == 1).all() and (inputs.images[0, 0, :, :28] == -1).all()
    tokens, mask = tok.encode("pick up the red cube")
    assert inputs.tokens.dtype == torch.int64 and inputs.tokens[0].tolist() == tokens.tolist()
    assert inputs.token_masks[0].tolist() == mask.tolist()
    s = stats["state"]
    expected = state.copy()
    expected[:ROBOT_DIM] = (state[:ROBOT_DIM] - s.mean) / (s.std + 1e-6)
    np.testing.assert_allclose(inputs.state[0].numpy(), expected, rtol=1e-6, atol=1e-6)
    inputs.validate(policy.config)


def test_timing_keys(tok):
    policy = Policy(FakeModel(), tok)
    assert not policy.random_weights
    inp = _input()
    out = policy.infer(PolicyInput(images=inp.images, state=inp.state, prompt=inp.prompt, stamp=12.5))
    assert set(out.timing) == {"preprocess", "model", "postprocess", "total"}
    assert all(v >= 0 for v in out.timing.values())
    assert out.timing["total"] >= out.timing["model"]


@pytest.mark.parametrize(
    "inp, exc, match",
    [
        (PolicyInput(images={}, state=np.zeros(14), prompt="x"), ValueError, r"\(32,\)"),
        (PolicyInput(images={}, state=np.full(D, np.nan), prompt="x"), ValueError, "non-finite"),
        (PolicyInput(images={"cam_high": _img()}, state=np.zeros(D), prompt="x"), ValueError, "unknown camera"),
        (PolicyInput(images={"base_0_rgb": _img()[..., 0]}, state=np.zeros(D), prompt="x"), ValueError, "grayscale"),
        (PolicyInput(images={}, state=np.zeros(D), prompt=None), TypeError, "prompt"),
    ],
)
def test_bad_inputs(tok, inp, exc, match):
    with pytest.raises(exc, match=match):
        Policy(FakeModel(), tok).infer(inp)


def test_bad_noise_shape(tok):
    with pytest.raises(ValueError, match="noise"):
        Policy(FakeModel(), tok).infer(_input(), noise=np.zeros((10, D)))


def test_tokenizer_must_fit_model(tok):
    model = FakeModel()
    model.config = get_preset("tiny", vocab_size=100)
    with pytest.raises(ValueError, match="vocabulary"):
        Policy(model, tok)


# ------------------------------------------------------------------ with the real tiny model


@pytest.fixture(scope="module")
def tiny():
    return Policy.tiny_random(seed=0, num_steps=3)  # fewer Euler steps: faster, same plumbing


def _noise(seed):
    return np.random.default_rng(seed).standard_normal((H, D)).astype(np.float32)


def test_tiny_random_shapes_and_determinism(tiny, caplog):
    out1 = tiny.infer(_input(), noise=_noise(1))
    out2 = tiny.infer(_input(), noise=_noise(1))
    out3 = tiny.infer(_input(), noise=_noise(2))
    assert out1.actions.shape == (H, D) and np.isfinite(out1.actions).all()
    np.testing.assert_array_equal(out1.actions, out2.actions)
    assert not np.allclose(out1.actions, out3.actions)


def test_tiny_random_is_seeded_and_warns(caplog):
    state = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="pi0_ros.policy"):
        a = Policy.tiny_random(seed=3, action_dim=16, num_cameras=2)
    assert "RANDOM weights" in caplog.text and a.random_weights
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG untouched
    b = Policy.tiny_random(seed=3, action_dim=16, num_cameras=2)
    inp = PolicyInput(images={"base_0_rgb": _img()}, state=np.zeros(16), prompt="stop")
    noise = _noise(0)[:, :16]
    np.testing.assert_array_equal(a.infer(inp, noise=noise).actions, b.infer(inp, noise=noise).actions)
    assert a.camera_names == ("base_0_rgb", "left_wrist_0_rgb")


def test_prompt_and_images_change_actions(tiny):
    base = tiny.infer(_input(), noise=_noise(1)).actions
    assert not np.allclose(base, tiny.infer(_input(prompt="open the drawer"), noise=_noise(1)).actions)
    other = _input(base_0_rgb=_img(value=10), left_wrist_0_rgb=_img(), right_wrist_0_rgb=_img())
    assert not np.allclose(base, tiny.infer(other, noise=_noise(1)).actions)


def test_warmup(tiny):
    timings = tiny.warmup(2)
    assert len(timings) == 2 and all(t["total"] > 0 for t in timings)


def test_warmup_stops_between_chunks_when_asked(tiny):
    asked = []

    def should_stop() -> bool:  # asked before each chunk: stop after the second
        asked.append(1)
        return len(asked) > 2

    assert len(tiny.warmup(100, should_stop=should_stop)) == 2 and len(asked) == 3
    assert tiny.warmup(3, should_stop=lambda: True) == []


def test_thread_safe_concurrent_infer(tiny):
    expected = {s: tiny.infer(_input(), noise=_noise(s)).actions for s in range(4)}
    results, errors = {}, []

    def work(s):
        try:
            results[s] = tiny.infer(_input(), noise=_noise(s)).actions
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    # One torch thread per Python thread: four inferences with two OpenMP workers each on a 2-core
    # CI machine are 8 spinning threads, and the check is thread safety, not speed.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        torch.set_num_threads(before)
    assert not any(t.is_alive() for t in threads), "an inference thread did not finish in 300 s"
    assert not errors
    for s in range(4):
        np.testing.assert_allclose(results[s], expected[s], rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip(tiny, stats, tmp_path):
    policy = Policy(tiny.model, tiny.tokenizer, Normalizer(stats))
    directory = save_policy_checkpoint(policy, tmp_path / "ckpt", asset_id="trossen")
    assert (directory / "tokenizer.model").is_file()
    assert (directory / "model.safetensors").is_file() and (directory / "config.json").is_file()
    loaded_stats = load_norm_stats(directory / "assets" / "trossen" / "norm_stats.json")
    np.testing.assert_array_equal(loaded_stats["actions"].mean, stats["actions"].mean)

    loaded = Policy.from_checkpoint(directory)  # the single asset is picked up
    assert not loaded.normalizer.is_identity
    inp = _input(state=np.r_[np.linspace(-1, 1, ROBOT_DIM), np.zeros(D - ROBOT_DIM)])
    np.testing.assert_array_equal(policy.infer(inp, noise=_noise(5)).actions, loaded.infer(inp, noise=_noise(5)).actions)
    explicit = Policy.from_checkpoint(directory, asset_id="trossen")
    np.testing.assert_array_equal(explicit.infer(inp, noise=_noise(5)).actions, loaded.infer(inp, noise=_noise(5)).actions)


def test_checkpoint_assets_selection(tiny, stats, tmp_path, caplog):
    d = save_policy_checkpoint((tiny.model, tiny.tokenizer), tmp_path / "bare")
    with caplog.at_level(logging.WARNING, logger="pi0_ros.policy"):
        p = Policy.from_checkpoint(d)
    assert p.normalizer.is_identity and "IDENTITY" in caplog.text
    with pytest.raises(FileNotFoundError, match="ur5e"):
        Policy.from_checkpoint(d, asset_id="ur5e")
    save_policy_checkpoint(tiny, d, asset_id="a", norm_stats=stats)
    save_policy_checkpoint(tiny, d, asset_id="b", norm_stats=stats)
    with pytest.raises(ValueError, match="several assets"):
        Policy.from_checkpoint(d)
    assert not Policy.from_checkpoint(d, asset_id="b").normalizer.is_identity
    (d / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        Policy.from_checkpoint(d, asset_id="a")


def test_save_requires_asset_id_with_stats(tiny, stats, tmp_path):
    with pytest.raises(ValueError, match="asset_id"):
        save_policy_checkpoint(tiny, tmp_path / "x", norm_stats=stats)


def test_from_checkpoint_dtype_and_missing_dir(tiny, tmp_path):
    d = save_policy_checkpoint(tiny, tmp_path / "c")
    p = Policy.from_checkpoint(d, dtype="float32", num_steps=3)
    assert p.num_steps == 3
    with pytest.raises(ValueError, match="dtype"):
        Policy.from_checkpoint(d, dtype="int8")
    with pytest.raises(FileNotFoundError, match="checkpoint directory"):
        Policy.from_checkpoint(tmp_path / "nowhere")


def test_normalizer_needs_state_and_actions(tok, stats):
    with pytest.raises(ValueError, match="actions"):
        Policy(FakeModel(), tok, Normalizer({"state": stats["state"]}))


def test_cameras_the_model_does_not_have_are_ignored():
    """A checkpoint trained on the top camera only runs on a robot that publishes three."""
    import numpy as np

    from pi0_ros.policy import Policy, PolicyInput

    one = Policy.tiny_random(seed=0, num_cameras=1)
    img = np.full((48, 64, 3), 128, np.uint8)
    state = np.zeros(one.action_dim)
    noise = np.zeros((one.chunk_size, one.action_dim), np.float32)
    a = one.infer(PolicyInput({"base_0_rgb": img}, state, "pick up the red cube"), noise=noise).actions
    b = one.infer(PolicyInput({"base_0_rgb": img, "left_wrist_0_rgb": img * 0, "right_wrist_0_rgb": img * 0},
                              state, "pick up the red cube"), noise=noise).actions
    np.testing.assert_array_equal(a, b)


def test_delta_actions_add_the_state_back(tmp_path):
    """A checkpoint trained with delta actions stores the mask; infer returns absolute actions."""
    import numpy as np

    from pi0_ros.policy import Policy, PolicyInput, load_delta_mask, save_delta_mask, save_policy_checkpoint

    p = Policy.tiny_random(seed=0, num_cameras=1)
    state = np.zeros(p.action_dim)
    state[:14] = np.linspace(-1, 1, 14)
    inp = PolicyInput({"base_0_rgb": np.zeros((8, 8, 3), np.uint8)}, state, "pick up the red cube")
    noise = np.zeros((p.chunk_size, p.action_dim), np.float32)
    absolute = p.infer(inp, noise=noise).actions
    mask = np.zeros(14, bool)
    mask[[0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]] = True  # joints, not grippers
    from pi0_ros.model.normalize import NormStats

    unit = NormStats(mean=np.zeros(14), std=np.ones(14) - 1e-6)  # (x - 0) / (std + 1e-6) = x
    save_policy_checkpoint(p, tmp_path / "ck", asset_id="trossen", norm_stats={"state": unit, "actions": unit})
    save_delta_mask(tmp_path / "ck" / "assets" / "trossen", mask)
    np.testing.assert_array_equal(load_delta_mask(tmp_path / "ck" / "assets" / "trossen"), mask)
    q = Policy.from_checkpoint(tmp_path / "ck")
    delta = q.infer(inp, noise=noise).actions
    expected = absolute.copy()
    expected[:, :14][:, mask] += state[:14][mask]
    np.testing.assert_allclose(delta, expected, atol=1e-6)


def test_noise_scale_scales_the_starting_noise():
    """noise_scale 0 samples deterministically (= zero noise); scale s draws s * N(0, I)."""
    p = Policy.tiny_random(seed=0, num_cameras=1)
    inp = PolicyInput({"base_0_rgb": np.full((8, 8, 3), 70, np.uint8)}, np.zeros(p.action_dim), "pick up the red cube")
    zero = p.infer(inp, noise=np.zeros((p.chunk_size, p.action_dim), np.float32)).actions
    det = Policy(p.model, p.tokenizer, noise_scale=0.0)
    np.testing.assert_allclose(det.infer(inp).actions, zero, atol=1e-6)
    np.testing.assert_allclose(det.infer(inp).actions, det.infer(inp).actions, atol=1e-6)
    half = Policy(p.model, p.tokenizer, noise_scale=0.5)
    torch.manual_seed(3)
    a = half.infer(inp).actions
    torch.manual_seed(3)
    eps = torch.randn(1, p.chunk_size, p.action_dim)
    np.testing.assert_allclose(a, p.infer(inp, noise=0.5 * eps[0].numpy()).actions, atol=1e-5)
    assert np.abs(a - zero).max() > 1e-3
    with pytest.raises(ValueError, match="noise_scale"):
        Policy(p.model, p.tokenizer, noise_scale=1.5)
