"""FollowJointTrajectory and GripperCommand stand-ins: accept, reject, succeed, abort, preempt."""
from __future__ import annotations

import numpy as np

from pi0_ros.controllers import (FollowJointTrajectoryServer, GoalStatus, GripperCommandServer, GripperParams,
                                 JtcEmulator, JtcParams, TrajectorySpec)
from pi0_ros.controllers.actions import INVALID_GOAL, PATH_TOLERANCE_VIOLATED

JOINTS = ("a", "b")


def traj(end_vel=0.0, stamp=0.0, k=4, dt=0.1):
    pos = np.outer(np.arange(1, k + 1) * 0.01, [1.0, 1.0])
    vel = np.full_like(pos, 0.1)
    vel[-1] = end_vel
    return TrajectorySpec.from_arrays(JOINTS, stamp, dt * np.arange(1, k + 1), pos, vel)


def fjt():
    return FollowJointTrajectoryServer(JtcEmulator(JtcParams(JOINTS), np.zeros(2)))


def test_fjt_accepts_and_succeeds_at_the_end():
    s = fjt()
    g = s.send_goal(traj(), now=0.0)
    assert g.status is GoalStatus.EXECUTING
    s.update(0.2)
    assert g.status is GoalStatus.EXECUTING
    s.update(0.41)
    assert g.status is GoalStatus.SUCCEEDED and g.error_code == 0


def test_fjt_rejects_by_the_jtc_rules():
    s = fjt()
    assert s.send_goal(traj(end_vel=0.3), 0.0).status is GoalStatus.REJECTED
    assert s.send_goal(traj(stamp=5.0), now=6.0).status is GoalStatus.REJECTED  # ends in the past
    s.active_controller = False
    assert s.send_goal(traj(), 0.0).status is GoalStatus.REJECTED


def test_fjt_newer_goal_aborts_the_older_as_preempted():
    s = fjt()
    g1 = s.send_goal(traj(), 0.0)
    g2 = s.send_goal(traj(), 0.1)
    assert g1.status is GoalStatus.ABORTED and g1.error_code == INVALID_GOAL and "preempted" in g1.error_string
    assert g2.status is GoalStatus.EXECUTING


def test_fjt_path_tolerance_aborts_and_cancel_holds():
    s = fjt()
    s.path_tolerance = 0.05
    g = s.send_goal(traj(), 0.0)
    s.update(0.1, measured=np.array([0.5, 0.0]))
    assert g.status is GoalStatus.ABORTED and g.error_code == PATH_TOLERANCE_VIOLATED
    g = s.send_goal(traj(), 1.0)
    s.cancel(g.goal_id, 1.15)
    assert g.status is GoalStatus.CANCELED
    held = s.jtc.sample(1.15)
    np.testing.assert_allclose(s.jtc.sample(3.0), held)


def test_gripper_reaches_and_succeeds():
    g = GripperCommandServer(initial_target=0.0)
    goal = g.send_goal(0.5, 10.0, now=0.0)
    assert g.target == 0.5
    g.update(0.1, position=0.3, velocity=1.0)
    assert goal.status is GoalStatus.EXECUTING
    g.update(0.2, position=0.495, velocity=0.1)
    assert goal.status is GoalStatus.SUCCEEDED and goal.reached_goal


def test_gripper_stall_aborts_unless_allow_stalling():
    for allow, expected in ((False, GoalStatus.ABORTED), (True, GoalStatus.SUCCEEDED)):
        g = GripperCommandServer(GripperParams(allow_stalling=allow))
        goal = g.send_goal(0.8, 0.0, now=0.0)
        g.update(0.5, position=0.4, velocity=0.0)   # blocked by an object, not yet past stall_timeout
        assert goal.status is GoalStatus.EXECUTING
        g.update(1.2, position=0.4, velocity=0.0)
        assert goal.status is expected and goal.stalled and not goal.reached_goal


def test_gripper_newer_goal_cancels_the_older():
    g = GripperCommandServer()
    a = g.send_goal(0.8, 0.0, 0.0)
    b = g.send_goal(0.0, 0.0, 0.1)
    assert a.status is GoalStatus.CANCELED and b.status is GoalStatus.EXECUTING and g.target == 0.0
    g.active_controller = False
    assert g.send_goal(0.3, 0.0, 0.2).status is GoalStatus.REJECTED


def test_franka_move_succeeds_at_the_width_and_grasp_only_within_epsilon():
    from pi0_ros.controllers import FrankaGripperServer

    f = FrankaGripperServer(initial_width=0.08)
    m = f.move(0.06, now=0.0)
    assert f.target == 0.06
    f.update(0.1, width=0.07, velocity=0.1)
    assert m.status is GoalStatus.EXECUTING
    f.update(0.2, width=0.0601, velocity=0.05)
    assert m.status is GoalStatus.SUCCEEDED
    # Grasp at 0.02 on a 0.03 object: stops at 0.03, outside the default 5 mm -> fails.
    g = f.grasp(0.02, 0.005, 0.005, now=1.0)
    f.update(1.1, width=0.03, velocity=0.0)
    assert g.status is GoalStatus.EXECUTING   # not yet stopped long enough
    f.update(1.7, width=0.03, velocity=0.0)
    assert g.status is GoalStatus.ABORTED
    # With a wide outer epsilon the same grasp succeeds.
    g = f.grasp(0.02, 0.005, 0.08, now=2.0)
    f.update(2.6, width=0.03, velocity=0.0)
    assert g.status is GoalStatus.SUCCEEDED and g.reached_goal
    # A new goal stops the running one.
    a = f.move(0.08, 3.0)
    b = f.move(0.04, 3.1)
    assert a.status is GoalStatus.ABORTED and b.status is GoalStatus.EXECUTING
