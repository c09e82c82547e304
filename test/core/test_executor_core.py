"""ChunkExecutor (ROS-free): episode resets and chunk requests."""
from __future__ import annotations

import numpy as np

from pi0_ros.executor import ChunkExecutor, MeasuredState
from pi0_ros.robots.embodiment import load_embodiment


def offer(ex: ChunkExecutor, stamp: float, now: float, value: float = 0.0) -> str | None:
    emb = ex.embodiment
    return ex.offer_chunk(embodiment=emb.name, joint_names=emb.dim_names, actions=np.full((50, emb.num_dims), value),
                          stamp=stamp, dt=emb.dt, seq=0, now=now)


def test_reset_rejects_chunks_from_before_it_and_asks_again_at_once() -> None:
    emb = load_embodiment("ur5e")
    ex = ChunkExecutor(emb)
    ex.reset(10.0)
    assert ex.should_request(10.0)
    ex.scheduler.mark_requested(10.0)
    assert not ex.should_request(10.02)  # a request is outstanding
    # The policy answers with a chunk computed from an observation taken before the reset ...
    assert offer(ex, stamp=9.95, now=10.04) == "before_reset"
    # ... which is no answer: the next tick asks again instead of waiting request_timeout (1 s).
    assert ex.should_request(10.06)
    assert offer(ex, stamp=10.05, now=10.1) is None
    assert not ex.should_request(10.12)


def test_reset_reseeds_the_step_limit_from_the_new_measured_state() -> None:
    emb = load_embodiment("ur5e")
    ex = ChunkExecutor(emb)
    home = np.zeros(emb.num_dims)
    ex.set_measured(home)
    assert offer(ex, stamp=0.0, now=0.0, value=0.0) is None
    ex.tick(0.02)
    ex.reset(1.0)
    ex.set_measured(None)  # the node forgets joint states stamped before the reset
    assert ex.tick_hold(1.0).commands is None  # no reference: nothing is sent
    moved = home.copy()
    moved[0] = 0.5
    ex.set_measured(moved)
    assert offer(ex, stamp=1.0, now=1.0, value=0.5) is None
    res = ex.tick(1.02)
    assert res.commands is not None and abs(ex.last_values[0] - 0.5) < 1e-9  # no jump from the old command


# ---------------------------------------------------------------------- issue 11 defects
def ramp_chunk(emb, start: np.ndarray, step: float = 0.002, h: int = 50) -> np.ndarray:
    a = np.repeat(start[None], h, axis=0).copy()
    a += np.arange(h)[:, None] * step
    return a


def test_nothing_is_commanded_before_the_first_valid_chunk() -> None:
    """Defect: the executor streamed hold commands while the policy warmed up (7.5 s in one
    run), which on a UR preempts any other client of the controller."""
    emb = load_embodiment("ur5e")
    ex = ChunkExecutor(emb)
    home = np.full(emb.num_dims, 0.1)
    ex.set_measured(home)
    for k in range(100):
        res = ex.tick(0.05 * k)
        assert res.commands is None and res.held
    # Someone else moves the robot meanwhile: the first action starts from where it is now.
    moved = home + 0.3
    ex.set_measured(moved)
    assert offer(ex, stamp=5.0, now=5.0, value=0.45) is None
    res = ex.tick(5.0)
    assert res.commands is not None and not res.held
    step = emb.max_velocity / emb.control_rate_hz
    assert np.all(np.abs(ex.last_values - moved) <= step + 1e-12)
    # From then on holds are commanded (the last command, not the measurement).
    for k in range(1, 40):
        res = ex.tick(5.0 + k * 0.05)
    assert res.held and res.commands is not None


