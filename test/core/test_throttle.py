"""KeyedThrottle: each reason has its own throttle, so a frequent warning never hides a rare one."""
from __future__ import annotations

from pi0_ros.throttle import KeyedThrottle, reason_key


def test_rare_reason_is_not_hidden_behind_a_frequent_one() -> None:
    th = KeyedThrottle(period=2.0)
    emitted = []
    for k in range(100):  # a routine warning at 50 Hz for 2 s, one rare warning in the middle
        t = k * 0.02
        if th(reason_key(f"camera base: frame {k} has 3 channels, expected 1"), t) is not None:
            emitted.append("routine")
        if k == 50 and th(reason_key("joint state arm: position of 'elbow' is not finite (nan)"), t) is not None:
            emitted.append("rare")
    assert emitted == ["routine", "rare"]
    assert th(reason_key("camera base: frame 999 has 3 channels, expected 1"), 2.0) == 99  # suppressed count


def test_reason_key_ignores_numbers_only() -> None:
    assert reason_key("observation 12 too old (0.613 s > 0.5 s)") == reason_key("observation 7 too old (1e-3 s > 0.5 s)")
    assert reason_key("observation 12 too old") != reason_key("observation 12 rejected")


def test_keys_are_bounded_and_forget_re_arms() -> None:
    th = KeyedThrottle(period=10.0, max_keys=2)
    assert th("a", 0.0) == 0 and th("b", 0.0) == 0 and th("c", 0.0) == 0  # "a" is evicted
    assert th("a", 0.1) == 0          # forgotten: emits again
    assert th("c", 0.2) is None
    th.forget("c")
    assert th("c", 0.3) == 0
