"""The chunk executor's brain (ROS-free): chunk in, per-output safe commands out, per tick.

It wires one embodiment's data to the ChunkScheduler (which action now) and the SafetyFilter
(what may actually be sent). The executor node only converts messages, runs `tick(now)` on
its control timer and publishes what comes back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pi0_ros.chunking import Chunk, ChunkScheduler, Tick
from pi0_ros.robots.embodiment import BASE_KINDS, Embodiment, JointStateError
from pi0_ros.safety import SafetyFilter, SafetyLimits


def safety_limits(embodiment: Embodiment) -> SafetyLimits:
    """Limits in robot units from the embodiment YAML (base dims are velocities)."""
    kinds = tuple("velocity" if k in BASE_KINDS else ("gripper" if k == "gripper" else "joint") for k in embodiment.kinds)
    return SafetyLimits(embodiment.lower, embodiment.upper, embodiment.max_velocity, kinds)


@dataclass
class TickResult:
    """What to publish on one control tick.

    commands: output name -> values in that output's dim order (robot units), or None:
        publish nothing (no command and no measurement yet).
    velocities: (n,) per-dim velocity of this tick's command (units/s), for JointTrajectory.
    held: True when holding (no valid action covers now, e-stop, disabled).
    reason: "ok", the scheduler's reason for no action, or "joint_states_stale".
    """

    commands: dict[str, np.ndarray] | None
    velocities: np.ndarray | None
    held: bool
    tick: Tick | None
    interventions: list[str]
    reason: str = "ok"


class MeasuredState:
    """The robot's latest measured state from several JointState sources (+ odometry), by name.

    `get(now)` is None when any source is missing or older than `timeout` s (the driver died),
    so the executor holds instead of acting on a stale measurement. Times: any monotonic clock.
    """

    def __init__(self, embodiment: Embodiment, timeout: float) -> None:
        self.embodiment, self.timeout = embodiment, timeout
        self._joints: dict[str, tuple[float, dict[str, float]]] = {}
        self._base: tuple[float, dict[str, float]] | None = None

        self._since = -np.inf  # header stamps before this are from before the last clear()

    def update_joints(self, source: str, t: float, positions: dict[str, float], stamp: float | None = None) -> bool:
        """t: receipt time (freshness); stamp: the message's header stamp, if known.
        False (ignored) when the message is stamped before the last ``clear(since)``."""
        if stamp is not None and stamp < self._since:
            return False
        self._joints[source] = (t, positions)
        return True

    def update_base(self, t: float, vx: float, vy: float, wz: float, stamp: float | None = None) -> bool:
        if stamp is not None and stamp < self._since:
            return False
        self._base = (t, {"base_vx": vx, "base_vy": vy, "base_wz": wz})
        return True

    def clear(self, since: float = -np.inf) -> None:
        """Forget every measurement; with ``since``, also ignore messages stamped earlier that are
        still in flight (after a simulator reset they describe the robot before it was moved)."""
        self._since = float(since)
        self._joints.clear()
        self._base = None

    def get(self, now: float) -> np.ndarray | None:
        """(n,) robot units, or None (missing / stale source, or a joint missing from it)."""
        emb = self.embodiment
        srcs = {}
        for s in emb.joint_state_sources:
            entry = self._joints.get(s)
            if entry is None or now - entry[0] > self.timeout:
                return None
            srcs[s] = entry[1]
        base = None
        if emb.odometry_topic:
            if self._base is None or now - self._base[0] > self.timeout:
                return None
            base = self._base[1]
        try:
            return emb.state_from_joints(srcs, base)
        except JointStateError:
            return None


class ChunkExecutor:
    def __init__(self, embodiment: Embodiment, *, execute_steps: int | None = None, stale_after: float | None = None,
                 require_reference: bool = True, enabled: bool = True) -> None:
        self.embodiment = embodiment
        n = embodiment.num_dims
        self.scheduler = ChunkScheduler(execute_steps or embodiment.execute_steps, action_dim=n)
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

    def reset(self, now: float) -> None:
        """Start over (new episode, re-enable): drop chunks, never accept one stamped before
        `now`, and re-seed the step limit from the next measured state (the robot may have moved)."""
        self.scheduler.reset()
        self.safety.forget_reference()
        self._min_stamp = now
        self._has_prev = False

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
                return None
            reason = rej.value
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        # E.g. a chunk computed from an observation taken before a reset: ask again now rather
        # than holding the robot for request_timeout.
        self.scheduler.request_answered()
        return reason

    # ------------------------------------------------------------------ per tick
    def tick(self, now: float) -> TickResult:
        """One control tick: the scheduled action through the safety filter."""
        t = self.scheduler.action_at(now)
        cmd = self.safety.filter(t.action, now, self._measured)
        return self._result(cmd, t, t.reason.value)

    def tick_hold(self, now: float, reason: str = "joint_states_stale") -> TickResult:
        """A tick that executes nothing (e.g. the robot's joint states died): hold."""
        self.holds[reason] = self.holds.get(reason, 0) + 1
        cmd = self.safety.filter(None, now, None)
        return self._result(cmd, None, reason)

    @property
    def last_values(self) -> np.ndarray:
        """(n,) the last command returned by tick (robot units)."""
        return self._prev

    def _result(self, cmd, t: Tick | None, reason: str) -> TickResult:
        if cmd is None:
            return TickResult(None, None, True, t, ["no_reference"], reason)
        values = cmd.values
        if self._has_prev:
            np.subtract(values, self._prev, out=self._vel)
            self._vel *= self.embodiment.control_rate_hz
        else:
            self._vel.fill(0.0)
        self._prev[:] = values
        self._has_prev = True
        commands = {name: values[idx] for name, idx in self._out_idx}
        return TickResult(commands, self._vel, cmd.held, t, cmd.interventions, reason)

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
        return out
