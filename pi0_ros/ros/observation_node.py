"""Observation node: cameras + joint states (+ odometry) + prompt -> time-synchronised Observation.

All synchronisation, staleness and preprocessing logic is in pi0_ros.observation; this node
converts messages and publishes at `publish_rate_hz` whenever a newer fresh set exists.
"""
from __future__ import annotations

import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from pi0_ros.images import ImageDecodeError
from pi0_ros.msg import Observation
from pi0_ros.observation import ObservationAssembler, ObservationConfig
from pi0_ros.robots.embodiment import JointStateError, load_embodiment
from pi0_ros.ros.common import OK, WARN, declare, now_sec, run_node, status
from pi0_ros.ros.conversions import image_to_rgb, rgb_to_image, sec_to_stamp, stamp_to_sec
from pi0_ros.srv import SetPrompt

PROMPT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
OBS_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)


class ObservationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_observation", **kwargs)
        p = declare(self, {
            "embodiment": "trossen_bimanual",
            "publish_rate_hz": 15.0,     # Hz, how often to look for a newer synchronised set
            "slop": 0.05,                # s, max spread of synchronised stamps
            "camera_max_age": 0.5,       # s
            "joint_max_age": 0.25,       # s
            "odom_max_age": 0.25,        # s
            "image_size": 224,           # pixels (model input, resize with padding)
            "cameras_optional": False,   # True: mask a missing camera instead of pausing
            "prompt": "",
            "diagnostics_period": 1.0,   # s
        })
        self.embodiment = emb = load_embodiment(p["embodiment"])
        cfg = ObservationConfig(slop=p["slop"], camera_max_age=p["camera_max_age"], joint_max_age=p["joint_max_age"],
                                odom_max_age=p["odom_max_age"], image_size=p["image_size"],
                                cameras_optional=p["cameras_optional"])
        self.assembler = ObservationAssembler(emb, cfg)
        self._lock = threading.Lock()
        self.prompt = p["prompt"]
        self.sequence = 0
        self._last_t_obs = -np.inf
        self.last_reason = "starting"
        self.rejected: dict[str, int] = {}

        for cam in emb.cameras:
            if cam.compressed:
                self.create_subscription(CompressedImage, cam.topic, lambda m, s=cam.slot: self._on_image(s, m),
                                         qos_profile_sensor_data)
            else:
                self.create_subscription(Image, cam.topic, lambda m, s=cam.slot: self._on_image(s, m),
                                         qos_profile_sensor_data)
        for source, topic in emb.joint_state_sources.items():
            self.create_subscription(JointState, topic, lambda m, s=source: self._on_joints(s, m), qos_profile_sensor_data)
        if emb.odometry_topic:
            self.create_subscription(Odometry, emb.odometry_topic, self._on_odom, qos_profile_sensor_data)
        self.create_subscription(String, "prompt", self._on_prompt, PROMPT_QOS)
        self.create_service(SetPrompt, "~/set_prompt", self._on_set_prompt)
        self.pub = self.create_publisher(Observation, "observation", OBS_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0 / p["publish_rate_hz"], self._publish)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(f"observation node for {emb.name}: cameras {[c.topic for c in emb.cameras]}, "
                               f"joint states {list(emb.joint_state_sources.values())}")

    def _reject(self, what: str, err: Exception) -> None:
        self.rejected[what] = self.rejected.get(what, 0) + 1
        self.get_logger().warning(f"{what}: {err}", throttle_duration_sec=2.0)

    def _on_image(self, slot: str, msg: Image | CompressedImage) -> None:
        try:
            rgb = image_to_rgb(msg)
        except (ImageDecodeError, ValueError) as e:
            self._reject(f"camera {slot}", e)
            return
        with self._lock:
            self.assembler.add_image(slot, stamp_to_sec(msg.header.stamp), rgb)
        # Event-driven: publish as soon as the frame completes a synchronised set (no timer
        # phase delay); the timer below is the fallback for late joint states.
        self._publish()

    def _on_joints(self, source: str, msg: JointState) -> None:
        try:
            with self._lock:
                self.assembler.add_joint_state(source, stamp_to_sec(msg.header.stamp), list(msg.name), msg.position)
        except JointStateError as e:
            self._reject(f"joint state {source}", e)

    def _on_odom(self, msg: Odometry) -> None:
        t, q = msg.twist.twist, msg.pose.pose.orientation
        try:
            with self._lock:
                self.assembler.add_odometry(stamp_to_sec(msg.header.stamp), t.linear.x, t.linear.y, t.angular.z,
                                            (q.w, q.x, q.y, q.z))
        except JointStateError as e:
            self._reject("odometry", e)

    def _on_prompt(self, msg: String) -> None:
        self.prompt = msg.data
        self.get_logger().info(f"prompt: '{msg.data}'")

    def _on_set_prompt(self, req: SetPrompt.Request, res: SetPrompt.Response) -> SetPrompt.Response:
        self.prompt = req.prompt
        res.success, res.message = True, f"prompt set to '{req.prompt}' (effective from the next chunk)"
        return res

    def reset(self, prompt: str | None = None, since: float | None = None) -> None:
        """Forget queued inputs (new episode / scene reset) and optionally set the prompt.
        since: ignore inputs stamped before this time that are still in flight (s, ROS time)."""
        with self._lock:
            self.assembler.sync.clear(since=-np.inf if since is None else since)
            if prompt is not None:
                self.prompt = prompt

    def _publish(self) -> None:
        now = now_sec(self)
        with self._lock:
            result = self.assembler.assemble(now)
            obs = result.observation
            if obs is not None and obs.t_obs <= self._last_t_obs:
                return  # nothing newer (checked under the lock: callbacks run concurrently)
            if obs is not None:
                self._last_t_obs = obs.t_obs
        self.last_reason = result.reason
        if obs is None:
            return
        emb = self.embodiment
        msg = Observation()
        msg.header.stamp = sec_to_stamp(obs.t_obs)
        msg.embodiment = emb.name
        with self._lock:
            msg.sequence = self.sequence
            self.sequence += 1
        msg.camera_slots = [c.slot for c in emb.cameras]
        msg.images = [rgb_to_image(obs.images[c.slot], sec_to_stamp(obs.input_stamps[f"camera:{c.slot}"]))
                      if obs.image_valid[c.slot] else Image() for c in emb.cameras]
        msg.image_valid = [obs.image_valid[c.slot] for c in emb.cameras]
        msg.state_names = emb.dim_names
        msg.state = obs.state.tolist()
        msg.prompt = self.prompt
        msg.input_names = list(obs.input_stamps)
        msg.input_stamps = [sec_to_stamp(t) for t in obs.input_stamps.values()]
        self.pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        now = now_sec(self)
        with self._lock:
            stale = self.assembler.staleness(now)
        values = {f"late.{s.name}": f"{s.age:.3f}s > {s.max_age:.3f}s" for s in stale}
        values.update({f"rejected.{k}": v for k, v in self.rejected.items()})
        values.update({"published": self.sequence, "prompt": self.prompt, "reason": self.last_reason})
        level = OK if not stale and self.last_reason == "ok" else WARN
        msg = "ok" if level == OK else ("late: " + ", ".join(s.name for s in stale) if stale else self.last_reason)
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status(f"pi0_ros: observation ({self.embodiment.name})", level, msg, values)]
        self.diag_pub.publish(arr)


def main(args: list[str] | None = None) -> None:
    run_node(ObservationNode, args)
