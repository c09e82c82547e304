"""The simulator runs trajectory and gripper-action outputs through the real controllers' rules (no ROS)."""
from __future__ import annotations

import numpy as np

from pi0_ros.controllers import GoalStatus, TrajectorySpec
from pi0_ros.robots.embodiment import embodiments_dir, load_embodiment
from pi0_ros.sim.env import SimEnv

VARIANT = embodiments_dir() / "variants" / "trossen_bimanual_trajectory.yaml"


def ramp(joint_names, start, delta, step, dt, stamp):
    """A chunk-like trajectory: k points each within `step` of the last, velocities consistent, last zero."""
    k = int(np.ceil(np.abs(delta).max() / step))
    pos = start + np.outer(np.arange(1, k + 1) / k, delta)
    vel = np.gradient(np.vstack([start, pos]), dt, axis=0)[1:]
    vel[-1] = 0.0
    return TrajectorySpec.from_arrays(joint_names, stamp, dt * np.arange(1, k + 1), pos, vel)


def test_variant_is_the_same_robot_through_trajectory_controllers():
    base, var = load_embodiment("trossen_bimanual"), load_embodiment(VARIANT)
    assert (var.name, var.asset_id, var.dim_names) == (base.name, base.asset_id, base.dim_names)
    assert np.array_equal(var.slots, base.slots)
    assert {o.type for o in var.outputs} == {"trajectory_msgs/msg/JointTrajectory", "control_msgs/action/GripperCommand"}


def test_sim_interpolates_accepted_trajectories_and_never_runs_rejected_ones():
    env = SimEnv(VARIANT, render=False)
    emb = env.embodiment
    o = next(o for o in emb.outputs if o.name == "left_arm")
    idx = list(o.indices)
    step = emb.max_velocity[idx] * emb.dt * 0.5
    home = env.targets[idx]
    # Rejected: the old single point carrying the step's velocity. Nothing moves.
    bad = TrajectorySpec.from_arrays(o.joint_names, 0.0, np.array([emb.dt]), (home + 0.05)[None], np.full((1, 6), 1.0))
    assert "not zero" in env.controllers.submit_trajectory("left_arm", bad, env.controller_time)
    env.step(5)
    np.testing.assert_allclose(env.targets[idx], home)
    # Accepted: executed over time, ending at the last point.
    delta = np.array([0.3, -0.2, 0.2, 0.1, -0.1, 0.2])
    traj = ramp(o.joint_names, home, delta, step.min(), emb.dt, stamp=env.controller_time)
    assert env.controllers.submit_trajectory("left_arm", traj, env.controller_time) is None
    executed = [env.targets[idx]]
    for _ in range(len(traj.points) + 10):
        env.step()
        executed.append(env.targets[idx])
    jumps = np.abs(np.diff(np.array(executed), axis=0))
    assert np.all(jumps <= emb.max_velocity[idx] * emb.dt + 1e-9)  # never more than one safe step per tick
    np.testing.assert_allclose(executed[-1], home + delta, atol=1e-9)
    np.testing.assert_allclose(env.robot_state()[idx], home + delta, atol=0.05)  # the arm followed


def test_sim_gripper_action_succeeds_or_aborts_on_a_stall():
    env = SimEnv(VARIANT, render=False)
    g = env.controllers.grippers["left_gripper"]
    d = env.embodiment.dims[6]
    goal = env.controllers.send_gripper_goal("left_gripper", 0.5 * (d.open + d.closed), 0.0, env.controller_time)
    for _ in range(100):
        env.step()
        if goal.done:
            break
    assert goal.status is GoalStatus.SUCCEEDED and goal.reached_goal
    # Fully closed cannot be reached (the fingers meet first): a stall. The variant allows it;
    # gripper_action_controller's default (allow_stalling false) aborts.
    g.params = type(g.params)(goal_tolerance=g.params.goal_tolerance, allow_stalling=False)
    goal = env.controllers.send_gripper_goal("left_gripper", d.closed, 0.0, env.controller_time)
    for _ in range(200):
        env.step()
        if goal.done:
            break
    assert goal.status is GoalStatus.ABORTED and goal.stalled


def test_reset_holds_home_and_ends_goals_without_a_fault():
    env = SimEnv(VARIANT, render=False)
    d = env.embodiment.dims[6]
    goal = env.controllers.send_gripper_goal("left_gripper", d.closed, 0.0, env.controller_time)
    env.step(2)
    env.reset(1)
    np.testing.assert_allclose(env.targets, env.scene.home)
    env.step(1)
    assert goal.status is GoalStatus.SUCCEEDED  # re-homed: where the controller commands, not aborted
    np.testing.assert_allclose(env.targets, env.scene.home)
