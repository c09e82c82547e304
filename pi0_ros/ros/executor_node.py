"""Chunk executor node: streams action chunks to the robot at its control rate, safely.

The control loop runs on its own thread with absolute deadlines, independent of the policy's
speed and of other callbacks. Each tick asks the ROS-free ChunkExecutor what to send and
publishes it to every configured output (unless dry_run).

``tick_source: external`` replaces that thread by calls to :meth:`ExecutorNode.step` with the
time of the tick: a lockstep simulator in the same process ticks the executor once per physics
step, with the simulator's own time, so neither the executor's clock (/clock received late on
a busy computer) nor its wall-clock deadlines can drift against the simulated robot.

Joint states are not taken by a Python callback per message: a 1 kHz arm driver would cost
the control thread the GIL a thousand times a second. They are polled on each control tick
from a subscription of a node that no executor spins: the raw messages are drained (cheap),
only the newest one per publisher is deserialised and merged by joint name.

execute_steps: the parameter when non-zero, else the checkpoint's inference.json (parameter
`checkpoint`, the policy's; pi0_ros.inference_settings), else the embodiment's.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import SetBool

from pi0_ros import inference_settings as isettings
from pi0_ros.executor import ChunkExecutor, MeasuredState
from pi0_ros.msg import ActionChunk
from pi0_ros.robots.embodiment import JointStateError, joint_state_positions, load_embodiment
from pi0_ros.ros.commands import CommandPublishers
from pi0_ros.ros.common import ERROR, OK, WARN, declare, join_thread, log_at, now_sec, run_node, status
from pi0_ros.throttle import KeyedThrottle
from pi0_ros.ros.conversions import stamp_to_sec

CHUNK_QOS = QoSProfile(depth=4, reliability=ReliabilityPolicy.RELIABLE)
# Deep enough to hold every message of a 1 kHz driver (plus others on the same topic) between
# two control ticks at 20 Hz, so a slow gripper's message is never pushed out by the arm's.
JOINT_POLL_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
MAX_POLL = 2000  # messages drained per source and tick at most (bounded work per tick)


class ExecutorNode(Node):
    """Subscribe to ActionChunk + joint states, publish safe joint commands at control_rate_hz."""

    def __init__(self, **kwargs) -> None:
        super().__init__("pi0_executor", **kwargs)
        p = declare(self, {
            "embodiment": "trossen_bimanual",
            "dry_run": True,              # compute and log commands, publish nothing to the robot
            # 0: the checkpoint's inference.json (pi0_ros.inference_settings), else the embodiment's
            "execute_steps": 0,
            "checkpoint": "",             # the policy's checkpoint: read for its inference.json only
            "joint_state_timeout": 0.25,  # s without joint states -> hold (the driver died)
            "require_joint_states": True,  # False: robots without position feedback
            "start_enabled": True,
            "diagnostics_period": 1.0,    # s
            "realtime_priority": 0,       # >0: SCHED_FIFO priority of the control thread (needs CAP_SYS_NICE)
            "max_chunk_future": 0.2,      # s a chunk's stamp may lie ahead of this clock (skew); later: rejected
            "gil_switch_interval": 0.0,   # s, >0: sys.setswitchinterval for this process (own process: 0.0005)
            "tick_source": "wall",        # wall: own control thread; external: step(now) (lockstep simulator)
        })
        if p["tick_source"] not in ("wall", "external"):
            raise ValueError(f"tick_source must be 'wall' or 'external', got {p['tick_source']!r}")
        self.external_ticks = p["tick_source"] == "external"
        self._external_now: float | None = None  # s, time of the last external tick
        self.embodiment = emb = load_embodiment(p["embodiment"])
        # The control thread must get the GIL within a small part of its period: Python's
        # default switch interval (5 ms) lets any other thread of this process delay a tick by
        # that much. It is process-wide, so it is a parameter: worth it where the executor has
        # its own process (the robot computer); beside the simulator and the model in one
        # process (bringup, eval) the frequent hand-overs slow them down.
        if p["gil_switch_interval"] > 0:
            sys.setswitchinterval(p["gil_switch_interval"])
        self.params = p
        self.execute_steps = self._execute_steps(p, emb)
        self.core = ChunkExecutor(emb, execute_steps=self.execute_steps.value,
                                  require_reference=p["require_joint_states"], enabled=p["start_enabled"],
                                  max_future=p["max_chunk_future"])
        self.commands = CommandPublishers(self, emb, dry_run=p["dry_run"], on_fault=self._on_output_fault)
        self._lock = threading.Lock()
        self.measured = MeasuredState(emb, p["joint_state_timeout"])  # fed with monotonic receipt times
        self._stop = threading.Event()
        self.periods: deque[float] = deque(maxlen=100_000)  # s, measured control periods
        self.missed_ticks = 0
        self.ticks = 0
        self.last_result = None
        self.hold_detail = ""  # why the inputs are not usable, e.g. which joint is missing
        self.tick_errors = 0
        # Log throttling per reason (pi0_ros.throttle), not per call site as rclpy's does.
        self._throttles = {2.0: KeyedThrottle(2.0), 5.0: KeyedThrottle(5.0)}

        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, CHUNK_QOS)
        # Joint states: polled on the control thread (module docstring) from a node no executor spins.
        self._poll_node = Node(f"{self.get_name()}_joint_states", context=self.context,
                               namespace=self.get_namespace(), start_parameter_services=False)
        self._js_subs = [(source, self._poll_node.create_subscription(JointState, topic, lambda m: None,
                                                                      JOINT_POLL_QOS, raw=True))
                         for source, topic in emb.joint_state_sources.items()]
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
                               f"{isettings.describe({'execute_steps': self.execute_steps})} - {mode}")
        self._thread = threading.Thread(target=self._control_loop, name="pi0_control", daemon=True)
        if not self.external_ticks:
            self._thread.start()

    def _execute_steps(self, p: dict, emb) -> isettings.Setting:
        """A non-zero execute_steps parameter wins over the checkpoint's inference.json, which wins
        over the embodiment's; the parameter then shows the value used."""
        ckpt = isettings.load(p["checkpoint"])
        given = {"execute_steps": p["execute_steps"]} if p["execute_steps"] else {}
        s = isettings.resolve(["execute_steps"], given, ckpt, {"execute_steps": emb.execute_steps})["execute_steps"]
        if s.source == "default":
            s = isettings.Setting(s.value, f"embodiment {emb.name}")
        mismatch = isettings.embodiment_mismatch(ckpt, emb.name)
        if mismatch and "execute_steps" in ckpt.values:
            self.get_logger().warning(mismatch)
        p["execute_steps"] = s.value
        self.set_parameters([Parameter("execute_steps", value=s.value)])
        return s

    # ------------------------------------------------------------------ callbacks
    def _now(self) -> float:
        """This executor's time: the node clock, or the time of the last external tick."""
        if self.external_ticks and self._external_now is not None:
            return self._external_now
        return now_sec(self)

    def _on_chunk(self, msg: ActionChunk) -> None:
        now = self._now()
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
            # Throttled per reason: a rare NaN chunk is never hidden behind routine "expired" lines.
            self._warn(f"chunk.{reason}", f"rejected chunk {msg.sequence} from '{msg.embodiment}': {reason}")

    def _warn(self, key: str, text: str, period: float = 2.0, error: bool = False) -> None:
        """Log `text` at most once per `period` (2 or 5) s for each `key`."""
        if self._throttles[period](key, time.monotonic()) is None:
            return
        log_at(self.get_logger(), "error" if error else "warning", text)

    def _on_output_fault(self, output: str, reason: str) -> None:
        """An output's controller rejected or aborted a goal: hold until a fresh chunk."""
        now = self._now()
        with self._lock:
            self.core.report_fault(output, reason, now)
        self._warn(f"fault.{output}.{reason}", f"output '{output}': {reason}; holding until the next chunk",
                   error=True)

    def _poll_joint_states(self) -> None:
        """Drain every joint-state subscription; merge the newest message of each publisher."""
        t = time.monotonic()
        for source, sub in self._js_subs:
            newest: dict[bytes, bytes] = {}
            with sub.handle:
                for _ in range(MAX_POLL):
                    taken = sub.handle.take_message(sub.msg_type, True)
                    if taken is None:
                        break
                    raw, info = taken
                    newest[bytes(info["publisher_gid"]["data"])] = raw
            for raw in newest.values():
                self._on_joints(source, deserialize_message(raw, JointState), t)

    def _on_joints(self, source: str, msg: JointState, t: float) -> None:
        try:
            pos = joint_state_positions(list(msg.name), msg.position)
        except JointStateError as e:
            self._warn(f"joints.{source}", f"joint state from {source} rejected: {e}")
            return
        with self._lock:
            # A zero stamp (drivers that do not stamp) means unknown, not 'before the reset'.
            self.measured.update_joints(source, t, pos, stamp_to_sec(msg.header.stamp) or None)

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
            if not self._guarded_tick(None):
                return
            next_t += period
            behind = time.monotonic() - next_t
            if behind > 0:  # overran a whole period: skip the missed ticks, never burst
                skipped = int(behind // period) + 1
                self.missed_ticks += skipped
                next_t += skipped * period

    def step(self, now: float) -> None:
        """One control tick at time `now` (s, the caller's clock): tick_source external only."""
        if not self.external_ticks:
            raise RuntimeError("step() needs tick_source 'external' (this executor runs its own control thread)")
        self._external_now = now
        self._guarded_tick(now)

    def _guarded_tick(self, now: float | None) -> bool:
        """Run one tick; False when shutting down. No exception may stop the ticks."""
        try:
            self._tick(now)
        except Exception as e:  # noqa: BLE001 - no single message may stop the control loop
            if self._stop.is_set() or not self.context.ok():
                return False  # shutting down: the context is gone, nothing left to command
            self.tick_errors += 1
            try:
                self._warn(f"tick.{type(e).__name__}", f"control tick failed: {e!r}", error=True)
            except Exception:  # noqa: BLE001 - logging must not end the loop either
                pass
        return True

    def _tick(self, now: float | None = None) -> None:
        self._poll_joint_states()
        now = now_sec(self) if now is None else now
        with self._lock:
            measured = self._measured()
            if measured is None and self.params["require_joint_states"]:
                # No usable joint states: do not execute actions; hold the last command.
                reason, self.hold_detail = self.measured.problem(time.monotonic()) or ("joint_states_stale", "")
                self.core.set_measured(None)
                result = self.core.tick_hold(now, reason)
            else:
                self.hold_detail = ""
                self.core.set_measured(measured)
                result = self.core.tick(now)
            request = self.core.should_request(now)
            if request:
                self.core.scheduler.mark_requested(now)
        self.ticks += 1
        self.last_result = result
        if self.hold_detail:
            self._warn(f"hold.{result.reason}", f"holding: {result.reason}: {self.hold_detail}", period=5.0,
                       error=result.reason in ("joint_missing", "odometry_missing"))
        if request:
            self.request_pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self.embodiment.name))
        if result.commands is None:
            return
        self.commands.publish(result.commands, result.velocities, trajectory=result.trajectory)
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
            age = self.core.last_chunk_age(self._now())
        r = self.last_result
        if estopped:
            level, msg = ERROR, "e-stop engaged: holding"
        elif not enabled:
            level, msg = WARN, "disabled: holding (call ~/enable)"
        elif r is None:
            level, msg = WARN, "holding: no tick yet"
        elif r.held:
            why = r.reason
            if r.reason == "policy_silent" and age is not None:
                why = f"policy silent: no chunk for {age:.1f} s (is the policy node running and READY?)"
            elif self.hold_detail:
                why = f"{r.reason}: {self.hold_detail}"
            if r.commands is None:
                why += " - nothing commanded yet (waiting for the first valid chunk)"
            level = ERROR if r.reason in ("joint_missing", "odometry_missing") or r.reason.startswith("output_fault") \
                else WARN
            msg = f"holding: {why}"
        else:
            level, msg = OK, "executing"
        outputs = {f"output.{name}.{k}": v for name, c in self.commands.counters().items() for k, v in c.items() if v}
        values = {**counters, **outputs, **self.jitter_stats(), "tick_errors": self.tick_errors,
                  "dry_run": self.params["dry_run"]}
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status(f"pi0_ros: executor ({self.embodiment.name})", level, msg, values)]
        self.diag_pub.publish(arr)

    def destroy_node(self) -> None:
        self._stop.set()
        join_thread(self._thread, self.get_logger(), "the control loop to finish its tick")
        self._poll_node.destroy_node()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    # In its own process the executor may take the GIL often (see gil_switch_interval).
    sys.setswitchinterval(0.0005)
    run_node(ExecutorNode, args)
