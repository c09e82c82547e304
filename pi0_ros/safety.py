"""Safety decisions between the chunk scheduler and the robot (ROS-free).

`SafetyFilter.filter(action, now, measured)` turns "the action the scheduler wants to send
now" (or None) into the command that is actually published. In this order:

1. e-stopped or disabled        -> hold
2. action is None               -> hold ("no_action": no valid chunk covers now)
3. wrong shape / NaN / inf      -> hold (the whole action is rejected, never partly used)
4. clamp to the limits          ("clamp")
5. per-tick step limit          ("step_limit"): |cmd - last_cmd| <= max_velocity / rate for
                                EVERY dim, so a far target is approached gradually instead of
                                jumping there. For base velocity dims max_velocity is an
                                acceleration limit (m/s^2, rad/s^2): v_x cannot flip from +0.5 to
                                -0.5 m/s in one tick.
6. final clamp to the limits    (rounding, or a measured start point outside the limits:
                                the limits win over the step limit)

Hold: joint and gripper dims keep the last *commanded* position (not the measured one, so a
sagging arm does not creep), or the measured position (clamped into the limits) when nothing
was commanded yet; velocity dims (base v_x, v_y, w_z) decelerate to 0 at their acceleration
limit (a controlled stop), except under e-stop, where they are 0 within the same tick. When
neither a command nor a measurement exists the filter returns None: publish nothing.

A first real action also needs a reference for its step limit (the measured position); if
there is none it is refused ("no_reference", returns None) unless the filter was built with
`require_reference=False` (robots without position feedback). Velocity-only robots need no
reference.

Stalls (`stale_after`): if the previous `filter` call is more than `stale_after` ago (the
control loop stalled) the tick is counted as "stale", and the step limit still runs from the
last *commanded* value. Why not re-seed from the measured position: during a stall the
position controller keeps tracking our last command, so that command is what the robot is
doing; a lagging or sagging measurement would make the next command jump back (a step-limit
violation) and, stall after stall, walk the hold target down. Only `forget_reference()` (a
scene reset or re-enable, when the robot really was moved) re-seeds from the measurement.
`is_stale(now)` lets a separate timer notice a stalled loop and publish `hold(...)` itself.

E-stop latches: `estop(False)` clears the e-stop but leaves the filter disabled until
`enable()` is called deliberately; `enable()` is refused while e-stopped.

Invariant (property-tested, with stalls): a returned command is finite, within the limits,
and within one step of the previous one (velocity dims may drop to 0 at once on e-stop).

The per-tick path works in preallocated buffers; `SafeCommand.values` is a read-only view of
the filter's last command, valid until the next call (copy it to keep it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np

__all__ = [
    "DimKind",
    "SafetyLimits",
    "SafeCommand",
    "SafetyFilter",
    "ChunkProblem",
    "validate_chunk",
    "INTERVENTIONS",
]

DimKind = Literal["joint", "gripper", "velocity"]
_KINDS: frozenset[str] = frozenset(("joint", "gripper", "velocity"))
CLAMP_COUNT_TOL = 1e-9  # robot units

# Every intervention the filter can report; the keys of SafetyFilter.counters (plus
# "chunk_<ChunkProblem>" for rejected chunks).
INTERVENTIONS: tuple[str, ...] = (
    "estop",
    "disabled",
    "no_action",
    "bad_shape",
    "non_finite",
    "clamp",
    "step_limit",
    "stale",
    "invalid_measured",
    "no_reference",
    "hold",  # every tick that held, whatever the cause
)


def _frozen_vector(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.array(x, dtype=np.float64, copy=True)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class SafetyLimits:
    """Per-dimension limits, built by the caller from the embodiment YAML.

    lower, upper: (D,) position limits (joints: rad, gripper: robot units); for velocity dims
        the allowed velocity range (must contain 0, the hold value).
    max_velocity: (D,) > 0, units/s: the per-tick step limit is max_velocity / control_rate_hz.
        For velocity dims that makes it an acceleration limit (m/s^2, rad/s^2).
    kinds: (D,) "joint" | "gripper" | "velocity".
    """

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    kinds: tuple[DimKind, ...]
    # Derived: effective bounds (the same as lower/upper; kept as the filter's clamp bounds).
    low: np.ndarray = field(init=False, repr=False)
    high: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lower = _frozen_vector(self.lower, "lower")
        upper = _frozen_vector(self.upper, "upper")
        vmax = _frozen_vector(self.max_velocity, "max_velocity")
        kinds = tuple(self.kinds)
        d = lower.shape[0]
        if d < 1:
            raise ValueError("limits need at least one dimension")
        if upper.shape != (d,) or vmax.shape != (d,) or len(kinds) != d:
            raise ValueError(
                f"lower {lower.shape}, upper {upper.shape}, max_velocity {vmax.shape} and "
                f"{len(kinds)} kinds must all have length {d}"
            )
        bad = [k for k in kinds if k not in _KINDS]
        if bad:
            raise ValueError(f"unknown kinds {bad}; allowed: {sorted(_KINDS)}")
        if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
            raise ValueError("lower and upper must be finite")
        if not (np.isfinite(vmax).all() and (vmax > 0).all()):
            raise ValueError("max_velocity must be finite and > 0")
        if (lower > upper).any():
            raise ValueError(f"lower > upper in dims {np.flatnonzero(lower > upper).tolist()}")
        is_vel = np.array([k == "velocity" for k in kinds])
        low, high = lower.copy(), upper.copy()
        if is_vel.any() and ((low[is_vel] > 0) | (high[is_vel] < 0)).any():
            raise ValueError("velocity dims must allow 0 (the hold value) within their limits")
        low.setflags(write=False)
        high.setflags(write=False)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "max_velocity", vmax)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def dim(self) -> int:
        """D."""
        return int(self.lower.shape[0])


@dataclass(frozen=True, slots=True)
class SafeCommand:
    """What to publish this tick.

    values: (D,) read-only, finite, within limits; valid until the next filter call.
    held: True when this is a hold (no usable action), False when it follows an action.
    interventions: what the filter changed or why it held, in pipeline order.
    """

    values: np.ndarray
    held: bool
    interventions: list[str]


class ChunkProblem(StrEnum):
    """Why a whole chunk is unusable. Compares equal to its string value."""

    WRONG_EMBODIMENT = "wrong_embodiment"
    NOT_2D = "not_2d"
    EMPTY = "empty"
    WRONG_DIM = "wrong_dim"
    NON_FINITE = "non_finite"


def validate_chunk(
    actions: np.ndarray,
    expected_dim: int,
    embodiment: str,
    expected_embodiment: str,
) -> ChunkProblem | None:
    """Reason a chunk (H, D) must not be executed at all, or None when it is usable.

    Checked in this order: embodiment, 2-D shape, H >= 1 and D >= 1, D == expected_dim,
    every value finite. Out-of-limit values are not a reason: the filter clamps them.
    """
    if embodiment != expected_embodiment:
        return ChunkProblem.WRONG_EMBODIMENT
    a = np.asarray(actions)
    if a.ndim != 2:
        return ChunkProblem.NOT_2D
    if a.shape[0] == 0 or a.shape[1] == 0:
        return ChunkProblem.EMPTY
    if a.shape[1] != expected_dim:
        return ChunkProblem.WRONG_DIM
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        return ChunkProblem.NON_FINITE
    return None


class SafetyFilter:
    """Limits, rate limits, hold and e-stop decisions for one robot (see module docstring).

    control_rate_hz: rate of `filter` calls; sets the per-tick step max_velocity / rate.
    stale_after: s without a `filter` call after which the loop counts as stalled.
    require_reference: refuse a first action when there is no measured position.
    enabled: initial enable state (e-stop always starts released).
    """

    def __init__(
        self,
        limits: SafetyLimits,
        control_rate_hz: float,
        stale_after: float,
        *,
        require_reference: bool = True,
        enabled: bool = True,
    ) -> None:
        if not (math.isfinite(control_rate_hz) and control_rate_hz > 0):
            raise ValueError(f"control_rate_hz must be finite and > 0, got {control_rate_hz}")
        if not stale_after > 0:
            raise ValueError(f"stale_after must be > 0, got {stale_after}")
        self.limits = limits
        self.control_rate_hz = float(control_rate_hz)
        self.stale_after = float(stale_after)
        self.require_reference = require_reference
        d = limits.dim
        self._d = d
        self._low = limits.low
        self._high = limits.high
        self._is_vel = np.array([k == "velocity" for k in limits.kinds])
        self._is_pos = ~self._is_vel
        self._has_pos = bool(self._is_pos.any())
        # Every dim is rate limited; for velocity dims this is the acceleration limit.
        self._step = limits.max_velocity / control_rate_hz
        self._step.setflags(write=False)
        self._neg_step = -self._step
        self._neg_step.setflags(write=False)
        # Preallocated per-tick buffers.
        self._target = np.empty(d)
        self._delta = np.empty(d)
        self._absd = np.empty(d)
        self._mask = np.empty(d, dtype=bool)
        self._last = np.zeros(d)  # last published command (always finite and in limits)
        self._values = self._last.view()
        self._values.setflags(write=False)
        self._has_last = False
        self._last_call: float | None = None
        self._estopped = False
        self._enabled = bool(enabled)
        self.counters: dict[str, int] = {k: 0 for k in INTERVENTIONS}
        for p in ChunkProblem:
            self.counters[f"chunk_{p.value}"] = 0

    # ------------------------------------------------------------------ modes
    def estop(self, active: bool) -> None:
        """Engage (True) or release (False) the e-stop. Releasing leaves it disabled."""
        if active:
            self._estopped = True
            self._enabled = False
        else:
            self._estopped = False

    def enable(self) -> bool:
        """Allow actions through again; refused (False) while e-stopped."""
        if self._estopped:
            return False
        self._enabled = True
        return True

    def disable(self) -> None:
        """Hold from the next tick on until `enable()`."""
        self._enabled = False

    @property
    def estopped(self) -> bool:
        return self._estopped

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def last_command(self) -> np.ndarray | None:
        """(D,) copy of the last published command, or None."""
        return self._last.copy() if self._has_last else None

    def forget_reference(self) -> None:
        """Drop the last command: the next call re-seeds from `measured` (e.g. after a scene
        reset or a long pause, when the robot is no longer where it was last commanded)."""
        self._has_last = False

    def is_stale(self, now: float) -> bool:
        """True when the last `filter` call is older than stale_after (loop stalled)."""
        return self._last_call is not None and now - self._last_call > self.stale_after

    # ------------------------------------------------------------------ chunks
    def validate_chunk(
        self,
        actions: np.ndarray,
        expected_dim: int,
        embodiment: str,
        expected_embodiment: str,
    ) -> ChunkProblem | None:
        """`validate_chunk` plus a "chunk_<reason>" counter."""
        problem = validate_chunk(actions, expected_dim, embodiment, expected_embodiment)
        if problem is not None:
            self.counters[f"chunk_{problem.value}"] += 1
        return problem

    # ------------------------------------------------------------------ per tick
    def _note(self, interventions: list[str], what: str) -> None:
        interventions.append(what)
        self.counters[what] = self.counters.get(what, 0) + 1

    def _valid_measured(self, measured: np.ndarray | None, interventions: list[str]) -> bool:
        """Whether `measured` can seed a reference (its position dims must be finite)."""
        if measured is None:
            return False
        try:
            m = np.asarray(measured)
            ok = (
                m.shape == (self._d,)
                and np.issubdtype(m.dtype, np.number)
                and not np.issubdtype(m.dtype, np.complexfloating)
                and bool(np.isfinite(m[self._is_pos]).all())
            )
        except (TypeError, ValueError):  # ragged or otherwise not array-like
            ok = False
        if not ok:
            self._note(interventions, "invalid_measured")
        return ok

    def _seed_from_measured(self, measured: np.ndarray) -> None:
        np.clip(np.asarray(measured, dtype=np.float64), self._low, self._high, out=self._last)
        self._last[self._is_vel] = 0.0  # measured base velocity is never a command
        self._has_last = True

    def hold(
        self, measured: np.ndarray | None = None, reason: str | None = None
    ) -> SafeCommand | None:
        """Publishable hold command (see module docstring), or None when none exists.

        For a watchdog timer outside the control loop; `reason` (e.g. "stale") is counted.
        """
        interventions: list[str] = []
        if reason is not None:
            self._note(interventions, reason)
        return self._hold(measured, interventions)

    def _hold(self, measured: np.ndarray | None, interventions: list[str]) -> SafeCommand | None:
        if not self._has_last:
            if self._valid_measured(measured, interventions):
                self._seed_from_measured(measured)  # type: ignore[arg-type]
            elif not self._has_pos:
                self._last.fill(0.0)  # velocity-only robot: 0 is a complete hold
                self._has_last = True
            else:
                self._note(interventions, "no_reference")
                return None
        if self._estopped:
            np.copyto(self._last, 0.0, where=self._is_vel)  # e-stop: stop now
        else:
            # A controlled stop: velocity dims ramp to 0 at their acceleration limit.
            np.clip(self._last, self._neg_step, self._step, out=self._delta)
            np.subtract(self._last, self._delta, out=self._target)
            np.copyto(self._last, self._target, where=self._is_vel)
        self.counters["hold"] += 1
        return SafeCommand(self._values, True, interventions)

    def filter(
        self, action: np.ndarray | None, now: float, measured: np.ndarray | None = None
    ) -> SafeCommand | None:
        """The command to publish at `now` for `action` (D,) or None; None: publish nothing.

        measured: (D,) measured positions in the same order (velocity dims ignored).
        """
        interventions: list[str] = []
        if self.is_stale(now):
            # Counted, but no re-seed from `measured`: see "Stalls" in the module docstring.
            self._note(interventions, "stale")
        self._last_call = now

        if self._estopped:
            self._note(interventions, "estop")
            return self._hold(measured, interventions)
        if not self._enabled:
            self._note(interventions, "disabled")
            return self._hold(measured, interventions)
        if action is None:
            self._note(interventions, "no_action")
            return self._hold(measured, interventions)
        a = action
        if not isinstance(a, np.ndarray) or a.dtype != np.float64:
            try:
                if np.iscomplexobj(action):
                    raise TypeError("complex action")  # casting would drop the imaginary part
                a = np.asarray(action, dtype=np.float64)
            except (TypeError, ValueError):
                self._note(interventions, "bad_shape")
                return self._hold(measured, interventions)
        if a.shape != (self._d,):
            self._note(interventions, "bad_shape")
            return self._hold(measured, interventions)
        if not np.isfinite(a, out=self._mask).all():  # into a preallocated buffer
            self._note(interventions, "non_finite")
            return self._hold(measured, interventions)

        if not self._has_last:
            if self._valid_measured(measured, interventions):
                self._seed_from_measured(measured)  # type: ignore[arg-type]
            elif not self._has_pos or not self.require_reference:
                # No step limit possible on this first tick for positions: start from the
                # clamped target. Velocities start from 0 (nothing was commanded): accelerate.
                np.clip(a, self._low, self._high, out=self._last)
                np.copyto(self._last, 0.0, where=self._is_vel)
                self._has_last = True
            else:
                self._note(interventions, "no_reference")
                return None

        target, delta, absd, mask, last = (
            self._target, self._delta, self._absd, self._mask, self._last
        )
        np.clip(a, self._low, self._high, out=target)
        # Count a clamp only beyond float rounding (a gripper converted [0, 1] -> robot units can
        # land 1e-16 past its limit); the value is clamped either way.
        np.subtract(target, a, out=delta)
        np.abs(delta, out=absd)
        np.greater(absd, CLAMP_COUNT_TOL, out=mask)
        if mask.any():
            self._note(interventions, "clamp")
        np.subtract(target, last, out=delta)
        np.abs(delta, out=absd)
        np.greater(absd, self._step, out=mask)
        if mask.any():
            self._note(interventions, "step_limit")
            np.clip(delta, self._neg_step, self._step, out=delta)
            np.add(last, delta, out=last)
        else:
            np.copyto(last, target)
        np.clip(last, self._low, self._high, out=last)
        return SafeCommand(self._values, False, interventions)
