"""Which action to send when: chunk alignment, execute_steps, switching chunks (ROS-free).

A chunk carries the observation stamp t_obs and dt = 1 / control_rate_hz; action i is meant
for `stamp + i*dt` (architecture.md, "Time, the hardest part"). The scheduler is called on
every control tick with the current time and answers with the action whose time slot covers
it; it never replays actions whose slot is past.

Decisions (all times in s):

- Time-aligned index at `now`: `i = ceil((now - tol - stamp) / dt)`, the first action whose
  time is >= now - tol. With the default `tol = dt/2` this is the action *nearest* to now.
  It is used on a chunk's first tick and whenever the phase lock (below) lets go.
- A chunk *covers* `now` when `now >= stamp - tol` (a chunk stamped slightly in the future,
  e.g. from a policy machine whose clock runs a little ahead, is "not_due" until then) and its
  index is inside its execution window.
- Future stamps: a chunk stamped more than `max_future` after `now` at arrival is rejected
  ("future_stamp"). Why: ordering is newest-stamp-wins, so ONE chunk stamped an hour ahead
  would otherwise be "newest" for an hour and every valid chunk after it "older": the robot
  would hold while the policy reports READY. A stamp is an observation time, which is never
  ahead of the executor's clock by more than clock skew.
- Execution window: `[start, min(start + execute_steps, H))`, where `start` is the index of
  the first tick that used the chunk. A chunk that arrives L late therefore starts at the
  action for now (about L/dt), never at 0 (latency compensation), and still gets
  `execute_steps` actions of open-loop execution (the paper's 25 at 50 Hz, 16 at 20 Hz).
- Newer wins: a chunk offered with a larger (stamp, seq) than the newest accepted one becomes
  *pending*; the next tick at which it covers `now` switches to it at its own time-aligned
  index, even if the current chunk still has actions left (no temporal ensembling: the paper
  found it hurt). A pending chunk replaced by an even newer one before it started is counted
  as `superseded`.
- Ordering is lexicographic on (stamp, seq): stamp first, so a restarted policy node whose
  seq starts again from 0 is still accepted; seq breaks ties between chunks inferred from
  the same observation. Equal (stamp, seq) is a duplicate.
- Phase lock: once a chunk is executing, the next tick takes the *next* action as long as
  that action's time is within `lock_window` slots (default 1) of now; only outside that
  window does the index re-align to time. Why: the control timer's phase relative to the
  chunk's grid is arbitrary; at a phase near half a slot, pure rounding turns a little tick
  jitter into repeat/skip pairs (0, 2, 1, 0, 2 ... on a real ROS timer). With the lock, a
  jittery timer steps 1, 1, 1 and stays within one slot of the chunk's time; a missed tick or
  a drifting clock re-aligns (a skip), and an action is never sent once its time is a whole
  slot or more in the past (no replay). `lock_window=0.5` gives plain time rounding.
  A tick that comes early (or a timer faster than 1/dt) repeats the current action
  instead of running ahead.
- If even the action already sent lies a whole slot or more in the future (the clock jumped
  back) the tick has no action ("clock_jump") and the node should call `reset()`.

`should_request(now)` is true when the current chunk's remaining executable time is <= the
expected latency + margin, so that a new chunk arrives before the current one runs out.
Requests are rate-limited by `mark_requested(now)`: after it, `should_request` stays false
until a chunk is accepted or `request_timeout` passes (a lost request is retried).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

__all__ = ["Chunk", "Tick", "TickReason", "Rejection", "SchedulerCounters", "ChunkScheduler"]


@dataclass(frozen=True)
class Chunk:
    """A chunk of actions in robot units; action i is meant for `stamp + i*dt`.

    actions: (H, D), copied to a read-only float64 array so that the rows handed out by the
    scheduler cannot be changed behind its back (and a caller's buffer can be reused).
    """

    stamp: float  # s, t_obs of the observation it was inferred from
    dt: float  # s, 1 / control_rate_hz
    actions: np.ndarray  # (H, D) float64
    seq: int

    def __post_init__(self) -> None:
        a = np.array(self.actions, dtype=np.float64, copy=True)
        a.setflags(write=False)
        object.__setattr__(self, "actions", a)
        object.__setattr__(self, "stamp", float(self.stamp))
        object.__setattr__(self, "dt", float(self.dt))
        object.__setattr__(self, "seq", int(self.seq))

    @property
    def horizon(self) -> int:
        """H, the number of actions."""
        return int(self.actions.shape[0]) if self.actions.ndim >= 1 else 0


class TickReason(StrEnum):
    """Why a tick has (or has no) action. Compares equal to its string value."""

    OK = "ok"
    NO_CHUNK = "no_chunk"  # nothing accepted yet (or after reset)
    NOT_DUE = "not_due"  # the only chunk is stamped in the future
    EXHAUSTED = "exhausted"  # execute_steps used up, or past the chunk's last action
    CLOCK_JUMP = "clock_jump"  # time went backwards: refuse to replay


class Rejection(StrEnum):
    """Why `offer` refused a chunk."""

    DUPLICATE = "duplicate"  # same (stamp, seq) as the newest accepted
    OLDER = "older"  # (stamp, seq) older than the newest accepted
    EXPIRED = "expired"  # every action's time is already past at arrival
    BAD_SHAPE = "bad_shape"  # not (H, D) with H >= 1, or D differs from action_dim
    BAD_TIMING = "bad_timing"  # non-finite stamp, or dt not finite and > 0
    FUTURE_STAMP = "future_stamp"  # stamped more than max_future after now


@dataclass(frozen=True, slots=True)
class Tick:
    """The scheduler's answer for one control tick.

    action: (D,) read-only row view of the chunk, or None when no action covers now.
    """

    action: np.ndarray | None
    reason: TickReason
    index: int = -1  # index into the chunk, -1 when no action
    seq: int = -1  # seq of the chunk the action came from, -1 when no action
    t_action: float = math.nan  # s, the time the action is meant for (stamp + index*dt)


@dataclass
class SchedulerCounters:
    """Counters for /diagnostics."""

    received: int = 0  # every offer
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in Rejection})
    switched: int = 0  # chunks that became current
    superseded: int = 0  # pending chunks replaced before they started
    pending_expired: int = 0  # pending chunks that ran out before they could start
    actions_executed: int = 0  # ticks that returned an action
    ticks_without_action: int = 0
    no_action: dict[str, int] = field(
        default_factory=lambda: {r.value: 0 for r in TickReason if r is not TickReason.OK}
    )


class ChunkScheduler:
    """Holds the current chunk and the next one; answers "which action now?" per tick.

    execute_steps: actions of a chunk executed open-loop at most (None: the whole chunk).
    action_dim: D every chunk must have (None: fixed by the first accepted chunk).
    tol_fraction: tol = tol_fraction * dt; 0.5 picks the nearest action.
    lock_window: slots; while executing, keep stepping to the next action while its time is
        within this many slots of now (see module docstring).
    margin: s added to the latency in `should_request` (None: 2*dt of the current chunk,
        one dt because a request is only made on a tick, one dt of latency jitter).
    initial_latency: s, latency estimate before any `observe_latency` (paper: 73 ms on
        board + 13 ms network, so 0.1 s).
    latency_alpha: EMA weight of a new latency sample.
    request_timeout: s after `mark_requested` without a chunk before a new request is due.
    max_future: s a chunk's stamp may lie after `now` at arrival (clock skew between the policy
        and executor machines, /clock delivery); later stamps are rejected.
    """

    def __init__(
        self,
        execute_steps: int | None,
        *,
        action_dim: int | None = None,
        tol_fraction: float = 0.5,
        lock_window: float = 1.0,
        margin: float | None = None,
        initial_latency: float = 0.1,
        latency_alpha: float = 0.2,
        request_timeout: float = 1.0,
        max_future: float = 0.2,
    ) -> None:
        if execute_steps is not None and execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1 or None, got {execute_steps}")
        if not 0.0 <= tol_fraction < 1.0:
            raise ValueError(f"tol_fraction must be in [0, 1), got {tol_fraction}")
        if not 0.5 <= lock_window <= 1.0:
            # Above 1 slot a tick could send an action whose time is over a slot past.
            raise ValueError(f"lock_window must be in [0.5, 1], got {lock_window}")
        if not 0.0 < latency_alpha <= 1.0:
            raise ValueError(f"latency_alpha must be in (0, 1], got {latency_alpha}")
        self.execute_steps = execute_steps
        self.action_dim = action_dim
        self.tol_fraction = float(tol_fraction)
        self.lock_window = float(lock_window)
        self.margin = margin
        self.initial_latency = float(initial_latency)
        self.latency_alpha = float(latency_alpha)
        self.request_timeout = float(request_timeout)
        if not (math.isfinite(max_future) and max_future >= 0.0):
            raise ValueError(f"max_future must be finite and >= 0, got {max_future}")
        self.max_future = float(max_future)
        self.counters = SchedulerCounters()
        self._latency_ema: float | None = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Drop both chunks and the ordering memory (after a ROS time jump or a re-enable).

        Counters and the latency estimate survive.
        """
        self._current: Chunk | None = None
        self._start = 0  # index where execution of the current chunk started
        self._limit = 0  # first index past the execution window (exclusive)
        self._last_index = -1  # last index sent from the current chunk
        self._pending: Chunk | None = None
        self._newest: tuple[float, int] | None = None  # (stamp, seq) of newest accepted
        self._requested_at: float | None = None

    @property
    def current(self) -> Chunk | None:
        """The chunk actions come from now (None before the first switch)."""
        return self._current

    @property
    def pending(self) -> Chunk | None:
        """An accepted chunk that has not started yet."""
        return self._pending

    def _index(self, chunk: Chunk, now: float) -> int:
        """First index whose time is >= now - tol (may be negative or >= H)."""
        dt = chunk.dt
        return math.ceil((now - self.tol_fraction * dt - chunk.stamp) / dt)

    def _window_end(self, chunk: Chunk, start: int) -> int:
        h = chunk.horizon
        return h if self.execute_steps is None else min(h, start + self.execute_steps)

    # ------------------------------------------------------------------ chunks in
    def offer(self, chunk: Chunk, now: float) -> Rejection | None:
        """Accept `chunk` as the pending next chunk, or say why not (None: accepted)."""
        c = self.counters
        c.received += 1
        reason = self._check(chunk, now)
        if reason is not None:
            c.rejected[reason.value] += 1
            return reason
        if self._pending is not None:
            c.superseded += 1
        self._pending = chunk
        self._newest = (chunk.stamp, chunk.seq)
        self._requested_at = None  # the outstanding request (if any) is answered
        if self.action_dim is None:
            self.action_dim = int(chunk.actions.shape[1])
        c.accepted += 1
        return None

    def _check(self, chunk: Chunk, now: float) -> Rejection | None:
        a = chunk.actions
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            return Rejection.BAD_SHAPE
        if self.action_dim is not None and a.shape[1] != self.action_dim:
            return Rejection.BAD_SHAPE
        if not (math.isfinite(chunk.stamp) and math.isfinite(chunk.dt) and chunk.dt > 0.0):
            return Rejection.BAD_TIMING
        if chunk.stamp > now + self.max_future:
            return Rejection.FUTURE_STAMP  # checked before ordering: it must never become "newest"
        if self._newest is not None:
            key = (chunk.stamp, chunk.seq)
            if key == self._newest:
                return Rejection.DUPLICATE
            if key < self._newest:
                return Rejection.OLDER
        if self._index(chunk, now) >= chunk.horizon:
            return Rejection.EXPIRED
        return None

    # ------------------------------------------------------------------ per tick
    def action_at(self, now: float) -> Tick:
        """The action to send on the control tick at `now` (see module docstring)."""
        p = self._pending
        if p is not None and now >= p.stamp - self.tol_fraction * p.dt:
            i = max(self._index(p, now), 0)
            self._pending = None
            if i >= p.horizon:
                self.counters.pending_expired += 1
            else:
                # The newer chunk covers now: it wins, starting at its time-aligned index.
                self._current = p
                self._start = i
                self._limit = self._window_end(p, i)
                self._last_index = -1
                self.counters.switched += 1

        cur = self._current
        if cur is None:
            # Only a chunk stamped in the future can still be pending here.
            reason = TickReason.NO_CHUNK if self._pending is None else TickReason.NOT_DUE
            return self._no_action(reason)
        i = self._index(cur, now)
        if self._last_index >= 0:
            nxt = self._last_index + 1
            ahead = nxt - (now - cur.stamp) / cur.dt  # slots the next action lies in the future
            if abs(ahead) < self.lock_window:
                i = nxt  # phase lock: the next action is still (nearly) on time
            elif ahead >= 2.0:
                # Even the action already sent lies a whole slot in the future: time went back.
                return self._no_action(TickReason.CLOCK_JUMP)
            elif ahead > 0.0:
                i = self._last_index  # tick came early (or fast): keep the current action
            # else: behind by lock_window or more (missed tick, drift): re-align to time.
        if i >= self._limit:
            return self._no_action(TickReason.EXHAUSTED)
        self._last_index = i
        self.counters.actions_executed += 1
        return Tick(
            action=cur.actions[i],
            reason=TickReason.OK,
            index=i,
            seq=cur.seq,
            t_action=cur.stamp + i * cur.dt,
        )

    def execution_window(self) -> tuple[Chunk, int, int] | None:
        """(current chunk, last index sent, first index past the window), or None.

        What a trajectory controller still has to execute of the current chunk: indices
        last+1 .. end-1 (see pi0_ros.trajectory)."""
        if self._current is None or self._last_index < 0:
            return None
        return self._current, self._last_index, self._limit

    def _no_action(self, reason: TickReason) -> Tick:
        self.counters.ticks_without_action += 1
        self.counters.no_action[reason.value] += 1
        return Tick(action=None, reason=reason)

    # ------------------------------------------------------------------ requests
    def observe_latency(self, seconds: float) -> None:
        """Feed one request-to-arrival latency sample into the EMA.

        `now - chunk.stamp` at arrival is a conservative stand-in (it adds the age of the
        observation), so requests then come slightly early, never late. Non-finite or
        negative samples are ignored.
        """
        if not math.isfinite(seconds) or seconds < 0.0:
            return
        if self._latency_ema is None:
            self._latency_ema = float(seconds)
        else:
            a = self.latency_alpha
            self._latency_ema = (1.0 - a) * self._latency_ema + a * float(seconds)

    @property
    def latency_estimate(self) -> float:
        """s, EMA of observed latencies (initial_latency before the first sample)."""
        return self.initial_latency if self._latency_ema is None else self._latency_ema

    def remaining_time(self, now: float) -> float:
        """s until the current chunk's last executable action stops covering now.

        0 when there is no current chunk; negative once it is exhausted.
        """
        cur = self._current
        if cur is None:
            return 0.0
        t_end = cur.stamp + (self._limit - 1) * cur.dt + self.tol_fraction * cur.dt
        return t_end - now

    def should_request(self, now: float, expected_latency: float | None = None) -> bool:
        """True when a new chunk should be requested now to avoid a gap.

        False while a newer chunk is pending, or while a request marked with
        `mark_requested` is outstanding (younger than request_timeout).
        """
        if self._pending is not None:
            return False
        if self._requested_at is not None and now - self._requested_at < self.request_timeout:
            return False
        cur = self._current
        if cur is None:
            return True
        latency = self.latency_estimate if expected_latency is None else expected_latency
        margin = 2.0 * cur.dt if self.margin is None else self.margin
        return self.remaining_time(now) <= latency + margin

    def request_answered(self) -> None:
        """The outstanding request got an answer that is not a usable chunk (e.g. it was
        rejected): the next should_request() may ask again at once, not after request_timeout."""
        self._requested_at = None

    @property
    def request_outstanding(self) -> bool:
        """A request marked with `mark_requested` has not been answered by an accepted (or
        rejected) chunk yet."""
        return self._requested_at is not None

    def mark_requested(self, now: float) -> None:
        """Record that a chunk was requested at `now` (suppresses repeat requests)."""
        self._requested_at = float(now)
