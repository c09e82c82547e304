"""DART-style joint disturbances for demonstrations: the arms are pushed, the commands are not."""
import numpy as np
import pytest

from pi0_ros.sim.disturbance import JointDisturbance
from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.expert import run_episode


def test_ou_offsets_start_at_zero_stay_on_the_mask_and_have_the_stationary_std():
    mask = np.array([True, True, False, True])
    d = JointDisturbance(mask, std=0.05, tau=0.5, dt=0.02)
    d.reset(7)
    assert np.all(d.offset == 0)
    x = np.array([d.step().copy() for _ in range(40000)])   # 800 s, 1600 correlation times
    assert np.all(x[:, 2] == 0)                              # unmasked dim never moves
    assert np.all(np.abs(x[0]) < 0.05)                       # starts from 0, no jump
    std = x[1000:, mask].std(0)
    assert np.allclose(std, 0.05, rtol=0.1), std
    # Smooth: one tick changes an offset by ~std*sqrt(2 dt/tau) = 0.014, never a jump of ~std.
    assert np.abs(np.diff(x[:, mask], axis=0)).max() < 0.08
    lag = int(0.5 / 0.02)                                    # correlation ~ exp(-1) after tau
    a, b = x[1000:-lag, 0], x[1000 + lag:, 0]
    assert 0.25 < np.corrcoef(a, b)[0, 1] < 0.5


def test_seeded_per_episode_and_off_at_zero_std():
    mask = np.ones(3, dtype=bool)
    d = JointDisturbance(mask, std=0.1)
    d.reset(3)
    a = [d.step().copy() for _ in range(20)]
    d.reset(3)
    b = [d.step().copy() for _ in range(20)]
    d.reset(4)
    c = [d.step().copy() for _ in range(20)]
    assert np.array_equal(a, b) and not np.allclose(a, c)
    off = JointDisturbance(mask, std=0.0)
    off.reset(3)
    assert not off.enabled and np.all(off.step() == 0)
    with pytest.raises(ValueError):
        JointDisturbance(mask, std=-0.1)
    with pytest.raises(ValueError):
        JointDisturbance(mask, std=0.1, tau=0.0)


def test_sim_pushes_the_arms_but_keeps_commands_layout_and_grippers():
    clean = SimEnv("trossen_bimanual", seed=5, render=False)
    pushed = SimEnv("trossen_bimanual", seed=5, render=False, disturbance_std=0.05)
    try:
        for env in (clean, pushed):
            env.reset(5)
        # Same layout and target: the disturbance has its own random stream.
        for name in clean.scene.objects:
            assert np.allclose(clean.object_position(name), pushed.object_position(name))
        assert clean.prompt == pushed.prompt
        hold = clean.scene.home.copy()
        for env in (clean, pushed):
            env.set_targets(hold)
            env.step(50)
        emb = clean.embodiment
        arm = np.array([d.kind == "joint" for d in emb.dims])
        # The command (what the executor sent, what bags record) is untouched ...
        assert np.allclose(pushed.targets, hold)
        # ... the controlled arm joints are pushed off it, the grippers are not.
        dev = np.abs(pushed.robot_state() - clean.robot_state())
        assert dev[arm].max() > 0.01
        assert dev[~arm].max() < 2e-3
        # Deterministic per seed: the same episode again gives the same push.
        first = pushed.robot_state()
        pushed.reset(5)
        pushed.set_targets(hold)
        pushed.step(50)
        assert np.allclose(pushed.robot_state(), first)
    finally:
        clean.close()
        pushed.close()


def test_expert_still_succeeds_under_small_pushes():
    env = SimEnv("trossen_bimanual", seed=0, render=False, disturbance_std=0.01)
    try:
        results = [run_episode(env, seed)["success"] for seed in range(300, 306)]
    finally:
        env.close()
    assert sum(results) >= 5, results
