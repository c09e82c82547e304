"""Trajectories for joint_trajectory_controller (ROS-free): planning and when they are sent."""
from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.executor import ChunkExecutor
from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.trajectory import hold_trajectory, plan_trajectory

EMB = load_embodiment("ur5e")  # arm on scaled_joint_trajectory_controller


def offer(ex: ChunkExecutor, actions: np.ndarray, stamp: float, now: float, seq: int) -> str | None:
    return ex.offer_chunk(embodiment=EMB.name, joint_names=EMB.dim_names, actions=actions, stamp=stamp,
                          dt=EMB.dt, seq=seq, now=now)


def test_plan_is_safe_point_by_point_and_ends_at_rest() -> None:
    n = EMB.num_dims
    current = np.zeros(n)
    t = 10.0 + 0.05 * np.arange(1, 16)
    targets = np.linspace(0.0, 5.0, 15)[:, None] * np.ones(n)  # far too fast, beyond the gripper limit
    traj = plan_trajectory(10.0, current, t, targets, EMB.lower, EMB.upper, EMB.max_velocity)
    assert traj.num_points == 15 and traj.start == 10.0
    assert np.all(traj.times > 0) and np.all(np.diff(traj.times) > 0)
    np.testing.assert_allclose(traj.times, t - 10.0)
    assert np.all(traj.positions >= EMB.lower) and np.all(traj.positions <= EMB.upper)
    prev, prev_t = current, 0.0
    for k in range(15):
        step = np.abs(traj.positions[k] - prev)
        assert np.all(step <= EMB.max_velocity * (traj.times[k] - prev_t) + 1e-12)
        prev, prev_t = traj.positions[k], traj.times[k]
    assert np.all(traj.velocities[-1] == 0.0)
    assert np.all(np.abs(traj.velocities) <= EMB.max_velocity + 1e-12)


@pytest.mark.parametrize("bad", ["past", "nan"])
def test_plan_refuses_points_in_the_past_or_non_finite(bad: str) -> None:
    n = EMB.num_dims
    t = np.array([9.9, 10.05]) if bad == "past" else np.array([10.05, 10.1])
    targets = np.zeros((2, n))
    if bad == "nan":
        targets[1, 0] = np.nan
    with pytest.raises(ValueError):
        plan_trajectory(10.0, np.zeros(n), t, targets, EMB.lower, EMB.upper, EMB.max_velocity)


def test_hold_trajectory_is_one_point_at_rest() -> None:
    h = hold_trajectory(3.0, np.ones(EMB.num_dims), 0.05)
    assert h.hold and h.num_points == 1 and h.times.tolist() == [0.05] and not h.velocities.any()


def test_executor_sends_a_trajectory_per_chunk_and_a_hold_when_it_runs_out() -> None:
    ex = ChunkExecutor(EMB)
    home = np.zeros(EMB.num_dims)
    ex.set_measured(home)
    acts = home + np.arange(50)[:, None] * 0.01
    assert offer(ex, acts, stamp=0.0, now=0.0, seq=0) is None
    sent = []
    for k in range(40):
        now = k * EMB.dt + 0.001
        res = ex.tick(now)
        if res.trajectory is not None:
            sent.append((k, res.trajectory))
        if k == 8:
            assert offer(ex, acts + 0.5, stamp=now - 0.02, now=now, seq=1) is None
    kinds = [(k, tr.hold, tr.num_points) for k, tr in sent]
    # One trajectory for chunk 0 at its first tick (the actions after the one for now, up to
    # execute_steps), one when chunk 1 takes over, one hold when chunk 1 is exhausted.
    assert kinds[0] == (0, False, EMB.execute_steps - 1)
    assert kinds[1][0] == 9 and not kinds[1][1]
    assert kinds[2][1] and kinds[2][2] == 1 and len(kinds) == 3
    first = sent[0][1]
    # Time-aligned: point i is action i+1, meant for stamp + (i+1)*dt.
    np.testing.assert_allclose(first.start + first.times, (np.arange(1, EMB.execute_steps)) * EMB.dt)
    np.testing.assert_allclose(first.positions[:, 0], acts[1:EMB.execute_steps, 0])
    # Chunk 1 is far away: its trajectory is step limited from the command in force.
    second = sent[1][1]
    assert second.positions[0, 0] - ex.last_values[0] < 10  # sanity
    assert np.all(np.diff(second.positions[:, 0]) <= EMB.max_velocity[0] * EMB.dt + 1e-12)


def test_streaming_embodiments_get_no_trajectories() -> None:
    emb = load_embodiment("trossen_bimanual")
    ex = ChunkExecutor(emb)
    ex.set_measured(np.zeros(emb.num_dims))
    ex.offer_chunk(embodiment=emb.name, joint_names=emb.dim_names, actions=np.zeros((50, emb.num_dims)),
                   stamp=0.0, dt=emb.dt, seq=0, now=0.0)
    assert all(ex.tick(k * emb.dt).trajectory is None for k in range(60))


def test_executor_trajectories_through_the_jtc_stand_in_never_jump() -> None:
    """What joint_trajectory_controller would execute from the executor's trajectories: every
    trajectory accepted, and the set point sampled at the control rate never moves more than the
    step limit per tick - across chunk switches (one far away), late chunks, and the final hold."""
    from pi0_ros.controllers import JtcEmulator, JtcParams, TrajectorySpec

    arm = [i for i, d in enumerate(EMB.dims) if d.kind == "joint"]
    names = tuple(EMB.dims[i].joint for i in arm)
    rng = np.random.default_rng(0)
    ex = ChunkExecutor(EMB)
    home = np.zeros(EMB.num_dims)
    ex.set_measured(home)
    jtc = JtcEmulator(JtcParams(names), home[arm])
    dt = EMB.dt
    base = home.copy()
    chunks = {0.0: 0.0, 0.55: 0.08, 1.1: 0.05}  # arrival time -> latency (s)
    sent = rejected = 0
    samples = []
    t = 0.0
    tick = 0
    while t < 3.0:
        for arrival, latency in list(chunks.items()):
            if t >= arrival:
                del chunks[arrival]
                offset = 0.6 if arrival == 0.55 else 0.0  # one chunk far from the others
                acts = base + offset + np.cumsum(rng.normal(0, 0.02, (50, EMB.num_dims)), axis=0)
                base = acts[12]
                assert offer(ex, acts, stamp=arrival - latency, now=t, seq=tick) is None
        res = ex.tick(t)
        if res.trajectory is not None:
            tr = res.trajectory
            spec = TrajectorySpec.from_arrays(names, tr.start, tr.times, tr.positions[:, arm], tr.velocities[:, arm])
            reason = jtc.submit(spec, t)
            sent += 1
            rejected += reason is not None
        # The controller's set point between our ticks, at 500 Hz.
        for k in range(int(round(dt / 0.002))):
            samples.append(jtc.sample(t + k * 0.002))
        tick += 1
        t = tick * dt + rng.uniform(0, 0.01)  # a jittery control loop
    assert sent >= 4 and rejected == 0
    s = np.array(samples)
    per_tick = np.abs(s[10::10] - s[:-10:10])  # set points one control period apart
    step = EMB.max_velocity[arm] / EMB.control_rate_hz
    assert np.all(per_tick <= step * 1.05 + 1e-9), per_tick.max(axis=0) / step
    assert np.abs(s[-1] - s[-11]).max() < 1e-9  # held still at the end
    assert np.abs(s).max() > 0.3  # it did move
