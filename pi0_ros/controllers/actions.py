"""Action servers as the real controllers run them: FollowJointTrajectory and GripperCommand (ROS-free).

Goal life cycles, with the upstream code they follow (ros-controls/ros2_controllers):

FollowJointTrajectory (joint_trajectory_controller.cpp `goal_received_callback`,
`goal_accepted_callback`, `preempt_active_goal`, `update`):
- a goal is REJECTED when the controller is inactive or ``validate_trajectory_msg`` fails (the
  same rules as the topic, :func:`pi0_ros.controllers.jtc.validate`);
- an accepted goal replaces the active trajectory and ABORTS the previous goal with
  error_code INVALID_GOAL, "Current goal preempted by new incoming action." -- so a client that
  streams goals sees its own superseded goals end as aborted: that is not a fault;
- the goal SUCCEEDS once the last point's time has passed (within goal tolerance: the stand-in
  tracks perfectly unless measured positions are given), ABORTS with PATH_TOLERANCE_VIOLATED when
  a measured position leaves ``path_tolerance``, and is CANCELED on request.

GripperCommand (gripper_controllers/gripper_action_controller_impl.hpp, parameters from
gripper_action_controller_parameters.yaml; Robotiq's ros2_robotiq_gripper runs this controller as
``robotiq_gripper_controller`` with action ``~/gripper_cmd``):
- goals are accepted while the controller is active; a new goal CANCELS the active one;
- SUCCEEDED with reached_goal when |target - position| < goal_tolerance (default 0.01);
- a stall (|velocity| <= stall_velocity_threshold 0.001 for longer than stall_timeout 1.0 s)
  ends the goal with stalled=True: SUCCEEDED when ``allow_stalling`` (default false), else
  ABORTED. A grasp that closes on an object stalls: configure allow_stalling: true on the real
  controller, or every grasp ends aborted.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

import numpy as np

from pi0_ros.controllers.jtc import JtcEmulator, TrajectorySpec

__all__ = ["GoalStatus", "GoalResult", "FollowJointTrajectoryServer", "GripperParams", "GripperCommandServer",
           "FrankaGripperServer", "SUCCESSFUL", "INVALID_GOAL", "PATH_TOLERANCE_VIOLATED"]

# control_msgs/action/FollowJointTrajectory result error codes.
SUCCESSFUL = 0
INVALID_GOAL = -1
PATH_TOLERANCE_VIOLATED = -4


class GoalStatus(Enum):
    """action_msgs/msg/GoalStatus states a goal can end in (plus the live ones)."""

    REJECTED = "rejected"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    CANCELED = "canceled"


@dataclass
class GoalResult:
    """Where a goal stands; result fields as in the action's result message."""

    goal_id: int
    status: GoalStatus
    error_code: int = SUCCESSFUL
    error_string: str = ""
    position: float = 0.0
    effort: float = 0.0
    stalled: bool = False
    reached_goal: bool = False

    @property
    def done(self) -> bool:
        return self.status not in (GoalStatus.EXECUTING,)


_ids = itertools.count(1)


class FollowJointTrajectoryServer:
    """control_msgs/action/FollowJointTrajectory on a joint_trajectory_controller stand-in."""

    def __init__(self, jtc: JtcEmulator, path_tolerance: float = 0.0) -> None:
        self.jtc = jtc
        self.path_tolerance = path_tolerance  # rad; 0 = not checked (JTC's default constraints)
        self.active_controller = True
        self.goals: dict[int, GoalResult] = {}
        self._active: int | None = None

    def send_goal(self, traj: TrajectorySpec, now: float) -> GoalResult:
        """Goal request at time now (s): rejected, or accepted and executing (preempting the active goal)."""
        gid = next(_ids)
        if not self.active_controller:
            res = GoalResult(gid, GoalStatus.REJECTED, INVALID_GOAL, "Controller is not running.")
        else:
            reason = self.jtc.submit(traj, now)
            if reason is not None:
                res = GoalResult(gid, GoalStatus.REJECTED, INVALID_GOAL, reason)
            else:
                if self._active is not None:
                    old = self.goals[self._active]
                    old.status, old.error_code = GoalStatus.ABORTED, INVALID_GOAL
                    old.error_string = "Current goal preempted by new incoming action."
                res = GoalResult(gid, GoalStatus.EXECUTING)
                self._active = gid
        self.goals[gid] = res
        return res

    def cancel(self, goal_id: int, now: float) -> None:
        """Cancel request: the active goal ends CANCELED and the controller holds where it is."""
        if goal_id == self._active:
            self.goals[goal_id].status = GoalStatus.CANCELED
            self._active = None
            self.jtc.reset(self.jtc.sample(now))

    def update(self, now: float, measured: np.ndarray | None = None) -> None:
        """One controller update at time now (s); measured (n,) actual positions, controller order."""
        if self._active is None:
            return
        goal = self.goals[self._active]
        desired = self.jtc.sample(now)
        if measured is not None and self.path_tolerance > 0 and \
                np.max(np.abs(np.asarray(measured) - desired)) > self.path_tolerance:
            goal.status, goal.error_code = GoalStatus.ABORTED, PATH_TOLERANCE_VIOLATED
            goal.error_string = "Aborted due to path tolerance violation"
            self._active = None
            self.jtc.reset(desired)  # JTC: hold current position
            return
        end = self.jtc.end_time()
        if end is None or now >= end:
            goal.status, goal.error_code, goal.error_string = GoalStatus.SUCCEEDED, SUCCESSFUL, "Goal successfully reached!"
            self._active = None


@dataclass(frozen=True)
class GripperParams:
    """gripper_action_controller parameters (defaults as upstream)."""

    goal_tolerance: float = 0.01
    max_effort: float = 0.0
    allow_stalling: bool = False
    stall_velocity_threshold: float = 0.001
    stall_timeout: float = 1.0


