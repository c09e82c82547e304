"""Observation node: cameras + joint states (+ odometry) + prompt -> time-synchronised Observation.

All synchronisation, staleness and preprocessing logic is in pi0_ros.observation; this node
converts messages and publishes at `publish_rate_hz` whenever a newer fresh set exists.

Input health goes out on `observation_status` (diagnostic_msgs/DiagnosticStatus, reliable,
transient local): level OK while observations can flow, WARN when they stop, with `message`
naming each stale or missing input with its topic (e.g. "stale: camera:base_0_rgb
(/camera/base/image_raw) late by 0.112 s ..." or "missing: joint 'fr3_joint1' ... which carry:
panda_joint1, ...") and values `stale` / `missing` (comma-separated input names).
It is published at once when the set of problem inputs changes and again every
`diagnostics_period`; the policy node pauses on it. The same text goes to /diagnostics and, once
per change and then at most every `log_period` s per reason, to the log.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from pi0_ros.images import ImageDecodeError
from pi0_ros.msg import Observation
from pi0_ros.observation import InputStatus, ObservationAssembler, ObservationConfig, input_status
from pi0_ros.robots.embodiment import JointStateError, load_embodiment
from pi0_ros.ros.common import OK, WARN, declare, log_at, now_sec, run_node, status
from pi0_ros.ros.conversions import image_to_rgb, rgb_to_image, sec_to_stamp, stamp_to_sec
from pi0_ros.srv import SetPrompt
from pi0_ros.throttle import KeyedThrottle, reason_key

PROMPT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
OBS_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
# Latched: a policy node started later still learns at once why no observations come.
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


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
            "diagnostics_period": 1.0,   # s, also the period of observation_status
            "log_period": 10.0,          # s, at most one log line per reason in this time
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
        self._throttle = KeyedThrottle(p["log_period"])  # per reason: a rare warning is never hidden
        self._status_key: tuple[str, ...] | None = None   # problem inputs (or reason) last announced
        self._status = DiagnosticStatus(level=WARN, name=f"pi0_ros: observation ({emb.name})", message="starting")
        self._last_progress = now_sec(self)  # s, last published observation or reset (node clock)
        self.assembler.wait_for_inputs(self._last_progress)  # drivers starting with us are not "missing"

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
        self.status_pub = self.create_publisher(DiagnosticStatus, "observation_status", STATUS_QOS)
        self.create_timer(1.0 / p["publish_rate_hz"], self._publish)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(f"observation node for {emb.name}: cameras {[c.topic for c in emb.cameras]}, "
                               f"joint states {list(emb.joint_state_sources.values())}")

    def _log(self, level: str, text: str, key: str | None = None) -> None:
        """Log `text` at most once per log_period for its reason (key; default: text without numbers)."""
        # Wall time: sim time jumps back on a reset and would then hold a reason back for long.
        suppressed = self._throttle(key if key is not None else reason_key(text), time.monotonic())
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log_at(self.get_logger(), level, text + more)

    def _reject(self, what: str, err: Exception) -> None:
        self.rejected[what] = self.rejected.get(what, 0) + 1
        self._log("warning", f"{what} rejected: {err}")

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
                self.assembler.add_joint_state(source, stamp_to_sec(msg.header.stamp), list(msg.name), msg.position,
                                               received=now_sec(self))
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
            now = now_sec(self)
            # With the time of the reset, inputs get their max_age to come back before they are stale.
            self.assembler.clear(since=-np.inf if since is None else since, now=now)
            self._last_progress = now
            if prompt is not None:
                self.prompt = prompt

    def _publish(self) -> None:
        now = now_sec(self)
        with self._lock:
            result = self.assembler.assemble(now)
            obs = result.observation
            newer = obs is not None and obs.t_obs > self._last_t_obs  # under the lock: callbacks run concurrently
            if newer:
                self._last_t_obs = obs.t_obs
                self._last_progress = now
            self.last_reason = result.reason
            self._update_status(input_status(result, now - self._last_progress, self.assembler.config.camera_max_age))
        if not newer:
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

    def _update_status(self, st: InputStatus) -> None:
        """Announce on observation_status (and log) when the problem changes. Holds _lock."""
        if st.key == self._status_key:
            return
        self._status_key = st.key
        self._status = status(f"pi0_ros: observation ({self.embodiment.name})", OK if st.ok else WARN, st.message,
                              {"stale": ",".join(st.stale), "missing": ",".join(st.missing)})
        self.status_pub.publish(self._status)
        if st.ok:
            self._log("info", "inputs ok: publishing observations", key="inputs ok")
        else:
            self._log("warning", f"no observations: {st.message}", key="inputs: " + " ".join(st.key))

    def _publish_diagnostics(self) -> None:
        now = now_sec(self)
        with self._lock:
            health = self.assembler.health(now)
            reason = self.last_reason
            self.status_pub.publish(self._status)  # periodic too: a lost or missed update is repaired
        values = {f"stale.{s.name}": f"{health.topics.get(s.name, '?')}: {s.age:.3f}s > {s.max_age:.3f}s"
                  for s in health.stale}
        values.update({f"missing.{m.name}": m.describe() for m in health.missing})
        values.update({f"masked.{n}": "optional camera left out" for n in health.masked})
        values.update({f"rejected.{k}": v for k, v in self.rejected.items()})
        values.update({"published": self.sequence, "prompt": self.prompt, "reason": reason})
        level = OK if health.ok and reason == "ok" else WARN
        # Name the inputs that are stale or missing *now*; the last assembly's reason otherwise.
        msg = "ok" if level == OK else (health.describe() if not health.ok else reason)
        if not health.ok:
            self._log("warning", f"no observations: {msg}", key="inputs: " + " ".join(health.problem_inputs))
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status(f"pi0_ros: observation ({self.embodiment.name})", level, msg, values)]
        self.diag_pub.publish(arr)


def main(args: list[str] | None = None) -> None:
    run_node(ObservationNode, args)
