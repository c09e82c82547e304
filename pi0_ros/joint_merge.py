"""Merge sensor_msgs/JointState messages by joint name, per source (ROS-free).

One JointState topic often carries several publishers: a UR arm driver publishes the six arm
joints and a separate Robotiq driver publishes the gripper knuckle on the same `/joint_states`,
each in its own message. Treating each message as the whole state of the source makes the
messages replace each other (a gripper-only message "loses" the arm joints). So the latest value
of every joint is kept on its own, with the stamp of the message that carried it and the time
it was received, and freshness is judged per joint: a joint that stops arriving goes stale by
itself while the others stay fresh.

Rules of `JointMerge.update`:
- a message is validated as a whole first (mismatched lengths, a name given twice, a non-finite
  position: JointStateError, nothing is taken) so a corrupt message never half-applies;
- a joint keeps its value when the message's stamp is *older* than the stamp it already has
  (messages from two publishers arrive out of order: an older one must never revert a value);
  an equal stamp replaces (newest arrival wins);
- a message stamped before the last ``clear(since)`` is ignored (in flight from before a reset);
- ``stamp=None`` means unknown (a driver that leaves the header empty): never ignored as old,
  ordered by arrival, and its stamp-based age falls back to the receipt time.

Times are plain floats in seconds: stamps in ROS time, receipt times in any monotonic clock.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pi0_ros.robots.embodiment import joint_state_positions

__all__ = ["JointSample", "JointMerge"]

Clock = Literal["stamp", "received"]


@dataclass(frozen=True)
class JointSample:
    """The latest value of one joint of one source."""

    position: float
    stamp: float | None  # s, header stamp of the message that carried it (None: unknown)
    received: float      # s, when that message was received

    def age(self, now: float, by: Clock = "received") -> float:
        """now - stamp (by="stamp"; receipt time when the stamp is unknown) or now - received."""
        t = self.stamp if by == "stamp" and self.stamp is not None else self.received
        return now - t


class JointMerge:
    """Latest position, stamp and receipt time per (source, joint name)."""

    def __init__(self) -> None:
        self._joints: dict[str, dict[str, JointSample]] = {}
        self._since = -math.inf
        self.ignored = 0  # messages ignored because they were stamped before clear(since)

    def update(
        self,
        source: str,
        names: Sequence[str],
        positions: Sequence[float],
        stamp: float | None,
        received: float,
    ) -> tuple[str, ...]:
        """Merge one message; return the joints whose value it set (see the module rules).

        Raises JointStateError for a malformed message (nothing is taken).
        """
        values = joint_state_positions(list(names), positions)
        if stamp is not None and stamp < self._since:
            self.ignored += 1
            return ()
        joints = self._joints.setdefault(source, {})
        taken: list[str] = []
        for name, value in values.items():
            old = joints.get(name)
            if old is not None and stamp is not None and old.stamp is not None and stamp < old.stamp:
                continue  # older than what we have: never revert
            joints[name] = JointSample(value, stamp, received)
            taken.append(name)
        return tuple(taken)

    def sources(self) -> tuple[str, ...]:
        """Sources that delivered at least one joint since the last clear."""
        return tuple(s for s, j in self._joints.items() if j)

    def names(self, source: str) -> tuple[str, ...]:
        """Every joint the source has delivered since the last clear, sorted."""
        return tuple(sorted(self._joints.get(source, {})))

    def sample(self, source: str, joint: str) -> JointSample | None:
        return self._joints.get(source, {}).get(joint)

    def positions(self, source: str, joints: Iterable[str] | None = None) -> dict[str, float]:
        """{joint: latest position}; joints=None: all of the source's; joints never seen are left out."""
        have = self._joints.get(source, {})
        keys = have if joints is None else [j for j in joints if j in have]
        return {j: have[j].position for j in keys}

    def missing(self, source: str, joints: Iterable[str]) -> tuple[str, ...]:
        """The joints (of those asked for) that the source never delivered."""
        have = self._joints.get(source, {})
        return tuple(j for j in joints if j not in have)

    def stale(
        self, source: str, joints: Iterable[str], now: float, max_age: float, by: Clock = "received"
    ) -> tuple[tuple[str, float], ...]:
        """(joint, age in s) of the delivered joints older than max_age (missing ones are not listed)."""
        have = self._joints.get(source, {})
        out = []
        for j in joints:
            s = have.get(j)
            if s is not None and s.age(now, by) > max_age:
                out.append((j, s.age(now, by)))
        return tuple(out)

    def fresh(
        self, source: str, joints: Iterable[str], now: float, max_age: float, by: Clock = "received"
    ) -> bool:
        """True when every joint asked for was delivered and none is older than max_age."""
        joints = list(joints)
        return not self.missing(source, joints) and not self.stale(source, joints, now, max_age, by)

    def newest_stamp(self, source: str, joints: Iterable[str]) -> float | None:
        """Newest known stamp among the given joints (the stamp of a merged state), or None."""
        have = self._joints.get(source, {})
        stamps = [have[j].stamp for j in joints if j in have and have[j].stamp is not None]
        return max(stamps) if stamps else None  # type: ignore[type-var]

    def clear(self, since: float = -math.inf) -> None:
        """Forget every joint; with ``since``, also ignore messages stamped earlier that arrive later."""
        self._since = float(since)
        self._joints.clear()
