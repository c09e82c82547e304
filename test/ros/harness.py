"""A real rclpy graph for node tests: own context, background executor, synthetic robot."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from rclpy.action import ActionServer, GoalResponse
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from pi0_ros.msg import ActionChunk
from pi0_ros.robots.embodiment import Embodiment
from pi0_ros.ros.commands import make_builder
from pi0_ros.ros.conversions import rgb_to_image, sec_to_stamp


class Graph:
    """Owns a context and one executor thread per node (as pi0-ros bringup does: rclpy's
    MultiThreadedExecutor busy-loops while a long callback runs and starves other threads);
    add nodes, then `wait_for(cond)`."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.nodes: list[Node] = []
        self._spinners: list[tuple[SingleThreadedExecutor, threading.Thread]] = []

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        ex = SingleThreadedExecutor(context=self.context)
        ex.add_node(node)
        t = threading.Thread(target=self._spin, args=(ex,), daemon=True)
        t.start()
        self._spinners.append((ex, t))
        return node

    def _spin(self, ex: SingleThreadedExecutor) -> None:
        try:
            ex.spin()
        except Exception:  # noqa: BLE001 - shutdown races
            if self.context.ok():
                raise

    def node(self, name: str) -> Node:
        return self.add(Node(name, context=self.context))

    def params(self, **kw: Any) -> dict[str, Any]:
        return {"context": self.context, "parameter_overrides": [Parameter(k, value=v) for k, v in kw.items()]}

    @staticmethod
    def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.01)
        return cond()

    def close(self) -> None:
        for ex, t in self._spinners:
            ex.shutdown(timeout_sec=2.0)
            t.join(timeout=2.0)
        for n in reversed(self.nodes):
            try:
                n.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        rclpy.shutdown(context=self.context)


def now(node: Node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


class FakeRobot:
    """Publishes the embodiment's joint states (and cameras) from a timer; records commands."""

    def __init__(self, graph: Graph, emb: Embodiment, state: np.ndarray, *, joint_rate: float = 100.0,
                 camera_rate: float = 0.0, camera_shape: tuple[int, int] = (48, 64), split: bool = False,
                 rename: dict[str, str] | None = None) -> None:
        """split: each source's grippers come from a second publisher on the same topic (a
        separate gripper driver); rename: {old prefix: new prefix} for published joint names."""
        self.emb, self.state = emb, np.array(state, dtype=float)
        self.node = graph.node("fake_robot")
        self.alive = True
        self.track = True
        self.cameras_alive = True
        self.commands: dict[str, list[tuple[float, Any]]] = {o.name: [] for o in emb.outputs}
        self.commanded: list[tuple[float, np.ndarray]] = []
        self._js_pubs = {s: self.node.create_publisher(JointState, t, qos_profile_sensor_data)
                         for s, t in emb.joint_state_sources.items()}
        self.split, self.rename = split, rename or {}
        self._grip_pubs = {s: self.node.create_publisher(JointState, t, qos_profile_sensor_data)
                           for s, t in emb.joint_state_sources.items()} if split else {}
        self._odom_pub = None
        if emb.odometry_topic:
            from nav_msgs.msg import Odometry

            self._odom_pub = self.node.create_publisher(Odometry, emb.odometry_topic, qos_profile_sensor_data)
        self._cam_pubs = {c.slot: self.node.create_publisher(Image, c.topic, qos_profile_sensor_data) for c in emb.cameras}
        self._img = np.random.default_rng(0).integers(0, 255, size=camera_shape + (3,), dtype=np.uint8)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._action_servers = []
        for o in emb.outputs:
            cls, _ = make_builder(o, [emb.dims[i] for i in o.indices], emb.dt)
            if o.is_action:  # an action server that accepts and records every goal, then succeeds
                self._action_servers.append(ActionServer(
                    self.node, cls, o.topic, execute_callback=lambda gh, c=cls: (gh.succeed(), c.Result())[1],
                    goal_callback=lambda g, n=o.name: (self.commands[n].append((now(self.node), g)),
                                                       GoalResponse.ACCEPT)[1]))
                continue
            self.node.create_subscription(cls, o.topic, lambda m, n=o.name: self.commands[n].append((now(self.node), m)),
                                          reliable)
        self.node.create_subscription(JointState, "/pi0_executor/commanded", self._on_commanded, reliable)
        self.node.create_timer(1.0 / joint_rate, self._publish_joints)
        if camera_rate > 0:
            self.node.create_timer(1.0 / camera_rate, self._publish_cameras)

    def _on_commanded(self, m: JointState) -> None:
        pos = np.array(m.position)
        # The executor's stamp of the tick (not our receipt time, which adds DDS delivery delay).
        self.commanded.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, pos))
        if self.track and pos.shape == self.state.shape:
            self.state = pos.copy()  # a perfect position controller

    def _publish_joints(self) -> None:
        if not self.alive:
            return
        stamp = self.node.get_clock().now().to_msg()
        for source, pub in self._js_pubs.items():
            dims = [(i, d) for i, d in enumerate(self.emb.dims) if d.source == source]
            groups = [dims]
            if self.split:  # the gripper driver publishes its own messages on the same topic
                groups = [[x for x in dims if x[1].kind != "gripper"], [x for x in dims if x[1].kind == "gripper"]]
            for g, p in zip(groups, [pub, self._grip_pubs.get(source)]):
                if g and p is not None:
                    p.publish(JointState(header=_header(stamp), name=[self._name(d.joint) for _, d in g],
                                         position=[float(self.state[i]) for i, _ in g]))
        if self._odom_pub is not None:
            from nav_msgs.msg import Odometry

            odom = Odometry(header=_header(stamp))
            odom.pose.pose.orientation.w = 1.0
            base = {d.kind: float(self.state[i]) for i, d in enumerate(self.emb.dims) if d.kind.startswith("base_")}
            odom.twist.twist.linear.x = base.get("base_vx", 0.0)
            odom.twist.twist.linear.y = base.get("base_vy", 0.0)
            odom.twist.twist.angular.z = base.get("base_wz", 0.0)
            self._odom_pub.publish(odom)

    def _name(self, joint: str) -> str:
        for old, new in self.rename.items():
            if joint.startswith(old):
                return new + joint[len(old):]
        return joint

    def _publish_cameras(self) -> None:
        if not self.cameras_alive:
            return
        stamp = self.node.get_clock().now().to_msg()
        for pub in self._cam_pubs.values():
            pub.publish(rgb_to_image(self._img, stamp))


def _header(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp)


def make_chunk(emb: Embodiment, actions: np.ndarray, stamp: float, seq: int, *, embodiment: str | None = None,
               dt: float | None = None) -> ActionChunk:
    msg = ActionChunk()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.embodiment = embodiment or emb.name
    msg.sequence = seq
    msg.joint_names = emb.dim_names
    msg.dt = dt or emb.dt
    msg.chunk_size, msg.action_dim = actions.shape
    msg.actions = np.asarray(actions, dtype=float).ravel().tolist()
    return msg


def mid_state(emb: Embodiment) -> np.ndarray:
    """A safe state in the middle of every dim's limits (0 velocity for base dims)."""
    mid = (emb.lower + emb.upper) / 2
    return np.where([k.startswith("base_") for k in emb.kinds], 0.0, mid)
