"""The joint_trajectory_controller stand-in applies JTC's acceptance rules and samples like JTC."""
from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.controllers import JtcEmulator, JtcParams, TrajectoryPoint, TrajectorySpec, validate
from pi0_ros.controllers.jtc import FLOAT_EPS

JOINTS = ("a", "b", "c")
P = JtcParams(JOINTS)


def spec(times, positions, velocities=None, names=JOINTS, stamp=0.0):
    return TrajectorySpec.from_arrays(names, stamp, np.asarray(times, float), np.asarray(positions, float),
                                      None if velocities is None else np.asarray(velocities, float))


def ramp(k=5, dt=0.05, step=0.01, names=JOINTS, stamp=0.0):
    """k points, each `step` further on every joint, central-difference velocities, zero at the end."""
    pos = np.outer(np.arange(1, k + 1) * step, np.ones(len(names)))
    vel = np.gradient(pos, dt, axis=0)
    vel[-1] = 0.0
    return spec(dt * np.arange(1, k + 1), pos, vel, names, stamp)


def test_accepts_a_multi_point_trajectory_with_zero_end_velocity():
    assert validate(P, ramp(), now=10.0) is None


def test_rejects_a_non_zero_end_velocity_unless_allowed():
    t = ramp()
    last = t.points[-1]
    moving = TrajectorySpec(t.joint_names, 0.0, t.points[:-1] + (TrajectoryPoint(last.time_from_start, last.positions,
                                                                                   (0.0, 0.2, 0.0)),))
    assert "is not zero" in validate(P, moving, 0.0)
    assert validate(JtcParams(JOINTS, allow_nonzero_velocity_at_trajectory_end=True), moving, 0.0) is None
    # JTC's threshold is float epsilon: a rounding residue passes, anything visible does not.
    tiny = TrajectorySpec(t.joint_names, 0.0, t.points[:-1] + (TrajectoryPoint(last.time_from_start, last.positions,
                                                                                 (FLOAT_EPS / 2, 0.0, 0.0)),))
    assert validate(P, tiny, 0.0) is None


def test_the_old_single_point_command_with_step_velocity_is_rejected():
    # What pi0_ros sent before: one point 0.05 s ahead carrying the step's velocity.
    old = spec([0.05], [[0.1, 0.2, 0.3]], [[0.5, 0.5, 0.5]])
    assert "is not zero" in validate(P, old, 0.0)


def test_joint_set_and_order():
    assert validate(P, ramp(names=("c", "a", "b")), 0.0) is None  # any order: JTC maps by name
    assert "don't match the controller joints" in validate(P, ramp(names=("a", "b")), 0.0)
    assert "doesn't match the controller's joints" in validate(P, ramp(names=("a", "b", "x")), 0.0)
    partial = JtcParams(JOINTS, allow_partial_joints_goal=True)
    assert validate(partial, ramp(names=("a", "b")), 0.0) is None
    assert "Empty joint names" in validate(partial, spec([0.1], np.zeros((1, 0)), names=()), 0.0)


def test_sizes_and_empty():
    assert "Empty trajectory" in validate(P, TrajectorySpec(JOINTS, 0.0, ()), 0.0)
    bad = TrajectorySpec(JOINTS, 0.0, (TrajectoryPoint(0.1, (0.0, 0.0)),))
    assert "positions" in validate(P, bad, 0.0)
    badv = TrajectorySpec(JOINTS, 0.0, (TrajectoryPoint(0.1, (0.0, 0.0, 0.0), (0.0,)),))
    assert "velocities" in validate(P, badv, 0.0)
    eff = TrajectorySpec(JOINTS, 0.0, (TrajectoryPoint(0.1, (0.0,) * 3, (), (), (1.0,) * 3),))
    assert "effort" in validate(P, eff, 0.0)


def test_time_from_start_strictly_increasing():
    assert "strictly increasing" in validate(P, spec([0.1, 0.1], np.zeros((2, 3)), np.zeros((2, 3))), 0.0)
    assert "strictly increasing" in validate(P, spec([0.2, 0.1], np.zeros((2, 3)), np.zeros((2, 3))), 0.0)


def test_end_in_the_past_is_rejected_only_with_a_stamp():
    t = ramp(stamp=100.0)  # ends at 100.25
    assert validate(P, t, now=100.2) is None
    assert "ends in the past" in validate(P, t, now=100.3)
    assert validate(P, ramp(stamp=0.0), now=100.3) is None  # stamp 0 = start now


def test_sampling_interpolates_over_time_and_holds_the_end():
    jtc = JtcEmulator(P, np.zeros(3))
    t = ramp(k=5, dt=0.05, step=0.01, stamp=10.0)
    assert jtc.submit(t, now=10.0) is None
    for p in t.points:  # passes through every point at its time
        np.testing.assert_allclose(jtc.sample(10.0 + p.time_from_start), p.positions, atol=1e-12)
    mid = jtc.sample(10.075)[0]
    assert 0.01 < mid < 0.02
    np.testing.assert_allclose(jtc.sample(20.0), t.points[-1].positions)


def test_rejected_trajectory_changes_nothing():
    jtc = JtcEmulator(P, np.full(3, 0.3))
    assert jtc.submit(spec([0.05], [[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]]), now=0.0) is not None
    assert jtc.rejected == 1 and jtc.accepted == 0
    np.testing.assert_allclose(jtc.sample(1.0), 0.3)


def test_partial_goal_holds_missing_joints():
    jtc = JtcEmulator(JtcParams(JOINTS, allow_partial_joints_goal=True), np.array([0.0, 0.0, 0.7]))
    assert jtc.submit(ramp(names=("a", "b")), now=0.0) is None
    assert jtc.sample(1.0)[2] == pytest.approx(0.7)


def test_replacement_mid_flight_has_no_jump_larger_than_the_step_limit():
    """Chunks replacing each other: the executed set points (500 Hz) never jump beyond one step."""
    dt, step, vmax = 0.05, 0.01, 0.2   # step = vmax * dt, what safety allows per tick
    jtc = JtcEmulator(P, np.zeros(3))
    executed = []
    now, t_end = 0.0, 1.2
    cur = np.zeros(3)
    next_chunk = 0.0
    while now < t_end:
        if now >= next_chunk - 1e-12:
            # A new chunk every 0.3 s, starting from where the robot is meant to be now, 8 points.
            k = 8
            pos = cur + np.outer(np.arange(1, k + 1) * step, [1.0, -1.0, 0.5])
            vel = np.gradient(np.vstack([cur, pos]), dt, axis=0)[1:]
            vel[-1] = 0.0
            assert jtc.submit(spec(dt * np.arange(1, k + 1), pos, vel, stamp=now), now) is None
            next_chunk += 0.3
        cur = jtc.sample(now)
        executed.append(cur)
        now += 0.002
    jumps = np.abs(np.diff(np.array(executed), axis=0)).max()
    assert jumps <= step
    assert np.abs(executed[-1]).max() > 5 * step  # it did move