class GripperCommandServer:
    """control_msgs/action/GripperCommand on a gripper_action_controller stand-in.

    The target it commands is ``target`` (the joint's position units); the caller moves the
    gripper (simulator) and reports the measured position and velocity in :meth:`update`.
    """

    def __init__(self, params: GripperParams | None = None, initial_target: float = 0.0) -> None:
        self.params = params or GripperParams()
        self.active_controller = True
        self.target = float(initial_target)
        self.goals: dict[int, GoalResult] = {}
        self._active: int | None = None
        self._last_movement = 0.0

    def send_goal(self, position: float, max_effort: float, now: float) -> GoalResult:
        gid = next(_ids)
        if not self.active_controller:
            res = GoalResult(gid, GoalStatus.REJECTED, error_string="Controller is not running.")
            self.goals[gid] = res
            return res
        if self._active is not None:  # preempt_active_goal: canceled, empty result
            self.goals[self._active].status = GoalStatus.CANCELED
        res = GoalResult(gid, GoalStatus.EXECUTING)
        self.goals[gid] = res
        self._active = gid
        self.target = float(position)
        self._last_movement = now
        return res

    def cancel(self, goal_id: int, position: float) -> None:
        """Cancel: the controller holds the measured position."""
        if goal_id == self._active:
            self.goals[goal_id].status = GoalStatus.CANCELED
            self._active = None
            self.target = float(position)

    def update(self, now: float, position: float, velocity: float, effort: float = 0.0) -> None:
        """One controller update: success, stall handling. position/velocity measured."""
        if self._active is None:
            return
        goal = self.goals[self._active]
        goal.position, goal.effort = float(position), float(effort)
        p = self.params
        if abs(self.target - position) < p.goal_tolerance:
            goal.status, goal.reached_goal, goal.stalled = GoalStatus.SUCCEEDED, True, False
            self._active = None
            return
        if abs(velocity) > p.stall_velocity_threshold:
            self._last_movement = now
        elif now - self._last_movement > p.stall_timeout:
            goal.reached_goal, goal.stalled = False, True
            goal.status = GoalStatus.SUCCEEDED if p.allow_stalling else GoalStatus.ABORTED
            self._active = None
            # The real controller keeps commanding the stalled position (max effort on the object).


class FrankaGripperServer:
    """franka_gripper_node's ``move`` and ``grasp`` actions (franka_msgs) on a stand-in.

    From frankaemika/franka_ros2 franka_gripper (gripper_action_server.cpp, docs): ``move`` drives
    to a width at a speed and succeeds there; ``grasp`` closes at a speed with a force and
    succeeds only if the width it stops at lies within [width - epsilon.inner, width +
    epsilon.outer] (default 0.005 m each), else it fails (ABORTED). Both are accepted whenever
    the node runs; a new goal stops the running one (reported as aborted here). Widths are the
    distance between the fingers (m); ``target`` is in the same units.
    """

    def __init__(self, initial_width: float, stall_velocity_threshold: float = 0.001,
                 stall_timeout: float = 0.5, reach_tolerance: float = 0.002) -> None:
        self.target = float(initial_width)
        self.goals: dict[int, GoalResult] = {}
        self.active_controller = True
        self._active: int | None = None
        self._kind = "move"
        self._eps = (0.005, 0.005)
        self._goal_width = self.target
        self._last_movement = 0.0
        self.stall_velocity_threshold = stall_velocity_threshold
        self.stall_timeout = stall_timeout
        self.reach_tolerance = reach_tolerance

    def _start(self, kind: str, width: float, now: float) -> GoalResult:
        gid = next(_ids)
        if not self.active_controller:
            res = GoalResult(gid, GoalStatus.REJECTED, error_string="gripper node not running")
            self.goals[gid] = res
            return res
        if self._active is not None:
            old = self.goals[self._active]
            old.status, old.error_string = GoalStatus.ABORTED, "preempted by a new gripper command"
        res = GoalResult(gid, GoalStatus.EXECUTING)
        self.goals[gid] = res
        self._active, self._kind, self._goal_width = gid, kind, float(width)
        self._last_movement = now
        return res

    def move(self, width: float, now: float) -> GoalResult:
        res = self._start("move", width, now)
        if res.status is GoalStatus.EXECUTING:
            self.target = float(width)
        return res

    def grasp(self, width: float, inner: float, outer: float, now: float) -> GoalResult:
        res = self._start("grasp", width, now)
        if res.status is GoalStatus.EXECUTING:
            self._eps = (float(inner), float(outer))
            self.target = float(width) - float(inner)  # closes until it meets the object (or the tolerance)
        return res

    def update(self, now: float, width: float, velocity: float) -> None:
        """Measured width (m) and its rate: goals end when the fingers stop."""
        if self._active is None:
            return
        goal = self.goals[self._active]
        goal.position = float(width)
        if abs(velocity) > self.stall_velocity_threshold:
            self._last_movement = now
        reached = abs(width - self.target) < self.reach_tolerance
        stopped = now - self._last_movement > self.stall_timeout
        if not (reached or stopped):
            return
        if self._kind == "move":
            ok = abs(width - self._goal_width) < self.reach_tolerance
        else:
            inner, outer = self._eps
            ok = self._goal_width - inner <= width <= self._goal_width + outer
        goal.status = GoalStatus.SUCCEEDED if ok else GoalStatus.ABORTED
        goal.reached_goal = ok
        goal.error_string = "" if ok else f"{self._kind} ended at width {width:.4f} m"
        self._active = None
        if self._kind == "grasp" and ok:
            return  # keeps squeezing the object
        self.target = float(width) if not ok else self.target
