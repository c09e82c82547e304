"""Per-output command publishers: robot-unit values -> the message type the YAML names."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_ros.robots.embodiment import Dim, Embodiment, Output
from pi0_ros.ros.conversions import message_class, sec_to_stamp
from pi0_ros.trajectory import TRAJECTORY_TYPES, Trajectory

COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
_TWIST_FIELDS = {"base_vx": ("linear", "x"), "base_vy": ("linear", "y"), "base_wz": ("angular", "z")}


def _float_array(values: np.ndarray, velocities: np.ndarray | None) -> Float64MultiArray:
    return Float64MultiArray(data=values.tolist())


def make_builder(output: Output, dims: list[Dim], dt: float) -> tuple[type, Callable[[np.ndarray, np.ndarray | None], object]]:
    """(message class, build(values (k,), velocities (k,) | None) -> message) for one output."""
    t = output.type
    if t == "std_msgs/msg/Float64MultiArray":
        return Float64MultiArray, _float_array
    if t == "trajectory_msgs/msg/JointTrajectory":
        return JointTrajectory, lambda values, velocities: None  # sent from trajectories only
    if t == "geometry_msgs/msg/Twist":
        fields = [_TWIST_FIELDS[d.kind] for d in dims]

        def twist(values: np.ndarray, velocities: np.ndarray | None) -> Twist:
            msg = Twist()
            for (part, axis), v in zip(fields, values):
                setattr(getattr(msg, part), axis, float(v))
            return msg

        return Twist, twist
    if t == "interbotix_xs_msgs/msg/JointGroupCommand":
        cls = message_class(t)  # ImportError when the Interbotix messages are not installed
        group = output.group or "arm"

        def group_cmd(values: np.ndarray, velocities: np.ndarray | None) -> object:
            return cls(name=group, cmd=[float(v) for v in values])

        return cls, group_cmd
    raise ValueError(f"output {output.name}: unsupported type {t}")


def _duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def trajectory_message(traj: Trajectory, joint_names: list[str], idx: np.ndarray) -> JointTrajectory:
    """The output's columns of a safe Trajectory as a joint_trajectory_controller message:
    header.stamp = the trajectory start (so the points stay time-aligned with the chunk),
    one point per action, velocities consistent with the points, zero at the end."""
    msg = JointTrajectory(joint_names=list(joint_names))
    msg.header.stamp = sec_to_stamp(traj.start)
    pos, vel = traj.positions[:, idx], traj.velocities[:, idx]
    msg.points = [JointTrajectoryPoint(positions=pos[k].tolist(), velocities=vel[k].tolist(),
                                       time_from_start=_duration(float(traj.times[k])))
                  for k in range(traj.num_points)]
    return msg


class CommandPublishers:
    """One publisher per embodiment output; dry_run builds messages but publishes nothing."""

    def __init__(self, node: Node, embodiment: Embodiment, dry_run: bool,
                 on_fault: Callable[[str, str], None] | None = None) -> None:
        self.dry_run = dry_run
        self.on_fault = on_fault
        self.published = 0
        self._outs = []
        self._names: dict[str, list[str]] = {}
        for o in embodiment.outputs:
            try:
                cls, build = make_builder(o, [embodiment.dims[i] for i in o.indices], embodiment.dt)
            except ImportError as e:
                raise RuntimeError(f"output '{o.name}': message type {o.type} is not importable ({e}); "
                                   "install its package or change the output type in the embodiment YAML") from e
            pub = None if dry_run else node.create_publisher(cls, o.topic, COMMAND_QOS)
            idx = np.array(o.indices, dtype=np.int64)
            if o.type in TRAJECTORY_TYPES:
                names = list(o.joint_names)
                self._names[o.name] = names
            self._outs.append((o.name, idx, build, pub, o.type in TRAJECTORY_TYPES))
        self.last_messages: dict[str, object] = {}

    def publish(self, commands: dict[str, np.ndarray], velocities: np.ndarray | None,
                trajectory: Trajectory | None = None) -> None:
        """Per-tick values to streaming outputs; a new trajectory (if any) to trajectory outputs."""
        for name, idx, build, pub, is_traj in self._outs:
            if is_traj:
                if trajectory is None:
                    continue
                msg = trajectory_message(trajectory, self._names[name], idx)
            else:
                msg = build(commands[name], None if velocities is None else velocities[idx])
            self.last_messages[name] = msg
            if pub is not None:
                pub.publish(msg)
        self.published += 1