def test_future_stamped_chunk_is_rejected_and_never_blocks_newer_ones() -> None:
    emb = load_embodiment("trossen_bimanual")
    ex = ChunkExecutor(emb)
    ex.set_measured(np.zeros(emb.num_dims))
    assert offer(ex, stamp=0.0, now=0.0) is None
    assert offer(ex, stamp=3600.0, now=0.1) == "future_stamp"
    assert ex.counters()["rejected.future_stamp"] == 1
    for k in range(1, 10):
        now = 0.5 * k
        assert offer(ex, stamp=now - 0.04, now=now) is None
        assert ex.tick(now).reason == "ok"


def test_silent_policy_is_named_not_exhausted() -> None:
    emb = load_embodiment("trossen_bimanual")
    ex = ChunkExecutor(emb)
    ex.set_measured(np.zeros(emb.num_dims))
    assert offer(ex, stamp=0.0, now=0.0) is None
    reasons = [ex.tick(k * emb.dt).reason for k in range(150)]  # 3 s, the chunk lasts 0.5 s
    assert reasons[0] == "ok" and reasons[30] == "exhausted" and reasons[-1] == "policy_silent"


def test_output_fault_holds_until_a_fresh_chunk() -> None:
    emb = load_embodiment("ur5e")
    ex = ChunkExecutor(emb)
    ex.set_measured(np.zeros(emb.num_dims))
    assert offer(ex, stamp=0.0, now=0.0) is None
    assert ex.tick(0.0).reason == "ok"
    ex.report_fault("gripper", "aborted", 0.05)
    res = ex.tick(0.05)
    assert res.held and res.reason == "output_fault: gripper aborted"
    assert ex.should_request(0.05)  # ask at once
    assert offer(ex, stamp=0.0, now=0.1, value=0.0) == "before_reset"  # computed before the fault
    assert offer(ex, stamp=0.08, now=0.1) is None
    assert ex.tick(0.1).reason == "ok"
    assert ex.counters()["faults.gripper.aborted"] == 1


def test_measured_state_merges_split_joint_states_by_name() -> None:
    """Defect: a UR arm and a Robotiq gripper publishing separate messages on /joint_states
    replaced each other: 0 commands for 30 s."""
    emb = load_embodiment("ur5e")
    m = MeasuredState(emb, timeout=0.25)
    arm = {d.joint: 0.1 * i for i, d in enumerate(emb.dims) if d.kind == "joint"}
    grip = {emb.dims[-1].joint: 0.4}
    for k in range(10):
        t = 1.0 + 0.01 * k
        m.update_joints("arm", t, arm)
        if k % 5 == 0:
            m.update_joints("arm", t, grip)
        state = m.get(t)
        assert state is not None
        np.testing.assert_allclose(state, [*arm.values(), 0.4])
    # The gripper driver dies: only its joint goes stale, and the problem names it.
    t = 1.5
    m.update_joints("arm", t, arm)
    assert m.get(t) is None
    reason, detail = m.problem(t)
    assert reason == "joint_states_stale" and emb.dims[-1].joint in detail and "/joint_states" in detail


def test_partial_stream_beside_a_full_one_never_reverts_values() -> None:
    emb = load_embodiment("ur5e")
    m = MeasuredState(emb, timeout=0.25)
    full = {d.joint: 0.0 for d in emb.dims}
    for k in range(50):
        t = 0.01 * k
        full = {j: 0.01 * k for j in full}
        m.update_joints("arm", t, full)
        m.update_joints("arm", t, {"shoulder_pan_joint": 0.01 * k})  # a partial stream, same values
        s = m.get(t)
        assert s is not None and np.allclose(s, 0.01 * k)


def test_missing_joint_is_reported_as_missing_not_stale() -> None:
    """Defect: Panda names against the FR3 YAML were reported as "joint_states_stale"."""
    emb = load_embodiment("franka")
    m = MeasuredState(emb, timeout=0.25)
    m.update_joints("arm", 1.0, {f"panda_joint{i}": 0.0 for i in range(1, 8)})
    assert m.get(1.0) is None
    reason, detail = m.problem(1.0)
    assert reason == "joint_missing"
    assert "fr3_joint1" in detail and "panda_joint1" in detail
