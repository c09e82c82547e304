"""Recorder node: writes an embodiment's topics into one rosbag2 (mcap) bag per episode.

Transport only: subscriptions are raw (the CDR bytes go to disk unchanged) and the callbacks
just queue them into pi0_ros.data.record.EpisodeRecorder, whose writer thread owns the bag.

Topics come from the embodiment (pi0_ros.data.topics). Like `ros2 bag record`, a topic is
subscribed once a publisher is discovered, with the publishers' QoS: RELIABLE only if every
publisher is reliable, TRANSIENT_LOCAL only if every publisher is (latched prompts).

Interface:
    ~/episode  (pi0_ros/srv/Episode)   start (prompt) / stop (success) an episode
    /pi0_episode (std_msgs/String)     JSON start/stop events, published for other tools
"""
from __future__ import annotations

import json
import time
from typing import Any

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from pi0_ros.data.record import EpisodeRecorder, marker_payload
from pi0_ros.data.topics import EPISODE_TOPIC, record_topic_specs
from pi0_ros.ros.common import declare
from pi0_ros.ros.conversions import message_class
from pi0_ros.srv import Episode

EVENT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
RECORD_DEPTH = 1000  # subscription queue depth: absorbs executor hiccups


def adapted_qos(infos: list[Any]) -> QoSProfile:
    """The subscription QoS that matches every discovered publisher (as rosbag2 does)."""
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    # Reliable publishers: KEEP_ALL, so a slow callback applies back-pressure instead of the
    # reader overwriting unread samples (nothing is lost between a reliable publisher and us).
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if reliable else HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def bag_qos(profile: Any) -> Any:
    """An rclpy QoSProfile as the rosbags ``Qos`` that metadata.yaml's offered_qos_profiles holds."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def t(d: Any) -> QosTime:
        ns = int(d.nanoseconds)
        return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

    def enum(cls: Any, value: Any) -> Any:
        return cls.__members__.get(str(value.name).upper(), cls.UNKNOWN)

    return Qos(history=enum(QosHistory, profile.history), depth=int(profile.depth),
               reliability=enum(QosReliability, profile.reliability), durability=enum(QosDurability, profile.durability),
               deadline=t(profile.deadline), lifespan=t(profile.lifespan),
               liveliness=enum(QosLiveliness, profile.liveliness),
               liveliness_lease_duration=t(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions))


class RecorderNode(Node):
    """Record the embodiment's topics into per-episode bags; start/stop with ~/episode."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs.pop("node_name", "pi0_recorder"), **kwargs)
        p = declare(self, {
            "embodiment": "trossen_bimanual",
            "output_dir": "recordings",
            "storage": "mcap",              # mcap | sqlite3
            "start": False,                 # open an episode at once
            "prompt": "",                   # prompt of that episode
            "record_action_chunks": True,
            "max_queue_mb": 2048.0,         # MiB queued in memory before messages are dropped
            "discovery_period": 0.25,       # s between looks for publishers of pending topics
        })
        self.params = p
        self.specs = [t for t in record_topic_specs(p["embodiment"], include_action_chunks=p["record_action_chunks"])
                      if t.topic != EPISODE_TOPIC]
        self.recorder = EpisodeRecorder(p["output_dir"], self.specs, p["embodiment"], p["storage"], p["max_queue_mb"])
        self.subscribed: dict[str, QoSProfile] = {}
        self._subs: list[Any] = []
        self._cb_group = MutuallyExclusiveCallbackGroup()
        self.event_pub = self.create_publisher(String, EPISODE_TOPIC, EVENT_QOS)
        self.create_service(Episode, "~/episode", self._on_episode, callback_group=MutuallyExclusiveCallbackGroup())
        self._timer = self.create_timer(float(p["discovery_period"]), self._discover)
        self._discover()
        if p["start"]:
            self.start_episode(p["prompt"])

    # ------------------------------------------------------------------ subscriptions
    @property
    def pending_topics(self) -> list[str]:
        return [t.topic for t in self.specs if t.topic not in self.subscribed]

    def _discover(self) -> None:
        for spec in self.specs:
            if spec.topic in self.subscribed:
                continue
            infos = self.get_publishers_info_by_topic(spec.topic)
            if not infos:
                continue
            types = {i.topic_type for i in infos}
            if types != {spec.msgtype}:
                self.get_logger().error(f"{spec.topic}: publishers offer {sorted(types)}, expected {spec.msgtype}; not recorded")
                self.subscribed[spec.topic] = None  # type: ignore[assignment] - do not retry
                continue
            qos = adapted_qos(infos)
            self.recorder.set_offered_qos(spec.topic, [bag_qos(i.qos_profile) for i in infos])
            self._subs.append(self.create_subscription(
                message_class(spec.msgtype), spec.topic, self._callback(spec.topic), qos, raw=True,
                callback_group=self._cb_group))
            self.subscribed[spec.topic] = qos
            self.get_logger().info(f"recording {spec.topic} [{spec.msgtype}] ({qos.reliability.name.lower()})")
        if not self.pending_topics:
            self._timer.cancel()

    def _callback(self, topic: str):
        on_message = self.recorder.on_message
        clock = self.get_clock()

        def cb(data: bytes) -> None:
            on_message(topic, clock.now().nanoseconds, data)
        return cb

    # ------------------------------------------------------------------ episodes
    def start_episode(self, prompt: str) -> int:
        info = self.recorder.start(prompt, self.get_clock().now().nanoseconds)
        self.event_pub.publish(String(data=marker_payload("start", info.episode_index, prompt=prompt)))
        return info.episode_index

    def stop_episode(self, success: bool | None) -> int | None:
        info = self.recorder.stop(success, self.get_clock().now().nanoseconds)
        if info is None:
            return None
        self.event_pub.publish(String(data=marker_payload("stop", info.episode_index, success=success)))
        return info.episode_index

    def _on_episode(self, req: Episode.Request, res: Episode.Response) -> Episode.Response:
        try:
            if req.start:
                res.episode_index = self.start_episode(req.prompt)
                res.ok, res.message = True, f"episode {res.episode_index} started"
            else:
                idx = self.stop_episode(bool(req.success))
                res.ok = idx is not None
                res.episode_index = idx or 0
                res.message = f"episode {idx} stopped" if idx is not None else "no episode is open"
        except Exception as e:  # noqa: BLE001 - answer the caller instead of killing the node
            res.ok, res.message = False, f"{type(e).__name__}: {e}"
            self.get_logger().error(res.message)
        return res

    def finish(self, success: bool | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Stop the open episode with ``success``, wait for the writers, return the counts."""
        self.stop_episode(success)
        self.recorder.close(timeout)
        return self.recorder.summary()


def run_recorder(embodiment: str, out_dir: str, storage: str = "mcap", start: bool = False, prompt: str = "",
                 duration: float = 0.0, final_success: bool | None = None, record_action_chunks: bool = True,
                 max_queue_mb: float = 2048.0, node_name: str = "pi0_recorder") -> dict[str, Any]:
    """Run a recorder node until Ctrl-C (or ``duration`` s) in its own context; return the counts."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    overrides = {"embodiment": embodiment, "output_dir": out_dir, "storage": storage, "start": start,
                 "prompt": prompt, "record_action_chunks": record_action_chunks, "max_queue_mb": float(max_queue_mb)}
    node = RecorderNode(node_name=node_name, context=ctx,
                        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    end = time.monotonic() + duration if duration > 0 else None
    try:
        while ctx.ok() and (end is None or time.monotonic() < end):
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        summary = node.finish(final_success)
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return summary


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = RecorderNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        summary = node.finish(None)
        node.get_logger().info(json.dumps(summary["topics"]))
        node.destroy_node()
        rclpy.try_shutdown()
