"""The Policy with a π0.5 model: state in the prompt, quantile normalisation from config.json."""

import numpy as np
import pytest

from pi0_ros.model.normalize import NormStats, Normalizer
from pi0_ros.model.tokenizer import pi05_prompt
from pi0_ros.policy import Policy, PolicyInput, save_policy_checkpoint

ROBOT_DIM = 14


@pytest.fixture(scope="module")
def tiny05():
    return Policy.tiny_random(seed=0, num_cameras=2, family="pi05")


@pytest.fixture
def stats():
    rng = np.random.default_rng(0)
    q01 = -1.0 - rng.random(ROBOT_DIM)
    mk = lambda: NormStats(mean=rng.normal(size=ROBOT_DIM), std=rng.uniform(0.5, 2, ROBOT_DIM),  # noqa: E731
                           q01=q01, q99=q01 + 3.0)
    return {"state": mk(), "actions": mk()}


def _input(policy, state=None, prompt="pick up the red cube"):
    img = np.full((120, 160, 3), 90, dtype=np.uint8)
    state = np.zeros(policy.action_dim) if state is None else state
    return PolicyInput(images={"base_0_rgb": img, "left_wrist_0_rgb": img}, state=state, prompt=prompt)


def test_tiny_random_pi05(tiny05):
    assert tiny05.config.family == "pi05" and tiny05.config.max_token_len == 200 and tiny05.random_weights
    noise = np.random.default_rng(0).standard_normal((tiny05.chunk_size, tiny05.action_dim)).astype(np.float32)
    out = tiny05.infer(_input(tiny05), noise=noise)
    assert out.actions.shape == (50, 32) and np.isfinite(out.actions).all()
    np.testing.assert_array_equal(tiny05.infer(_input(tiny05), noise=noise).actions, out.actions)
    # the state reaches the model through the prompt text only
    state = np.zeros(32)
    state[:3] = [0.5, -0.5, 0.9]
    assert np.abs(tiny05.infer(_input(tiny05, state), noise=noise).actions - out.actions).max() > 1e-4
    assert np.abs(tiny05.infer(_input(tiny05, prompt="open the drawer"), noise=noise).actions - out.actions).max() > 1e-4
    with pytest.raises(ValueError, match="family"):
        Policy.tiny_random(family="pi1")


def test_prompt_carries_the_normalised_state_of_the_robot_dims(tiny05, stats):
    policy = Policy(tiny05.model, tiny05.tokenizer, Normalizer(stats, mode="quantile"))
    assert policy.state_dims == ROBOT_DIM
    state = np.zeros(32)
    state[:ROBOT_DIM] = np.linspace(-2, 2, ROBOT_DIM)
    inputs = policy.make_inputs(_input(policy, state))
    text = policy.tokenizer.decode(inputs.tokens[0].numpy(), inputs.token_masks[0].numpy())
    norm = Normalizer(stats, mode="quantile").normalize(state, "state")
    assert text == pi05_prompt("pick up the red cube", norm[:ROBOT_DIM])
    # without statistics the whole (padded) vector is written, as LeRobot does
    assert tiny05.state_dims == 32


def test_checkpoint_family_chooses_the_norm_mode(tiny05, stats, tmp_path):
    save_policy_checkpoint(tiny05, tmp_path / "pi05", asset_id="trossen", norm_stats=stats)
    loaded = Policy.from_checkpoint(tmp_path / "pi05")
    assert loaded.config == tiny05.config and loaded.normalizer.mode == "quantile"
    noise = np.zeros((50, 32), dtype=np.float32)
    a = loaded.infer(_input(loaded), noise=noise).actions
    b = Policy(tiny05.model, tiny05.tokenizer, Normalizer(stats, mode="quantile")).infer(_input(loaded), noise=noise)
    np.testing.assert_allclose(a, b.actions, atol=1e-6)
    assert Policy.from_checkpoint(tmp_path / "pi05", norm_mode="zscore").normalizer.mode == "zscore"  # override
    pi0 = Policy.tiny_random(seed=0, num_cameras=2)
    save_policy_checkpoint(pi0, tmp_path / "pi0", asset_id="trossen", norm_stats=stats)
    assert Policy.from_checkpoint(tmp_path / "pi0").normalizer.mode == "zscore"
