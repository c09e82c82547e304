"""ROS interfaces of the stand-in robot controllers: the topics and action servers a robot offers.

In front of :class:`pi0_ros.sim.robot_controllers.SimControllers` (ROS-free), with the names and
types the embodiment YAML gives:
- JointTrajectory topic (joint_trajectory_controller ~/joint_trajectory): accepted or rejected by
  JTC's rules; rejected ones are counted and logged, never executed;
- FollowJointTrajectory action server (~/follow_joint_trajectory): REJECT by the same rules,
  succeed at the end, a newer goal aborts the older ("preempted"), cancel holds;
- GripperCommand action server (gripper_action_controller ~/gripper_cmd, franka_gripper
  gripper_action): succeed on reaching the goal, stall -> abort unless allow_stalling, a newer goal
  preempts the older (canceled upstream; reported as aborted here when no cancel was requested,
  the only terminal state rclpy allows then -- clients treat both as "superseded").
Goal results are resolved by a timer at JTC's action_monitor_rate (20 Hz), never by blocking a
callback: execute callbacks are coroutines in a reentrant group.
"""
from __future__ import annotations

import threading
from collections import Counter
from functools import partial
from collections.abc import Callable
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future
from trajectory_msgs.msg import JointTrajectory

from pi0_ros.controllers import GoalResult, GoalStatus, TrajectorySpec, validate
from pi0_ros.robots.embodiment import Embodiment
from pi0_ros.ros.conversions import message_class
from pi0_ros.sim.robot_controllers import SimControllers

ACTION_MONITOR_RATE_HZ = 20.0  # joint_trajectory_controller's action_monitor_rate default


