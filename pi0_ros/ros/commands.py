"""Per-output command senders: robot-unit values -> the message or action goal the YAML names.

What each interface needs (README "Command interfaces"; upstream sources in the comments):
- std_msgs/Float64MultiArray: forward (streaming) controllers, one message per tick.
- trajectory_msgs/JointTrajectory: joint_trajectory_controller ~/joint_trajectory. ONE multi-point
  trajectory per chunk (the executor's :class:`pi0_ros.trajectory.Trajectory`: header.stamp = its
  start, one point per action at its time_from_start, velocities from the plan, zero at the end),
  sent only when the executor hands a new one over. JTC rejects trajectories that end moving
  (allow_nonzero_velocity_at_trajectory_end defaults to false) or end in the past.
- control_msgs/FollowJointTrajectory: the same trajectory as an action goal; a newer goal preempts
  the older one, which JTC then ABORTS with INVALID_GOAL ("preempted by new incoming action",
  joint_trajectory_controller.cpp preempt_active_goal): expected, not a fault. A rejected goal, or
  an abort of the newest goal, is.
- control_msgs/GripperCommand: async goals, only when the target moved beyond the output's
  ``deadband`` (or settled on a new value), never one per tick. Rejected or aborted -> fault (a
  stalled grasp aborts on gripper_action_controller unless allow_stalling is set there).
- franka_msgs Grasp / Move (franka_gripper's own actions, ``<topic>/grasp`` when closing,
  ``<topic>/move`` when opening): same deadband and fault rules; a grasp fails unless it stops
  within [width - epsilon.inner, width + epsilon.outer].
- geometry_msgs/Twist | TwistStamped (diff_drive_controller from Jazzy: stamped, stamp = now).
- interbotix_xs_msgs/JointGroupCommand | JointSingleCommand (xs_sdk commands/joint_group, joint_single).
Nothing here blocks: goals are sent with send_goal_async and answered in callbacks. A fault calls
``on_fault(output name, reason)`` so the executor holds.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_ros.robots.embodiment import Dim, Embodiment, Output
from pi0_ros.ros.conversions import message_class, sec_to_stamp
from pi0_ros.trajectory import Trajectory

COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
_TWIST_FIELDS = {"base_vx": ("linear", "x"), "base_vy": ("linear", "y"), "base_wz": ("angular", "z")}
# action_msgs/msg/GoalStatus values.
_STATUS_SUCCEEDED, _STATUS_CANCELED, _STATUS_ABORTED = 4, 5, 6
_UNSET: Any = object()   # publish() called without `trajectory` (a caller that plans no trajectories)


def _duration(s: float) -> Duration:
    ns = int(round(s * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def trajectory_message(traj: Trajectory, indices: np.ndarray, joint_names: list[str]) -> JointTrajectory:
    """The columns ``indices`` of a Trajectory as a JointTrajectory (stamp = start, s -> ROS time)."""
    msg = JointTrajectory(joint_names=list(joint_names))
    msg.header.stamp = sec_to_stamp(traj.start)
    pos, vel = traj.positions[:, indices], traj.velocities[:, indices]
    msg.points = [JointTrajectoryPoint(positions=pos[k].tolist(), velocities=vel[k].tolist(),
                                       time_from_start=_duration(float(traj.times[k])))
                  for k in range(traj.num_points)]
    return msg


def _float_array(values: np.ndarray, velocities: np.ndarray | None) -> Float64MultiArray:
    return Float64MultiArray(data=values.tolist())


def make_builder(output: Output, dims: list[Dim], dt: float) -> tuple[type, Callable[[np.ndarray, np.ndarray | None], object]]:
    """(message or action class, build(values (k,), velocities (k,) | None) -> message | goal) for one output.

    JointTrajectory's per-tick builder is one point `dt` ahead at rest (what JTC accepts when no
    multi-point trajectory is planned); FollowJointTrajectory's multi-point goals come from
    :func:`trajectory_message`."""
    t = output.type
    if t == "std_msgs/msg/Float64MultiArray":
        return Float64MultiArray, _float_array
    if t == "trajectory_msgs/msg/JointTrajectory":
        ahead = _duration(dt)
        names = list(output.joint_names)

        def traj(values: np.ndarray, velocities: np.ndarray | None) -> JointTrajectory:
            # Zero velocity: JTC rejects a trajectory whose last point moves.
            pt = JointTrajectoryPoint(positions=values.tolist(), velocities=[0.0] * len(values), time_from_start=ahead)
            return JointTrajectory(joint_names=names, points=[pt])

        return JointTrajectory, traj
    if t in ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"):
        fields = [_TWIST_FIELDS[d.kind] for d in dims]
        stamped = t.endswith("TwistStamped")
        frame = str(output.params.get("frame_id", "base_link"))

        def twist(values: np.ndarray, velocities: np.ndarray | None) -> Twist | TwistStamped:
            tw = Twist()
            for (part, axis), v in zip(fields, values):
                setattr(getattr(tw, part), axis, float(v))
            if not stamped:
                return tw
            msg = TwistStamped(twist=tw)
            msg.header.frame_id = frame  # stamp set at send time (diff_drive_controller drops stale ones)
            return msg

        return (TwistStamped if stamped else Twist), twist
    if t == "interbotix_xs_msgs/msg/JointGroupCommand":
        cls = message_class(t)  # ImportError when the Interbotix messages are not installed
        group = output.group or "arm"

        def group_cmd(values: np.ndarray, velocities: np.ndarray | None) -> object:
            return cls(name=group, cmd=[float(v) for v in values])

        return cls, group_cmd
    if t == "interbotix_xs_msgs/msg/JointSingleCommand":
        cls = message_class(t)
        joint = output.group or "gripper"  # xs_sdk joint name: ALOHA's follower gripper is "gripper"

        def single_cmd(values: np.ndarray, velocities: np.ndarray | None) -> object:
            return cls(name=joint, cmd=float(values[0]))

        return cls, single_cmd
    if t == "control_msgs/action/GripperCommand":
        action = message_class(t)
        max_effort = float(output.params.get("max_effort", 0.0))

        def gripper_goal(values: np.ndarray, velocities: np.ndarray | None) -> object:
            goal = action.Goal()
            goal.command.position = float(values[0])
            goal.command.max_effort = max_effort
            return goal

        return action, gripper_goal
    if t == "franka_msgs/action/Grasp":
        grasp = message_class(t)
        prm = output.params
        scale = float(prm.get("width_scale", 2.0))

        def grasp_goal(values: np.ndarray, velocities: np.ndarray | None) -> object:
            goal = grasp.Goal(width=float(values[0]) * scale, speed=float(prm.get("speed", 0.1)),
                              force=float(prm.get("force", 20.0)))
            goal.epsilon.inner = float(prm.get("epsilon_inner", 0.005))
            goal.epsilon.outer = float(prm.get("epsilon_outer", 0.005))
            return goal

        return grasp, grasp_goal
    if t == "control_msgs/action/FollowJointTrajectory":
        action = message_class(t)
        single = make_builder(Output(output.name, output.topic, "trajectory_msgs/msg/JointTrajectory", output.dims,
                                     output.indices, output.joint_names), dims, dt)[1]
        return action, lambda values, velocities: action.Goal(trajectory=single(values, velocities))
    raise ValueError(f"output {output.name}: unsupported type {t}")


class _Sender:
    """One output: its builder, publisher or action client, and counters."""

    def __init__(self, node: Node, emb: Embodiment, o: Output, dry_run: bool,
                 on_fault: Callable[[str, str], None]) -> None:
        self.node, self.emb, self.o, self.on_fault = node, emb, o, on_fault
        self.idx = np.array(o.indices, dtype=np.int64)
        self.cls, self.build = make_builder(o, [emb.dims[i] for i in o.indices], emb.dt)
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.pub = self.client = self.move_client = None
        self.franka = o.type == "franka_msgs/action/Grasp"
        if self.franka:
            self.move_cls = message_class("franka_msgs/action/Move")
            self.width_scale = float(o.params.get("width_scale", 2.0))
        if not dry_run:
            if self.franka:
                from rclpy.action import ActionClient
                self.client = ActionClient(node, self.cls, o.topic.rstrip("/") + "/grasp")
                self.move_client = ActionClient(node, self.move_cls, o.topic.rstrip("/") + "/move")
            elif o.is_action:
                from rclpy.action import ActionClient
                self.client = ActionClient(node, self.cls, o.topic)
            else:
                self.pub = node.create_publisher(self.cls, o.topic, COMMAND_QOS)
        self.latest_goal = 0            # sequence number of the newest goal sent
        self.last_sent: float | None = None  # gripper: the position of the newest goal
        self.prev_target: float | None = None
        if o.type in ("control_msgs/action/GripperCommand", "franka_msgs/action/Grasp"):
            d = emb.dims[o.indices[0]]
            self.deadband = float(o.params.get("deadband", 0.02 * abs(d.closed - d.open)))  # type: ignore[operator]

    # ------------------------------------------------------------------ action goals
    def send_goal(self, goal: object, what: str, client: Any = _UNSET) -> bool:
        """Send asynchronously (dry run: only count). False when the action server is not there."""
        client = self.client if client is _UNSET else client
        if client is not None and not client.server_is_ready():
            self.counts["unavailable"] += 1
            self.node.get_logger().warning(f"{self.o.topic}: action server not available; {what} not sent",
                                           throttle_duration_sec=2.0)
            return False
        with self.lock:
            self.latest_goal += 1
            seq = self.latest_goal
            self.counts["sent"] += 1
        if client is None:
            return True
        fut = client.send_goal_async(goal)
        fut.add_done_callback(lambda f, s=seq: self._on_response(f, s))
        return True

    def _on_response(self, fut, seq: int) -> None:
        handle = fut.result()
        if not handle.accepted:
            self._fault("rejected", f"goal {seq} rejected")
            return
        handle.get_result_async().add_done_callback(lambda f, s=seq: self._on_result(f, s))

    def _on_result(self, fut, seq: int) -> None:
        res = fut.result()
        status, result = res.status, res.result
        detail = getattr(result, "error_string", "") or ("stalled" if getattr(result, "stalled", False) else "")
        with self.lock:
            superseded = seq != self.latest_goal
        if status == _STATUS_SUCCEEDED:
            self.counts["succeeded"] += 1
        elif superseded and status in (_STATUS_ABORTED, _STATUS_CANCELED):
            self.counts["preempted"] += 1  # replaced by our own newer goal: JTC aborts, grippers cancel
        elif status == _STATUS_ABORTED:
            self._fault("aborted", f"goal {seq} aborted{': ' + detail if detail else ''}")
        else:
            self.counts["canceled"] += 1

    def _fault(self, kind: str, reason: str) -> None:
        self.counts[kind] += 1
        self.node.get_logger().error(f"output '{self.o.name}' ({self.o.topic}): {reason}")
        self.on_fault(self.o.name, reason)

    # ------------------------------------------------------------------ per tick
    def tick(self, values: np.ndarray, velocities: np.ndarray | None, traj: Trajectory | None | Any,
             now: float) -> object | None:
        """Send what this output sends on this tick; the message or goal built (None: nothing)."""
        t = self.o.type
        if t == "trajectory_msgs/msg/JointTrajectory" or t == "control_msgs/action/FollowJointTrajectory":
            if traj is _UNSET:  # no planner upstream: a per-tick point at rest (JTC accepts it)
                msg = self.build(values, velocities)
            elif traj is None:
                return None
            else:
                if traj.end < now:  # JTC rejects a trajectory that ends in the past: never send one
                    self.counts["skipped_past"] += 1
                    return None
                msg = trajectory_message(traj, self.idx, list(self.o.joint_names))
                if t.startswith("control_msgs"):
                    msg = self.cls.Goal(trajectory=msg)
            if self.client is not None or t.startswith("control_msgs"):
                self.send_goal(msg, "trajectory")
            else:
                self.counts["sent"] += 1
                if self.pub is not None:
                    self.pub.publish(msg)
            return msg
        if t in ("control_msgs/action/GripperCommand", "franka_msgs/action/Grasp"):
            target = float(values[0])
            steady = self.prev_target is not None and abs(target - self.prev_target) < 1e-9
            self.prev_target = target
            if self.last_sent is not None and abs(target - self.last_sent) <= self.deadband and \
                    not (steady and abs(target - self.last_sent) > 1e-6):
                return None  # within the deadband, or still moving: the active goal stands
            goal, client = self.build(values, velocities), self.client
            if self.franka:
                d = self.emb.dims[self.o.indices[0]]
                closing = self.last_sent is not None and \
                    abs(target - d.closed) < abs(self.last_sent - d.closed)  # type: ignore[operator]
                if not closing:  # opening (or the first command): franka_gripper's move
                    goal = self.move_cls.Goal(width=target * self.width_scale, speed=goal.speed)
                    client = self.move_client
            if self.send_goal(goal, f"gripper goal {target:.4f}", client):
                self.last_sent = target  # else: tried again next tick
            return goal
        msg = self.build(values, velocities)
        if isinstance(msg, TwistStamped):
            msg.header.stamp = self.node.get_clock().now().to_msg()
        self.counts["sent"] += 1
        if self.pub is not None:
            self.pub.publish(msg)
        return msg


class CommandPublishers:
    """One sender per embodiment output; dry_run builds messages and goals but sends nothing.

    on_fault(output name, reason): called (from an executor callback thread) when a goal is
    rejected or aborted, so the executor holds. counters() gives per-output sent / rejected /
    aborted / preempted / skipped_past counts for diagnostics.
    """

    def __init__(self, node: Node, embodiment: Embodiment, dry_run: bool,
                 on_fault: Callable[[str, str], None] | None = None) -> None:
        # rclpy's ActionClient registers itself with its node before it has made its lock, and an
        # executor already spinning the node can poll it in between: the spin thread dies with an
        # AttributeError and the node takes no more callbacks (measured: no /clock, no goal
        # responses). So action clients are made before the node spins, as the executor node does.
        if not dry_run and any(o.is_action for o in embodiment.outputs) and node.executor is not None:
            raise RuntimeError(f"CommandPublishers for '{embodiment.name}' (action outputs) on node "
                               f"'{node.get_name()}' which already spins: create them before adding the node "
                               "to an executor")
        self.dry_run = dry_run
        self.published = 0
        self.node = node
        fault = on_fault or (lambda name, reason: None)
        self._senders: list[_Sender] = []
        for o in embodiment.outputs:
            try:
                self._senders.append(_Sender(node, embodiment, o, dry_run, fault))
            except ImportError as e:
                raise RuntimeError(f"output '{o.name}': {o.type} is not importable ({e}); install its package "
                                   "(make setup builds control_msgs / interbotix_xs_msgs) or change the output "
                                   "type in the embodiment YAML") from e
        self.last_messages: dict[str, object] = {}

    def publish(self, commands: dict[str, np.ndarray], velocities: np.ndarray | None,
                trajectory: Trajectory | None = _UNSET) -> None:
        """Send one tick. trajectory: a new Trajectory for trajectory outputs, None when none is due
        (they keep executing the last one); omitted by callers that plan none (a point at rest per tick)."""
        now = self.node.get_clock().now().nanoseconds * 1e-9
        for s in self._senders:
            msg = s.tick(commands[s.o.name], None if velocities is None else velocities[s.idx], trajectory, now)
            if msg is not None:
                self.last_messages[s.o.name] = msg
        self.published += 1

    def sent_counts(self) -> dict[str, int]:
        """{output name: messages / goals sent}."""
        return {s.o.name: s.counts["sent"] for s in self._senders}

    def counters(self) -> dict[str, dict[str, int]]:
        """{output name: {sent, rejected, aborted, preempted, succeeded, skipped_past, unavailable}}."""
        keys = ("sent", "rejected", "aborted", "preempted", "succeeded", "skipped_past", "unavailable")
        return {s.o.name: {k: int(s.counts[k]) for k in keys} for s in self._senders}
