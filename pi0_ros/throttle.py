"""Log throttling per reason, not per call site (ROS-free).

rclpy's ``throttle_duration_sec`` keys its throttle on the *call site*: every warning that
goes through one helper (e.g. "rejected: {error}") shares one throttle, so a frequent routine
warning hides a rare important one behind it. `KeyedThrottle` throttles each reason on its
own; `reason_key` turns a message into its reason by dropping the numbers in it (sequence
numbers, ages), so "observation 12 too old (0.61 s)" and "observation 13 too old (0.70 s)"
are one reason while "... is not finite" is another.
"""
from __future__ import annotations

import re
from collections import OrderedDict

__all__ = ["KeyedThrottle", "reason_key"]

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\bnan\b|\binf\b")


def reason_key(text: str) -> str:
    """The message with every number replaced by '#': messages that differ only in numbers share a key."""
    return _NUMBER.sub("#", text)


class KeyedThrottle:
    """At most one emission per `period` s for each key; counts what it suppressed.

    max_keys bounds memory (reasons can contain names from untrusted messages): the key used
    least recently is forgotten first, and then simply emits again when it comes back.
    """

    def __init__(self, period: float, max_keys: int = 256) -> None:
        if period < 0 or max_keys < 1:
            raise ValueError(f"need period >= 0 and max_keys >= 1, got {period}, {max_keys}")
        self.period = period
        self.max_keys = max_keys
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (emitted at, suppressed since)

    def __call__(self, key: str, now: float) -> int | None:
        """None: suppress this one. Otherwise emit; the value is how many were suppressed since
        the key's last emission (so the log line can say "(N more)")."""
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.period:
            self._last[key] = (entry[0], entry[1] + 1)
            self._last.move_to_end(key)
            return None
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return 0 if entry is None else entry[1]

    def forget(self, key: str) -> None:
        """Emit the key's next occurrence at once (e.g. after the condition cleared)."""
        self._last.pop(key, None)
