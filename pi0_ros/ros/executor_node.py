"""Chunk executor node: streams action chunks to the robot at its control rate, safely.

The control loop runs on its own thread with absolute deadlines, independent of the policy's
speed and of other callbacks. Each tick asks the ROS-free ChunkExecutor what to send and
publishes it to every configured output (unless dry_run).
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import SetBool

from pi0_ros.executor import ChunkExecutor, MeasuredState
from pi0_ros.msg import ActionChunk
from pi0_ros.robots.embodiment import JointStateError, joint_state_positions, load_embodiment
from pi0_ros.ros.commands import CommandPublishers
from pi0_ros.ros.common import ERROR, OK, WARN, declare, now_sec, run_node, status
from pi0_ros.ros.conversions import stamp_to_sec

CHUNK_QOS = QoSProfile(depth=4, reliability=ReliabilityPolicy.RELIABLE)


class ExecutorNode(Node):
    """Subscribe to ActionChunk + joint states, publish safe joint commands at control_rate_hz."""

    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_executor", **kwargs)
        p = declare(self, {
            "embodiment": "trossen_bimanual",
            "dry_run": True,              # compute and log commands, publish nothing to the robot
            "execute_steps": 0,           # 0: the embodiment's execute_steps
            "joint_state_timeout": 0.25,  # s without joint states -> hold (the driver died)
            "require_joint_states": True,  # False: robots without position feedback
            "start_enabled": True,
            "diagnostics_period": 1.0,    # s
            "realtime_priority": 0,       # >0: SCHED_FIFO priority of the control thread (needs CAP_SYS_NICE)
        })
        self.embodiment = emb = load_embodiment(p["embodiment"])
        self.params = p
        self.core = ChunkExecutor(emb, execute_steps=p["execute_steps"] or None,
                                  require_reference=p["require_joint_states"], enabled=p["start_enabled"])
        self.commands = CommandPublishers(self, emb, dry_run=p["dry_run"])
        self._lock = threading.Lock()
        self.measured = MeasuredState(emb, p["joint_state_timeout"])  # fed with monotonic receipt times
        self._stop = threading.Event()
        self.periods: deque[float] = deque(maxlen=100_000)  # s, measured control periods
        self.missed_ticks = 0
        self.ticks = 0
        self.last_result = None

        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, CHUNK_QOS)
        for source, topic in emb.joint_state_sources.items():
            self.create_subscription(JointState, topic, lambda m, s=source: self._on_joints(s, m), qos_profile_sensor_data)
        if emb.odometry_topic:
            self.create_subscription(Odometry, emb.odometry_topic, self._on_odom, qos_profile_sensor_data)
        self.create_subscription(Bool, "estop", self._on_estop, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.request_pub = self.create_publisher(Header, "chunk_request", CHUNK_QOS)
        self.commanded_pub = self.create_publisher(JointState, "~/commanded", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self._commanded = JointState(name=emb.dim_names)
        mode = "DRY RUN: computing commands, publishing nothing to the robot" if p["dry_run"] else "LIVE"
        self.get_logger().info(f"executor for {emb.name} at {emb.control_rate_hz:g} Hz, "
                               f"execute_steps {self.core.scheduler.execute_steps} - {mode}")
        self._thread = threading.Thread(target=self._control_loop, name="pi0_control", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callbacks
    def _on_chunk(self, msg: ActionChunk) -> None:
        now = now_sec(self)
        n = int(msg.chunk_size) * int(msg.action_dim)
        if len(msg.actions) != n or n == 0:
            actions = np.zeros((0, self.embodiment.num_dims))  # counted as a malformed chunk below
        else:
            actions = np.asarray(msg.actions, dtype=np.float64).reshape(int(msg.chunk_size), int(msg.action_dim))
        with self._lock:
            reason = self.core.offer_chunk(embodiment=msg.embodiment, joint_names=list(msg.joint_names),
                                           actions=actions, stamp=stamp_to_sec(msg.header.stamp), dt=msg.dt,
                                           seq=int(msg.sequence), now=now)
        if reason is not None:
            self.get_logger().warning(f"rejected chunk {msg.sequence} from '{msg.embodiment}': {reason}",
                                   throttle_duration_sec=2.0)

    def _on_joints(self, source: str, msg: JointState) -> None:
        try:
            pos = joint_state_positions(list(msg.name), msg.position)
        except JointStateError as e:
            self.get_logger().warning(f"joint state from {source} rejected: {e}", throttle_duration_sec=2.0)
            return
        with self._lock:
            # A zero stamp (drivers that do not stamp) means unknown, not 'before the reset'.
            self.measured.update_joints(source, time.monotonic(), pos, stamp_to_sec(msg.header.stamp) or None)

    def _on_odom(self, msg: Odometry) -> None:
        t = msg.twist.twist
        with self._lock:
            self.measured.update_base(time.monotonic(), t.linear.x, t.linear.y, t.angular.z,
                                      stamp_to_sec(msg.header.stamp) or None)

    def _on_estop(self, msg: Bool) -> None:
        with self._lock:
            self.core.safety.estop(bool(msg.data))
        self.get_logger().warning(f"e-stop {'ENGAGED' if msg.data else 'released (call ~/enable to resume)'}")

    def _on_enable(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        with self._lock:
            if req.data:
                res.success = bool(self.core.safety.enable())
                if res.success:
                    self.core.scheduler.reset()  # never resume an old chunk after a pause
            else:
                self.core.safety.disable()
                res.success = True
        res.message = "enabled" if req.data and res.success else ("refused: e-stop engaged" if req.data else "disabled")
        return res

    def reset_episode(self, now: float) -> None:
        """The robot was moved externally (simulator reset): forget chunks, the last command and
        the joint states received so far; hold until fresh joint states arrive."""
        with self._lock:
            self.measured.clear(since=now)
            self.core.reset(now)

    # ------------------------------------------------------------------ control loop
    def _measured(self) -> np.ndarray | None:
        """Latest measured state (n,) or None when any source is missing or stale."""
        return self.measured.get(time.monotonic())

    def _set_realtime(self) -> None:
        prio = int(self.params["realtime_priority"])
        if prio <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))  # this thread only
            self.get_logger().info(f"control thread runs SCHED_FIFO priority {prio}")
        except (PermissionError, OSError, AttributeError) as e:
            self.get_logger().warning(f"realtime_priority {prio} not available ({e}); running at normal priority")

    def _control_loop(self) -> None:
        self._set_realtime()
        period = 1.0 / self.embodiment.control_rate_hz
        next_t = time.monotonic() + period
        last = None
        while not self._stop.is_set():
            # Sleep to just before the deadline, then spin briefly for a precise wake-up.
            remaining = next_t - time.monotonic()
            if remaining > 0.0015:
                time.sleep(remaining - 0.001)
            while time.monotonic() < next_t:
                time.sleep(0)
            t = time.monotonic()
            if last is not None:
                self.periods.append(t - last)
            last = t
            self._tick()
            next_t += period
            behind = time.monotonic() - next_t
            if behind > 0:  # overran a whole period: skip the missed ticks, never burst
                skipped = int(behind // period) + 1
                self.missed_ticks += skipped
                next_t += skipped * period

    def _tick(self) -> None:
        now = now_sec(self)
        with self._lock:
            measured = self._measured()
            if measured is None and self.params["require_joint_states"]:
                # No live joint states: do not execute actions; hold the last command.
                self.core.set_measured(None)
                result = self.core.tick_hold(now)
            else:
                self.core.set_measured(measured)
                result = self.core.tick(now)
            request = self.core.should_request(now)
            if request:
                self.core.scheduler.mark_requested(now)
        self.ticks += 1
        self.last_result = result
        if request:
            self.request_pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self.embodiment.name))
        if result.commands is None:
            return
        self.commands.publish(result.commands, result.velocities)
        self._commanded.header.stamp = self.get_clock().now().to_msg()
        self._commanded.position = self.core.last_values.tolist()
        self.commanded_pub.publish(self._commanded)

    # ------------------------------------------------------------------ diagnostics
    def jitter_stats(self) -> dict[str, float]:
        per = np.asarray(self.periods)
        if per.size == 0:
            return {"ticks": self.ticks, "missed_ticks": self.missed_ticks}
        dev = np.abs(per - 1.0 / self.embodiment.control_rate_hz) * 1e3
        return {"ticks": self.ticks, "missed_ticks": self.missed_ticks, "jitter_p50_ms": float(np.percentile(dev, 50)),
                "jitter_p99_ms": float(np.percentile(dev, 99)), "jitter_max_ms": float(dev.max())}

    def _publish_diagnostics(self) -> None:
        with self._lock:
            counters = self.core.counters()
            safety = self.core.safety
            estopped, enabled = safety.estopped, safety.enabled
        r = self.last_result
        if estopped:
            level, msg = ERROR, "e-stop engaged: holding"
        elif not enabled:
            level, msg = WARN, "disabled: holding (call ~/enable)"
        elif r is None or r.held:
            why = "no tick yet" if r is None else r.reason
            level, msg = WARN, f"holding: {why}"
        else:
            level, msg = OK, "executing"
        values = {**counters, **self.jitter_stats(), "dry_run": self.params["dry_run"]}
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status(f"pi0_ros: executor ({self.embodiment.name})", level, msg, values)]
        self.diag_pub.publish(arr)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(ExecutorNode, args)
