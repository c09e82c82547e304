"""Viz node: shows the predicted chunk in rviz.

Publishes, for every ActionChunk:
- `~/chunk_markers` (visualization_msgs/MarkerArray): one line strip per action dim, time on x
  (1 m = 1 s) and value on y, stacked along z, plus a text marker (prompt, latency);
- `~/predicted_joint_states` (sensor_msgs/JointState): the chunk's last executed pose with
  the drivers' joint names, for a "ghost" robot (robot_state_publisher with a frame prefix).
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from pi0_ros.msg import ActionChunk
from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.ros.common import declare, run_node


def chunk_lines(actions: np.ndarray, dt: float, lane: float = 0.15) -> list[np.ndarray]:
    """(H, n) chunk -> n polylines (H, 3): x = time (s), y = value normalised per dim, z = lane."""
    lo, hi = actions.min(axis=0), actions.max(axis=0)
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    t = np.arange(actions.shape[0]) * dt
    return [np.stack([t, (actions[:, j] - lo[j]) / span[j] * lane * 0.8, np.full_like(t, j * lane)], axis=1)
            for j in range(actions.shape[1])]


class VizNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_viz", **kwargs)
        p = declare(self, {"embodiment": "trossen_bimanual", "frame_id": "base_link"})
        self.embodiment = load_embodiment(p["embodiment"])
        self.frame_id = p["frame_id"]
        self.markers_pub = self.create_publisher(MarkerArray, "~/chunk_markers", 2)
        self.ghost_pub = self.create_publisher(JointState, "~/predicted_joint_states", 2)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk,
                                 QoSProfile(depth=4, reliability=ReliabilityPolicy.RELIABLE))

    def _on_chunk(self, msg: ActionChunk) -> None:
        emb = self.embodiment
        if msg.embodiment != emb.name or len(msg.actions) != msg.chunk_size * msg.action_dim or msg.action_dim != emb.num_dims:
            return
        actions = np.asarray(msg.actions).reshape(msg.chunk_size, msg.action_dim)
        if not np.all(np.isfinite(actions)):
            return
        arr = MarkerArray()
        for j, line in enumerate(chunk_lines(actions, msg.dt)):
            m = Marker(type=Marker.LINE_STRIP, action=Marker.ADD, ns="pi0_chunk", id=j)
            m.header.frame_id, m.header.stamp = self.frame_id, msg.header.stamp
            m.scale.x = 0.005
            hue = j / max(1, msg.action_dim)
            m.color = ColorRGBA(r=float(1 - hue), g=float(hue), b=0.5, a=1.0)
            m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in line]
            arr.markers.append(m)
        text = Marker(type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, ns="pi0_info", id=0)
        text.header.frame_id, text.header.stamp = self.frame_id, msg.header.stamp
        text.scale.z = 0.05
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.pose.position.z = msg.action_dim * 0.15 + 0.1
        text.text = f"'{msg.prompt}'  chunk {msg.sequence}  model {msg.inference_ms:.0f} ms  latency {msg.latency_ms:.0f} ms"
        arr.markers.append(text)
        self.markers_pub.publish(arr)
        last = actions[min(emb.execute_steps, msg.chunk_size) - 1]
        joints = [(d.joint, float(last[i])) for i, d in enumerate(emb.dims) if d.joint]
        ghost = JointState(name=[n for n, _ in joints], position=[v for _, v in joints])
        ghost.header.stamp = msg.header.stamp
        self.ghost_pub.publish(ghost)


def main(args: list[str] | None = None) -> None:
    run_node(VizNode, args)
