"""Approximate-time synchronisation of sensor streams (ROS-free).

`message_filters.ApproximateTimeSynchronizer` is not on PyPI, and its callback style does
not fit a node that *polls* for the newest observation at its own rate, so this is our own.
Times are plain floats in seconds; the node converts ROS time on the way in.

Semantics (`ApproximateTimeSync.latest_synchronised(now)`):

1. Inputs come in three flavours (see `InputSpec`):

   - *required* queue inputs (cameras): each contributes exactly one message to a set;
   - *optional* queue inputs (a wrist camera that may be unplugged): while *live* (its newest
     message is at most `max_age` old at `now`) it is treated exactly like a required input;
     once it stops delivering for longer than `max_age` it is left out and reported in
     `SyncResult.missing`. So a working camera never flickers in and out of observations
     because of frame phase, and a dead one costs at most `max_age` of pause. An optional
     queue input therefore needs a max_age (its own or the default). All queue inputs may be
     optional; a set then needs at least one live input;
   - *sample-and-hold* inputs (joint states at 500 Hz): they do not take part in choosing
     the set; once the set is chosen they contribute the sample nearest to the set's
     reference stamp, and only if it lies within `slop` of it. Optional hold inputs become
     missing instead of failing the whole set.

2. The set is chosen among the required (and live optional) queue inputs: it is the one
   whose *newest* stamp T is as late as possible such that every one of them has a message
   in `[T - slop, T]`; each input takes its newest message in that window (so all chosen
   stamps lie within `slop` of each other).
3. The reference stamp for hold inputs is the newest stamp of the queue-input set; the
   observation stamp `t_obs` is the newest stamp of everything chosen (hold samples
   included), as architecture.md asks ("the stamp of its newest synchronised message").
4. Staleness is judged by each input's *newest* message, not by the message chosen for the set:
   an input of the set whose newest message is older than its `max_age` at `now` has stopped
   delivering and is listed in `SyncResult.stale` (`StaleInput` names the input and how late
   it is). The chosen messages of the other inputs are as old as the set's anchor, so judging
   them by their chosen message would blame every input when one camera stops (issue 11).
   A chosen queue message older than its `max_age` whose input is itself live (the newer
   messages do not align within `slop`) is listed in `SyncResult.lagging` instead. The set is
   still returned so the caller can report it; a caller must not publish a result that is not
   `fresh` (stale or lagging non-empty).
5. Polling does not consume messages: calling twice without new messages returns the same
   set (same `t_obs`); the caller publishes only when `t_obs` has advanced.
6. When no set exists the call returns None and `last_reason` says why.

Queues are bounded (oldest dropped first) and kept sorted by stamp, so a message that
arrives out of order is inserted in place; a message with a stamp already queued replaces
that entry. Choosing a set walks each queue backwards once: O(total queued messages) per
call, plus a binary search per hold input. Everything is deterministic (ties go to the
newer message). Stamps are compared as floats, so a spread that equals `slop` only up to
rounding may fall on either side of it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["InputSpec", "StaleInput", "SyncResult", "ApproximateTimeSync"]


@dataclass(frozen=True)
class InputSpec:
    """How one named input takes part in synchronisation.

    queue_size / max_age left as None take the synchroniser's defaults. An optional queue
    input must end up with a max_age: it defines when the input counts as gone. A hold input at
    500 Hz needs a queue that spans at least slop + the camera's latency (e.g. 200 samples
    for 0.4 s), otherwise the sample nearest to a late camera frame is already dropped.
    """

    name: str
    optional: bool = False
    sample_and_hold: bool = False
    queue_size: int | None = None
    max_age: float | None = None  # s; None: synchroniser default (None there: no check)


@dataclass(frozen=True)
class StaleInput:
    """An input whose message is older than its max_age at the time of the check."""

    name: str
    age: float  # s, now - stamp (inf when the input never delivered)
    max_age: float  # s

    @property
    def late_by(self) -> float:
        """How much older than allowed, in s."""
        return self.age - self.max_age


@dataclass(frozen=True)
class SyncResult:
    """One synchronised set: at most one message per input."""

    t_obs: float  # s, newest stamp of the chosen set
    stamps: Mapping[str, float]  # chosen stamp per present input
    payloads: Mapping[str, Any]  # chosen payload per present input
    missing: tuple[str, ...]  # optional inputs with nothing that fits
    stale: tuple[StaleInput, ...]  # inputs of the set whose newest message is older than max_age
    lagging: tuple[StaleInput, ...] = ()  # live inputs whose chosen message is older than max_age

    @property
    def fresh(self) -> bool:
        """True when no input of the set is stale or lagging: safe to publish."""
        return not self.stale and not self.lagging


class _Queue:
    """Bounded queue of (stamp, payload), sorted by stamp, oldest first."""

    __slots__ = ("stamps", "payloads", "capacity")

    def __init__(self, capacity: int) -> None:
        self.stamps: list[float] = []
        self.payloads: list[Any] = []
        self.capacity = capacity

    def add(self, stamp: float, payload: Any) -> bool:
        """Insert in stamp order; False when the message is older than a full queue."""
        stamps = self.stamps
        # Messages nearly always arrive in order: test the end before searching.
        if not stamps or stamp > stamps[-1]:
            pos = len(stamps)
        else:
            pos = bisect.bisect_left(stamps, stamp)
            if pos < len(stamps) and stamps[pos] == stamp:
                self.payloads[pos] = payload  # same stamp again: newest arrival wins
                return True
        if len(stamps) >= self.capacity:
            if pos == 0:
                return False  # older than everything we keep
            stamps.pop(0)
            self.payloads.pop(0)
            pos -= 1
        stamps.insert(pos, stamp)
        self.payloads.insert(pos, payload)
        return True

    def newest_at_or_before(self, t: float) -> int:
        """Index of the newest message with stamp <= t, or -1."""
        return bisect.bisect_right(self.stamps, t) - 1

    def nearest(self, t: float) -> int:
        """Index of the message nearest to t (ties: the newer), or -1 when empty."""
        stamps = self.stamps
        if not stamps:
            return -1
        j = bisect.bisect_left(stamps, t)
        if j == 0:
            return 0
        if j == len(stamps):
            return j - 1
        # stamps[j] >= t > stamps[j-1]; prefer the newer on a tie.
        return j if stamps[j] - t <= t - stamps[j - 1] else j - 1


class ApproximateTimeSync:
    """Pick the newest set of messages, one per input, whose stamps lie within `slop`.

    names: input names (plain str: required queue input with the defaults) or InputSpec.
    slop: s, the largest allowed spread of stamps in a set (and the largest distance of a
        hold sample from the reference stamp).
    queue_size: default bound of every queue.
    max_age: default staleness bound in s (None: no staleness check).
    """

    def __init__(
        self,
        names: Sequence[str | InputSpec],
        slop: float,
        queue_size: int = 10,
        max_age: float | None = None,
    ) -> None:
        if not (math.isfinite(slop) and slop >= 0.0):
            raise ValueError(f"slop must be finite and >= 0, got {slop}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        specs = [n if isinstance(n, InputSpec) else InputSpec(name=n) for n in names]
        seen: set[str] = set()
        for s in specs:
            if s.name in seen:
                raise ValueError(f"input {s.name!r} given twice")
            seen.add(s.name)
            if s.queue_size is not None and s.queue_size < 1:
                raise ValueError(f"input {s.name!r}: queue_size must be >= 1")
        self.slop = float(slop)
        self.default_max_age = max_age
        self._specs: dict[str, InputSpec] = {s.name: s for s in specs}
        self._queues: dict[str, _Queue] = {
            s.name: _Queue(s.queue_size or queue_size) for s in specs
        }
        self._required = [s.name for s in specs if not s.optional and not s.sample_and_hold]
        self._optional = [s.name for s in specs if s.optional and not s.sample_and_hold]
        self._hold = [s.name for s in specs if s.sample_and_hold]
        if not self._required and not self._optional:
            # Without a queue input there is nothing to anchor the set in time.
            raise ValueError("need at least one input that is not sample-and-hold")
        for n in self._optional:
            if (self._specs[n].max_age if self._specs[n].max_age is not None else max_age) is None:
                raise ValueError(f"optional input {n!r} needs a max_age (when it counts as gone)")
        self.dropped: dict[str, int] = {s.name: 0 for s in specs}  # for /diagnostics
        self.last_reason: str = "no call yet"
        self._since = -math.inf  # messages stamped before this are discarded (see clear)

    @property
    def names(self) -> tuple[str, ...]:
        """All input names, in the order given."""
        return tuple(self._specs)

    def max_age_of(self, name: str) -> float | None:
        """Staleness bound of one input in s (None: not checked)."""
        m = self._specs[name].max_age
        return self.default_max_age if m is None else m

    def add(self, name: str, stamp: float, payload: Any) -> bool:
        """Queue one message; False (and counted in `dropped`) when it was discarded.

        Discarded: a non-finite stamp, a stamp before the last ``clear(since)``, or a stamp
        older than everything in a full queue.
        Raises KeyError for an unknown input name (a wiring bug, not a runtime condition).
        """
        q = self._queues[name]
        stamp = float(stamp)
        if not math.isfinite(stamp) or stamp < self._since or not q.add(stamp, payload):
            self.dropped[name] += 1
            return False
        return True

    def clear(self, since: float = -math.inf) -> None:
        """Forget every queued message (e.g. after a ROS time jump or a scene reset).

        since: also discard messages stamped before this time that arrive later: after a
        reset, messages still in flight describe the old scene.
        """
        self._since = float(since)
        for q in self._queues.values():
            q.stamps.clear()
            q.payloads.clear()

    def newest(self, name: str) -> float | None:
        """Stamp of the newest queued message of one input, or None."""
        q = self._queues[name]
        return q.stamps[-1] if q.stamps else None

    def staleness(self, now: float, names: Sequence[str] | None = None) -> tuple[StaleInput, ...]:
        """Inputs whose *newest* message is older than their max_age (for diagnostics).

        names: only these inputs (default: all). Optional inputs that never delivered are not
        listed (they may legitimately be absent); required ones are, with age inf.
        """
        out: list[StaleInput] = []
        for name in self._queues if names is None else names:
            q = self._queues[name]
            max_age = self.max_age_of(name)
            if max_age is None:
                continue
            if not q.stamps:
                if not self._specs[name].optional:
                    out.append(StaleInput(name, math.inf, max_age))
                continue
            age = now - q.stamps[-1]
            if age > max_age:
                out.append(StaleInput(name, age, max_age))
        return tuple(out)

    def _choose(self, names: list[str]) -> dict[str, int] | None:
        """Indices of the newest set over the queue inputs `names`, or None (`last_reason`).

        `upper` is always an upper bound on the newest stamp of any valid set: initially
        min(newest) + slop; when the candidate fails because input j's pick is older than
        T - slop, no set can have its newest stamp beyond pick_j + slop, nor at T itself.
        Each failure moves at least one pointer back, so the loop runs at most (total
        messages) times.
        """
        queues = [self._queues[n] for n in names]
        for n, q in zip(names, queues):
            if not q.stamps:
                self.last_reason = f"no message yet on {n!r}"
                return None
        slop = self.slop
        upper = min(q.stamps[-1] for q in queues) + slop
        while True:
            picks = [q.newest_at_or_before(upper) for q in queues]
            if min(picks) < 0:
                self.last_reason = (
                    f"no set within slop {slop:g} s (newest: "
                    + ", ".join(f"{n}={q.stamps[-1]:.6f}" for n, q in zip(names, queues))
                    + ")"
                )
                return None
            stamps = [q.stamps[p] for q, p in zip(queues, picks)]
            t_newest = max(stamps)
            t_oldest = min(stamps)
            if t_newest - t_oldest <= slop:
                return dict(zip(names, picks))
            # Strictly below t_newest as well: in floats t_oldest + slop can round up to t_newest
            # although t_newest - t_oldest > slop (23.8 and 23.85 with slop 0.05: two cameras one
            # 20 Hz tick apart), and the same picks would then fail forever.
            upper = min(t_oldest + slop, math.nextafter(t_newest, -math.inf))

    def latest_synchronised(self, now: float) -> SyncResult | None:
        """The newest synchronised set at time `now`, or None (see module docstring)."""
        missing: list[str] = []
        names = list(self._required)
        for n in self._optional:
            q = self._queues[n]
            max_age = self.max_age_of(n)
            assert max_age is not None  # checked in __init__
            if q.stamps and now - q.stamps[-1] <= max_age:
                names.append(n)  # live: must be part of the set
            else:
                missing.append(n)
        if not names:
            self.last_reason = "no live input: " + ", ".join(repr(n) for n in self._optional)
            return None
        chosen = self._choose(names)
        if chosen is None:
            self._blame_stale(now, names + [n for n in self._hold if not self._specs[n].optional])
            return None
        slop = self.slop
        stamps: dict[str, float] = {n: self._queues[n].stamps[i] for n, i in chosen.items()}
        payloads: dict[str, Any] = {n: self._queues[n].payloads[i] for n, i in chosen.items()}
        # Hold inputs: the sample nearest to the reference stamp (newest of the queue set).
        t_ref = t_obs = max(stamps.values())
        for n in self._hold:
            q = self._queues[n]
            i = q.nearest(t_ref)
            if i < 0 or abs(q.stamps[i] - t_ref) > slop:
                if self._specs[n].optional:
                    missing.append(n)
                    continue
                self.last_reason = (
                    f"{n!r} has no sample within slop {slop:g} s of t_ref={t_ref:.6f}"
                    + ("" if i < 0 else f" (nearest {q.stamps[i]:.6f})")
                )
                self._blame_stale(now, list(stamps) + [h for h in self._hold if not self._specs[h].optional])
                return None
            stamps[n] = q.stamps[i]
            payloads[n] = q.payloads[i]
            t_obs = max(t_obs, q.stamps[i])

        stale = self.staleness(now, list(stamps))
        dead = {s.name for s in stale}
        lagging: list[StaleInput] = []
        for n in chosen:  # queue inputs only: a hold sample is as old as the set's anchor
            max_age = self.max_age_of(n)
            if n not in dead and max_age is not None and now - stamps[n] > max_age:
                lagging.append(StaleInput(n, now - stamps[n], max_age))
        if stale:
            self.last_reason = _describe_stale(stale)
        elif lagging:
            self.last_reason = (
                f"no recent set within slop {slop:g} s: the newest is from {t_ref:.6f} ("
                + ", ".join(f"{s.name} chosen {s.age:.3f} s old" for s in lagging)
                + "); newer messages do not align (newest: "
                + ", ".join(f"{n}={self._queues[n].stamps[-1]:.6f}" for n in chosen)
                + ")"
            )
        else:
            self.last_reason = "ok"
        return SyncResult(
            t_obs=t_obs,
            stamps=stamps,
            payloads=payloads,
            missing=tuple(missing),
            stale=stale,
            lagging=tuple(lagging),
        )

    def _blame_stale(self, now: float, names: Sequence[str]) -> None:
        """No set: when inputs have stopped delivering, name them first (the root cause); the
        failure to form a set is then only its consequence."""
        stale = [s for s in self.staleness(now, list(dict.fromkeys(names))) if math.isfinite(s.age)]
        if stale:
            self.last_reason = f"{_describe_stale(stale)} ({self.last_reason})"


def _describe_stale(stale: Sequence[StaleInput]) -> str:
    return "stale: " + ", ".join(f"{s.name} late by {s.late_by:.3f} s" for s in stale)