class ControllerInterfaces:
    """Topics and action servers for every trajectory / gripper-action output of ``emb``.

    lock: guards ``controllers`` (shared with the thread that steps them); now(): the controllers'
    clock in s; measured(output) -> measured gripper position (robot units), for cancels.
    """

    def __init__(self, node: Node, emb: Embodiment, controllers: SimControllers, lock: threading.Lock,
                 now: Callable[[], float], measured: Callable[[str], float]) -> None:
        self.node, self.ctl, self.lock, self.now, self.measured = node, controllers, lock, now, measured
        self.counts: dict[str, Counter[str]] = {}
        self._group = ReentrantCallbackGroup()
        self._pending: list[tuple[GoalResult, Future]] = []
        self._goals: dict[bytes, tuple[str, GoalResult]] = {}
        self._entities: list[Any] = []
        for o in emb.outputs:
            self.counts[o.name] = Counter()
            if o.type == "trajectory_msgs/msg/JointTrajectory":
                self._entities.append(node.create_subscription(
                    JointTrajectory, o.topic, lambda m, n=o.name: self._on_trajectory(n, m), 10))
            elif o.type in ("control_msgs/action/FollowJointTrajectory", "control_msgs/action/GripperCommand"):
                cls = message_class(o.type)
                fjt = o.type.endswith("FollowJointTrajectory")
                self._entities.append(ActionServer(
                    node, cls, o.topic, callback_group=self._group,
                    goal_callback=(lambda g, n=o.name: self._on_fjt_goal(n, g)) if fjt else
                    (lambda g, n=o.name: self._on_gripper_goal(n, g)),
                    cancel_callback=lambda gh: CancelResponse.ACCEPT if self._cancel(gh) else CancelResponse.REJECT,
                    # partial, not lambda: rclpy awaits only callbacks that are coroutine functions
                    execute_callback=partial(self._execute_fjt if fjt else self._execute_gripper, o.name, cls)))
            elif o.type == "franka_msgs/action/Grasp":  # franka_gripper_node: <ns>/grasp and <ns>/move
                for kind in ("grasp", "move"):
                    cls = message_class(f"franka_msgs/action/{kind.capitalize()}")
                    self._entities.append(ActionServer(
                        node, cls, o.topic.rstrip("/") + "/" + kind, callback_group=self._group,
                        goal_callback=lambda g: GoalResponse.ACCEPT,   # the node accepts every goal
                        cancel_callback=lambda gh: CancelResponse.REJECT,
                        execute_callback=partial(self._execute_franka, o.name, kind, cls)))
        self._timer = node.create_timer(1.0 / ACTION_MONITOR_RATE_HZ, self._monitor, callback_group=self._group)

    # ------------------------------------------------------------------ JointTrajectory topic
    def _on_trajectory(self, name: str, msg: JointTrajectory) -> None:
        spec = TrajectorySpec.from_msg(msg)
        with self.lock:
            reason = self.ctl.submit_trajectory(name, spec, self.now())
        self.counts[name]["accepted" if reason is None else "rejected"] += 1
        if reason is not None:
            self.node.get_logger().warning(f"{name}: trajectory rejected (as joint_trajectory_controller would): "
                                           f"{reason}", throttle_duration_sec=2.0)

    # ------------------------------------------------------------------ actions
    def _on_fjt_goal(self, name: str, goal: Any) -> GoalResponse:
        jtc = self.ctl.trajectory_controller(name)
        with self.lock:
            reason = validate(jtc.params, TrajectorySpec.from_msg(goal.trajectory), self.now())
        if reason is not None:
            self.counts[name]["rejected"] += 1
            self.node.get_logger().warning(f"{name}: goal rejected: {reason}", throttle_duration_sec=2.0)
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_gripper_goal(self, name: str, goal: Any) -> GoalResponse:
        if not self.ctl.grippers[name].active_controller:
            self.counts[name]["rejected"] += 1
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def _execute_fjt(self, name: str, cls: type, gh: Any) -> Any:  # noqa: D401
        with self.lock:
            res = self.ctl.send_trajectory_goal(name, TrajectorySpec.from_msg(gh.request.trajectory), self.now())
        res = await self._wait(name, gh, res)
        return cls.Result(error_code=res.error_code, error_string=res.error_string)

    async def _execute_gripper(self, name: str, cls: type, gh: Any) -> Any:
        cmd = gh.request.command
        with self.lock:
            res = self.ctl.send_gripper_goal(name, cmd.position, cmd.max_effort, self.now())
        res = await self._wait(name, gh, res)
        return cls.Result(position=res.position, effort=res.effort, stalled=res.stalled, reached_goal=res.reached_goal)

    async def _execute_franka(self, name: str, kind: str, cls: type, gh: Any) -> Any:
        g = gh.request
        inner, outer = (g.epsilon.inner, g.epsilon.outer) if kind == "grasp" else (0.0, 0.0)
        with self.lock:
            res = self.ctl.send_franka_goal(name, kind, g.width, inner, outer, self.now())
        res = await self._wait(name, gh, res)
        return cls.Result(success=res.status is GoalStatus.SUCCEEDED, error=res.error_string)

    async def _wait(self, name: str, gh: Any, res: GoalResult) -> GoalResult:
        key = bytes(gh.goal_id.uuid)
        self._goals[key] = (name, res)
        fut = Future()
        self._pending.append((res, fut))
        await fut
        self._goals.pop(key, None)
        self.counts[name][res.status.value] += 1
        if res.status is GoalStatus.SUCCEEDED:
            gh.succeed()
        elif res.status is GoalStatus.CANCELED and gh.is_cancel_requested:
            gh.canceled()
        else:  # aborted, rejected late, or preempted without a cancel request
            gh.abort()
        return res

    def _cancel(self, gh: Any) -> bool:
        entry = self._goals.get(bytes(gh.goal_id.uuid))
        if entry is None:
            return False
        name, res = entry
        with self.lock:
            if name in self.ctl.fjt:
                self.ctl.cancel_trajectory_goal(name, res.goal_id, self.now())
            else:
                self.ctl.cancel_gripper_goal(name, res.goal_id, self.measured(name))
        return True

    def _monitor(self) -> None:
        with self.lock:
            done = [(r, f) for r, f in self._pending if r.done]
        for item in done:
            self._pending.remove(item)
            item[1].set_result(item[0])
