"""The chunk executor's brain (ROS-free): chunk in, per-output safe commands out, per tick.

It wires one embodiment's data to the ChunkScheduler (which action now) and the SafetyFilter
(what may actually be sent). The executor node only converts messages, runs `tick(now)` on
its control timer and publishes what comes back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pi0_ros.chunking import Chunk, ChunkScheduler, Tick, TickReason
from pi0_ros.robots.embodiment import BASE_KINDS, Embodiment
from pi0_ros.safety import SafetyFilter, SafetyLimits
from pi0_ros.trajectory import TRAJECTORY_TYPES, Trajectory, hold_trajectory, plan_trajectory


def safety_limits(embodiment: Embodiment) -> SafetyLimits:
    """Limits in robot units from the embodiment YAML (base dims are velocities)."""
    kinds = tuple("velocity" if k in BASE_KINDS else ("gripper" if k == "gripper" else "joint") for k in embodiment.kinds)
    return SafetyLimits(embodiment.lower, embodiment.upper, embodiment.max_velocity, kinds)


@dataclass
class TickResult:
    """What to publish on one control tick.

    commands: output name -> values in that output's dim order (robot units), or None:
        publish nothing (nothing executed since the start or the last reset, or no reference).
    velocities: (n,) per-dim velocity of this tick's command (units/s).
    held: True when holding (no valid action covers now, e-stop, disabled, inputs stale).
    reason: "ok", the scheduler's reason for no action, or the hold reason (e.g.
        "joint_states_stale", "joint_missing", "output_fault").
    trajectory: for trajectory-controller outputs, a new trajectory to send on this tick (a
        newer chunk took over, execution resumed, or a hold began); None: send nothing new.
    """

    commands: dict[str, np.ndarray] | None
    velocities: np.ndarray | None
    held: bool
    tick: Tick | None
    interventions: list[str]
    reason: str = "ok"
    trajectory: Trajectory | None = None


class MeasuredState:
    """The robot's latest measured state, merged BY JOINT NAME from several JointState sources
    (+ odometry), with per-joint freshness.

    A source is one JointState topic; several drivers may publish on it (a UR arm and a Robotiq
    gripper both on /joint_states, each with its own joints): every message updates only the
    joints it names, so split and partial messages merge instead of replacing each other.
    Each joint goes stale by itself when it stops arriving. `get(now)` is None when any needed
    joint (or the odometry) is missing or older than `timeout` s, so the executor holds instead
    of acting on a stale measurement; `problem(now)` says which and why.
    Times: any monotonic clock (receipt times).
    """

    def __init__(self, embodiment: Embodiment, timeout: float) -> None:
        self.embodiment, self.timeout = embodiment, float(timeout)
        n = embodiment.num_dims
        # source -> {joint name -> dim index}: the joints this robot needs from each source.
        self._index: dict[str, dict[str, int]] = {}
        self._base_idx: dict[str, int] = {}
        for i, d in enumerate(embodiment.dims):
            if d.kind in BASE_KINDS:
                self._base_idx[d.kind] = i
            else:
                self._index.setdefault(d.source or "", {})[d.joint or d.name] = i
        self._pos_mask = np.array([d.kind not in BASE_KINDS for d in embodiment.dims])
        self._value = np.full(n, np.nan)
        self._time = np.full(n, -np.inf)  # receipt time of each dim's last value
        self._seen: dict[str, list[str]] = {}  # source -> joint names of its last message
        self._since = -np.inf  # header stamps before this are from before the last clear()

    def update_joints(self, source: str, t: float, positions: dict[str, float], stamp: float | None = None) -> bool:
        """t: receipt time (freshness); stamp: the message's header stamp, if known.
        Updates only the joints named in `positions`. False (ignored) when the message is
        stamped before the last ``clear(since)``."""
        if stamp is not None and stamp < self._since:
            return False
        idx = self._index.get(source)
        if idx is None:
            return False
        for name, value in positions.items():
            i = idx.get(name)
            if i is not None:
                self._value[i] = value
                self._time[i] = t
        if len(positions) > len(self._seen.get(source, ())):
            self._seen[source] = list(positions)  # the widest message, for "missing joint" reports
        return True

    def update_base(self, t: float, vx: float, vy: float, wz: float, stamp: float | None = None) -> bool:
        if stamp is not None and stamp < self._since:
            return False
        for kind, v in (("base_vx", vx), ("base_vy", vy), ("base_wz", wz)):
            i = self._base_idx.get(kind)
            if i is not None:
                self._value[i] = v
                self._time[i] = t
        self._seen["odometry"] = ["twist"]
        return True

    def clear(self, since: float = -np.inf) -> None:
        """Forget every measurement; with ``since``, also ignore messages stamped earlier that are
        still in flight (after a simulator reset they describe the robot before it was moved)."""
        self._since = float(since)
        self._value.fill(np.nan)
        self._time.fill(-np.inf)
        self._seen.clear()

    def get(self, now: float) -> np.ndarray | None:
        """(n,) robot units, or None (a joint or the odometry missing or stale, or non-finite)."""
        if (now - self._time > self.timeout).any():
            return None
        v = self._value.copy()
        if not np.isfinite(v).all():
            return None
        return v

    def problem(self, now: float) -> tuple[str, str] | None:
        """(reason, detail) for why `get(now)` is None, or None when it is not.

        reason: "no_joint_states" (nothing arrived on a source's topic yet), "joint_missing" (the
        topic publishes, but never a needed joint, e.g. Panda names against the FR3 YAML: a
        configuration error), "joint_states_stale" (it arrived, then stopped: the driver
        died), "odometry_missing" / "odometry_stale"; detail names the joint and the topic."""
        emb = self.embodiment
        for i, d in enumerate(emb.dims):
            age = now - self._time[i]
            if d.kind in BASE_KINDS:
                if not np.isfinite(age):
                    return "odometry_missing", f"no odometry on {emb.odometry_topic}"
                if age > self.timeout:
                    return "odometry_stale", f"odometry on {emb.odometry_topic} last {age:.2f} s ago"
                continue
            topic = emb.joint_state_sources.get(d.source or "", "?")
            if not np.isfinite(age):
                seen = self._seen.get(d.source or "")
                if seen is None:
                    return "no_joint_states", f"waiting for JointState on {topic} (source '{d.source}')"
                return "joint_missing", (f"joint '{d.joint}' is not in the JointState messages on {topic} "
                                         f"(they name {sorted(seen)[:12]}); check the embodiment YAML")
            if age > self.timeout:
                return "joint_states_stale", f"joint '{d.joint}' on {topic} last received {age:.2f} s ago"
        if not np.isfinite(self._value).all():
            return "joint_missing", "a measured value is not finite"
        return None


class ChunkExecutor:
    """One robot's executor core: chunks in, safe per-tick commands (and trajectories) out.

    Nothing is sent to the robot before the first action of a valid chunk has been executed
    (since construction or the last `reset`): while the policy warms up, another client of the
    controller (a teach pendant, a homing script) keeps the robot, and no hold preempts it.
    """

    def __init__(self, embodiment: Embodiment, *, execute_steps: int | None = None, stale_after: float | None = None,
                 require_reference: bool = True, enabled: bool = True, max_future: float = 0.2,
                 silent_after: float = 1.0) -> None:
        self.embodiment = embodiment
        n = embodiment.num_dims
        self.scheduler = ChunkScheduler(execute_steps or embodiment.execute_steps, action_dim=n, max_future=max_future)
        self.silent_after = float(silent_after)  # s without a chunk before the policy counts as silent
        self.safety = SafetyFilter(safety_limits(embodiment), embodiment.control_rate_hz,
                                   stale_after if stale_after is not None else 3.0 / embodiment.control_rate_hz,
                                   require_reference=require_reference, enabled=enabled)
        self._measured: np.ndarray | None = None
        self._prev = np.zeros(n)
        self._has_prev = False
        self._vel = np.zeros(n)
        self.rejected: dict[str, int] = {}
        self.holds: dict[str, int] = {}
        self._min_stamp = -float("inf")
        self._out_idx = [(o.name, np.array(o.indices, dtype=np.int64)) for o in embodiment.outputs]
        self._started = False  # an action was executed since construction / reset: commands flow
        self._last_chunk_at: float | None = None  # time of the last accepted chunk (or start/reset)
        self._wants_traj = any(o.type in TRAJECTORY_TYPES for o in embodiment.outputs)
        self._traj_key: tuple[int, float] | None = None  # (seq, stamp) of the chunk last planned
        self._was_held = True
        self.faults: dict[str, int] = {}
        limits = self.safety.limits
        self._low, self._high, self._vmax = limits.low, limits.high, limits.max_velocity

    def reset(self, now: float) -> None:
        """Start over (new episode, re-enable): drop chunks, never accept one stamped before
        `now`, and re-seed the step limit from the next measured state (the robot may have moved)."""
        self.scheduler.reset()
        self.safety.forget_reference()
        self._min_stamp = now
        self._has_prev = False
        self._started = False
        self._last_chunk_at = now
        self._traj_key = None
        self._was_held = True

    def report_fault(self, output: str, reason: str, now: float) -> None:
        """An output's controller refused or aborted a command (e.g. a gripper action goal was
        rejected): drop the chunks and hold until the policy sends a fresh one."""
        key = f"{output}.{reason}"
        self.faults[key] = self.faults.get(key, 0) + 1
        self.scheduler.reset()
        self._min_stamp = now  # a chunk computed before the fault is not a fresh answer
        self._hold_reason = f"output_fault: {output} {reason}"

    # ------------------------------------------------------------------ inputs
    def set_measured(self, state: np.ndarray | None) -> None:
        """Latest measured robot state (n,) robot units (None when the joint states died)."""
        self._measured = None if state is None else np.asarray(state, dtype=np.float64)

    def offer_chunk(self, *, embodiment: str, joint_names: list[str], actions: np.ndarray, stamp: float, dt: float,
                    seq: int, now: float) -> str | None:
        """Validate and queue a chunk; returns the rejection reason or None when accepted."""
        emb = self.embodiment
        reason: str | None = None
        problem = self.safety.validate_chunk(actions, emb.num_dims, embodiment, emb.name)
        if problem is not None:
            reason = f"chunk_{problem.value}"
        elif list(joint_names) != emb.dim_names:
            reason = "joint_names"
        elif not abs(dt - emb.dt) <= 1e-6 * emb.dt:
            reason = "dt"
        elif stamp < self._min_stamp:
            reason = "before_reset"
        else:
            rej = self.scheduler.offer(Chunk(stamp=stamp, dt=dt, actions=actions, seq=seq), now)
            if rej is None:
                self.scheduler.observe_latency(now - stamp)
                self._last_chunk_at = now
                self._hold_reason = None
                return None
            reason = rej.value
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        # E.g. a chunk computed from an observation taken before a reset: ask again now rather
        # than holding the robot for request_timeout.
        self.scheduler.request_answered()
        return reason

    # ------------------------------------------------------------------ per tick
    _hold_reason: str | None = None

    def tick(self, now: float) -> TickResult:
        """One control tick: the scheduled action through the safety filter."""
        if not self._started:
            # Nothing commanded yet, so the robot may be moved by others: the first action's
            # step limit must start from where it is now, not where it was at start-up.
            self.safety.forget_reference()
        t = self.scheduler.action_at(now)
        cmd = self.safety.filter(t.action, now, self._measured)
        reason = t.reason.value
        if t.action is None:
            if self._hold_reason is not None:
                reason = self._hold_reason
            elif t.reason in (TickReason.EXHAUSTED, TickReason.NO_CHUNK) and self.policy_silent(now):
                reason = "policy_silent"
        return self._result(cmd, t, reason, now)

    def tick_hold(self, now: float, reason: str = "joint_states_stale") -> TickResult:
        """A tick that executes nothing (e.g. the robot's joint states died): hold."""
        self.holds[reason] = self.holds.get(reason, 0) + 1
        cmd = self.safety.filter(None, now, None)
        return self._result(cmd, None, reason, now)

    def last_chunk_age(self, now: float) -> float | None:
        """s since the last accepted chunk (or the start / reset), None before the first tick."""
        return None if self._last_chunk_at is None else now - self._last_chunk_at

    def policy_silent(self, now: float) -> bool:
        """No chunk was accepted for `silent_after` s although the executor asks for them."""
        if self._last_chunk_at is None:
            self._last_chunk_at = now
        return now - self._last_chunk_at > self.silent_after

    @property
    def last_values(self) -> np.ndarray:
        """(n,) the last command returned by tick (robot units)."""
        return self._prev

    def _result(self, cmd, t: Tick | None, reason: str, now: float) -> TickResult:
        if cmd is None:
            return TickResult(None, None, True, t, ["no_reference"], reason)
        if not cmd.held:
            self._started = True
        if not self._started:
            # Nothing executed yet: leave the robot to whoever has it (see the class docstring).
            return TickResult(None, None, True, t, cmd.interventions, reason)
        values = cmd.values
        if self._has_prev:
            np.subtract(values, self._prev, out=self._vel)
            self._vel *= self.embodiment.control_rate_hz
        else:
            self._vel.fill(0.0)
        self._prev[:] = values
        self._has_prev = True
        commands = {name: values[idx] for name, idx in self._out_idx}
        traj = self._trajectory(values, cmd.held, t, now) if self._wants_traj else None
        self._was_held = cmd.held
        return TickResult(commands, self._vel, cmd.held, t, cmd.interventions, reason, traj)

    def _trajectory(self, values: np.ndarray, held: bool, t: Tick | None, now: float) -> Trajectory | None:
        """A new trajectory when a newer chunk took over or execution resumed (the executable
        rest of the chunk), or when a hold began (stop at the current command); else None."""
        dt = self.embodiment.dt
        if held:
            if self._was_held:
                return None
            self._traj_key = None
            return hold_trajectory(now, values, dt)
        assert t is not None
        window = self.scheduler.execution_window()
        if window is None:
            return None
        chunk, last, end = window
        key = (chunk.seq, chunk.stamp)
        if key == self._traj_key and not self._was_held:
            return None  # the trajectory sent for this chunk is still being executed
        self._traj_key = key
        idx = np.arange(last + 1, end)
        t_points = chunk.stamp + idx * chunk.dt
        keep = t_points > now + 1e-6  # never a point in the past
        idx, t_points = idx[keep], t_points[keep]
        if idx.size == 0:
            return hold_trajectory(now, values, dt)
        return plan_trajectory(now, values, t_points, chunk.actions[idx], self._low, self._high, self._vmax)

    def should_request(self, now: float) -> bool:
        return self.scheduler.should_request(now)

    def counters(self) -> dict[str, int]:
        """All intervention/scheduling counters, flat, for /diagnostics."""
        out: dict[str, int] = {f"safety.{k}": v for k, v in self.safety.counters.items()}
        c = self.scheduler.counters
        out.update({"chunks.received": c.received, "chunks.accepted": c.accepted, "chunks.switched": c.switched,
                    "actions.executed": c.actions_executed, "ticks.without_action": c.ticks_without_action})
        out.update({f"chunks.rejected.{k}": v for k, v in c.rejected.items()})
        out.update({f"rejected.{k}": v for k, v in self.rejected.items()})
        out.update({f"holds.{k}": v for k, v in self.holds.items()})
        out.update({f"faults.{k}": v for k, v in self.faults.items()})
        return out
