"""The robot-side controllers behind an embodiment's outputs, for the simulator (ROS-free).

A real robot runs joint_trajectory_controller behind JointTrajectory / FollowJointTrajectory
outputs and a gripper_action_controller behind GripperCommand outputs; the simulator runs the
stand-ins of :mod:`pi0_ros.controllers` in their place, with the same acceptance rules and the
same behaviour over time: trajectories are sampled at every physics step (the controller's own
rate), rejected ones are never executed, gripper goals succeed, stall or are preempted.
Streaming outputs (Float64MultiArray, Interbotix, Twist) set targets directly (SimEnv.set_command).

Time: controllers keep the simulator's ROS clock (``now`` s), the clock header stamps refer to.
"""
from __future__ import annotations

import numpy as np

from pi0_ros.controllers import (FollowJointTrajectoryServer, FrankaGripperServer, GoalResult, GripperCommandServer,
                                 GripperParams, JtcEmulator, JtcParams, TrajectorySpec)
from pi0_ros.robots.embodiment import Embodiment, Output

__all__ = ["SimControllers"]

_GRIPPER_PARAM_KEYS = ("goal_tolerance", "allow_stalling", "stall_timeout")


def _jtc_params(o: Output) -> JtcParams:
    p = o.params
    return JtcParams(tuple(o.joint_names),
                     allow_partial_joints_goal=bool(p.get("allow_partial_joints_goal", False)),
                     allow_nonzero_velocity_at_trajectory_end=bool(p.get("allow_nonzero_velocity_at_trajectory_end", False)))


class SimControllers:
    """One stand-in controller per trajectory / gripper-action output of an embodiment."""

    def __init__(self, emb: Embodiment, home: np.ndarray) -> None:
        self.emb = emb
        self.outputs = {o.name: o for o in emb.outputs}
        self.jtc: dict[str, JtcEmulator] = {}
        self.fjt: dict[str, FollowJointTrajectoryServer] = {}
        self.grippers: dict[str, GripperCommandServer] = {}
        self.franka: dict[str, FrankaGripperServer] = {}   # widths in m: dim value * width_scale
        self._scale: dict[str, float] = {}
        for o in emb.outputs:
            idx = list(o.indices)
            if o.type == "trajectory_msgs/msg/JointTrajectory":
                self.jtc[o.name] = JtcEmulator(_jtc_params(o), home[idx])
            elif o.type == "control_msgs/action/FollowJointTrajectory":
                self.fjt[o.name] = FollowJointTrajectoryServer(JtcEmulator(_jtc_params(o), home[idx]))
            elif o.type == "control_msgs/action/GripperCommand":
                kw = {k: o.params[k] for k in _GRIPPER_PARAM_KEYS if k in o.params}
                self.grippers[o.name] = GripperCommandServer(GripperParams(**kw), float(home[idx[0]]))
            elif o.type == "franka_msgs/action/Grasp":
                self._scale[o.name] = float(o.params.get("width_scale", 2.0))
                self.franka[o.name] = FrankaGripperServer(float(home[idx[0]]) * self._scale[o.name])

    @property
    def active(self) -> bool:
        """True when any output is driven through a stand-in controller."""
        return bool(self.jtc or self.fjt or self.grippers or self.franka)

    def trajectory_controller(self, output: str) -> JtcEmulator:
        if output in self.jtc:
            return self.jtc[output]
        if output in self.fjt:
            return self.fjt[output].jtc
        raise KeyError(f"output '{output}' is not a trajectory output")

    def reset(self, home: np.ndarray, now: float) -> None:
        """New episode: every controller holds ``home`` (n,). Active goals then end SUCCEEDED at the
        next update (the robot is where its controller commands): a reset is never a client's fault."""
        for name, c in self.jtc.items():
            c.reset(home[list(self.outputs[name].indices)])
        for name, s in self.fjt.items():
            s.jtc.reset(home[list(self.outputs[name].indices)])
        for name, g in self.grippers.items():
            g.target = float(home[self.outputs[name].indices[0]])
        for name, f in self.franka.items():
            f.target = float(home[self.outputs[name].indices[0]]) * self._scale[name]

    # ------------------------------------------------------------------ commands
    def hold(self, targets: np.ndarray, changed: list[int]) -> None:
        """Direct targets (SimEnv.set_command, no ROS): controllers of the ``changed`` dims drop their
        trajectory or goal and hold ``targets`` (n,) from now on, like a controller restarted there."""
        changed_set = set(changed)
        for name, o in self.outputs.items():
            idx = list(o.indices)
            if not changed_set.intersection(idx):
                continue
            if name in self.jtc:
                self.jtc[name].reset(targets[idx])
            elif name in self.fjt:
                self.fjt[name].jtc.reset(targets[idx])
            elif name in self.grippers:
                self.grippers[name].target = float(targets[idx[0]])
            elif name in self.franka:
                self.franka[name].target = float(targets[idx[0]]) * self._scale[name]

    def submit_trajectory(self, output: str, traj: TrajectorySpec, now: float) -> str | None:
        """JointTrajectory topic message: None when accepted, else JTC's reason (nothing executed)."""
        return self.jtc[output].submit(traj, now)

    def send_trajectory_goal(self, output: str, traj: TrajectorySpec, now: float) -> GoalResult:
        return self.fjt[output].send_goal(traj, now)

    def cancel_trajectory_goal(self, output: str, goal_id: int, now: float) -> None:
        self.fjt[output].cancel(goal_id, now)

    def send_gripper_goal(self, output: str, position: float, max_effort: float, now: float) -> GoalResult:
        o = self.outputs[output]
        d = self.emb.dims[o.indices[0]]
        # The controller clamps to the joint's range, as a real gripper cannot go beyond it.
        pos = float(np.clip(position, d.lower, d.upper))
        return self.grippers[output].send_goal(pos, max_effort, now)

    def cancel_gripper_goal(self, output: str, goal_id: int, measured: float) -> None:
        self.grippers[output].cancel(goal_id, measured)

    def send_franka_goal(self, output: str, kind: str, width: float, inner: float, outer: float,
                         now: float) -> GoalResult:
        """franka_gripper ``move`` (kind "move") or ``grasp`` goal; width in m."""
        f = self.franka[output]
        return f.move(width, now) if kind == "move" else f.grasp(width, inner, outer, now)

    # ------------------------------------------------------------------ time
    def sample_into(self, targets: np.ndarray, now: float) -> None:
        """Write every controller's set point at time ``now`` into ``targets`` (n,), within the YAML limits."""
        emb = self.emb
        for name, c in list(self.jtc.items()) + [(n, s.jtc) for n, s in self.fjt.items()]:
            idx = list(self.outputs[name].indices)
            targets[idx] = np.clip(c.sample(now), emb.lower[idx], emb.upper[idx])
        for name, g in self.grippers.items():
            i = self.outputs[name].indices[0]
            targets[i] = np.clip(g.target, emb.lower[i], emb.upper[i])
        for name, f in self.franka.items():
            i = self.outputs[name].indices[0]
            targets[i] = np.clip(f.target / self._scale[name], emb.lower[i], emb.upper[i])

    def update(self, now: float, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Action bookkeeping at time ``now`` from measured positions / velocities (n,): goals end."""
        for name, s in self.fjt.items():
            s.update(now, positions[list(self.outputs[name].indices)])
        for name, g in self.grippers.items():
            i = self.outputs[name].indices[0]
            g.update(now, float(positions[i]), float(velocities[i]))
        for name, f in self.franka.items():
            i, s = self.outputs[name].indices[0], self._scale[name]
            f.update(now, float(positions[i]) * s, float(velocities[i]) * s)
