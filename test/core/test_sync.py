"""Tests for pi0_ros.sync: approximate-time synchronisation without a ROS graph."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0_ros.sync import ApproximateTimeSync, InputSpec, StaleInput, SyncResult

SLOP = 0.02  # s


def feed(sync: ApproximateTimeSync, name: str, stamps: list[float]) -> None:
    for s in stamps:
        assert sync.add(name, s, f"{name}@{s}")


def test_picks_newest_set_within_slop() -> None:
    sync = ApproximateTimeSync(["a", "b"], slop=SLOP)
    feed(sync, "a", [1.00, 1.10, 1.20])
    feed(sync, "b", [1.005, 1.105, 1.19])
    res = sync.latest_synchronised(now=1.25)
    assert res is not None
    assert res.stamps == {"a": 1.20, "b": 1.19}
    assert res.payloads == {"a": "a@1.2", "b": "b@1.19"}
    assert res.t_obs == 1.20  # the newest stamp of the set
    assert res.missing == () and res.fresh


def test_newest_message_without_partner_is_skipped() -> None:
    # a@1.20 has no partner within slop, so the newest *set* is (1.10, 1.105).
    sync = ApproximateTimeSync(["a", "b"], slop=SLOP)
    feed(sync, "a", [1.00, 1.10, 1.20])
    feed(sync, "b", [1.005, 1.105])
    res = sync.latest_synchronised(now=1.25)
    assert res is not None
    assert res.stamps == {"a": 1.10, "b": 1.105}
    assert res.t_obs == 1.105


def test_each_input_takes_its_newest_message_in_the_window() -> None:
    sync = ApproximateTimeSync(["a", "b"], slop=SLOP)
    feed(sync, "a", [1.000])
    feed(sync, "b", [0.985, 0.990, 0.995, 1.030])
    res = sync.latest_synchronised(now=1.1)
    assert res is not None and res.stamps["b"] == 0.995


def test_rejects_sets_outside_slop() -> None:
    sync = ApproximateTimeSync(["a", "b"], slop=SLOP)
    feed(sync, "a", [1.00, 1.10])
    feed(sync, "b", [1.05, 1.15])  # every pair is 0.05 apart
    assert sync.latest_synchronised(now=1.2) is None
    assert "slop" in sync.last_reason


def test_spread_exactly_slop_is_accepted() -> None:
    sync = ApproximateTimeSync(["a", "b"], slop=0.25)  # binary-exact numbers
    feed(sync, "a", [1.0])
    feed(sync, "b", [1.25])
    res = sync.latest_synchronised(now=1.3)
    assert res is not None and res.t_obs == 1.25


def test_no_message_yet_names_the_input() -> None:
    sync = ApproximateTimeSync(["cam_high", "cam_left"], slop=SLOP)
    feed(sync, "cam_high", [1.0])
    assert sync.latest_synchronised(now=1.0) is None
    assert "cam_left" in sync.last_reason


def test_polling_does_not_consume() -> None:
    sync = ApproximateTimeSync(["a", "b"], slop=SLOP)
    feed(sync, "a", [1.0])
    feed(sync, "b", [1.01])
    first = sync.latest_synchronised(now=1.1)
    second = sync.latest_synchronised(now=1.1)
    assert first is not None and second is not None and first.t_obs == second.t_obs == 1.01


def test_staleness_names_the_late_input_and_by_how_much() -> None:
    sync = ApproximateTimeSync(
        [InputSpec("cam", max_age=0.5), InputSpec("wrist", max_age=0.05)], slop=SLOP
    )
    feed(sync, "cam", [1.00])
    feed(sync, "wrist", [0.99])
    res = sync.latest_synchronised(now=1.20)
    assert res is not None and not res.fresh
    assert [s.name for s in res.stale] == ["wrist"]
    assert res.stale[0].age == pytest.approx(0.21)
    assert res.stale[0].late_by == pytest.approx(0.16)
    assert "wrist" in sync.last_reason
    # Fresh again once new messages arrive.
    feed(sync, "cam", [1.19])
    feed(sync, "wrist", [1.18])
    res = sync.latest_synchronised(now=1.20)
    assert res is not None and res.fresh


def test_default_max_age_and_staleness_of_newest() -> None:
    sync = ApproximateTimeSync(["a", "b", InputSpec("w", optional=True)], slop=SLOP, max_age=0.1)
    feed(sync, "a", [1.0, 2.0])
    stale = sync.staleness(now=2.05)
    # a is fresh, b never delivered (inf), optional w is not required to deliver.
    assert stale == (StaleInput("b", math.inf, 0.1),)
    assert sync.latest_synchronised(now=2.05) is None


def optional_wrist(max_age: float = 0.2) -> ApproximateTimeSync:
    return ApproximateTimeSync(
        ["cam", InputSpec("wrist", optional=True, max_age=max_age)], slop=SLOP
    )


def test_optional_input_that_never_delivered_is_missing() -> None:
    sync = optional_wrist()
    feed(sync, "cam", [1.00])
    res = sync.latest_synchronised(now=1.01)
    assert res is not None and res.missing == ("wrist",) and "wrist" not in res.payloads
    assert res.t_obs == 1.00 and res.fresh


def test_live_optional_input_is_waited_for_not_dropped() -> None:
    # 30 Hz cameras slightly out of phase: the cam frame at 1.0333 arrives before the wrist
    # frame of that period. A live optional camera is part of the set, so the newest
    # *complete* set is used instead of an observation with the wrist masked.
    sync = optional_wrist()
    feed(sync, "cam", [1.0, 1.0333])
    feed(sync, "wrist", [1.001])
    res = sync.latest_synchronised(now=1.04)
    assert res is not None and res.missing == ()
    assert res.stamps == {"cam": 1.0, "wrist": 1.001} and res.t_obs == 1.001
    feed(sync, "wrist", [1.0343])
    res = sync.latest_synchronised(now=1.04)
    assert res is not None and res.stamps == {"cam": 1.0333, "wrist": 1.0343}


def test_dead_optional_input_pauses_at_most_max_age_then_is_masked() -> None:
    sync = optional_wrist(max_age=0.2)
    feed(sync, "cam", [1.0])
    feed(sync, "wrist", [1.0])
    feed(sync, "cam", [1.1, 1.15])  # the wrist camera died after 1.0
    res = sync.latest_synchronised(now=1.15)
    assert res is not None and res.t_obs == 1.0  # still live: the last complete set
    res = sync.latest_synchronised(now=1.25)  # wrist 0.25 s old > max_age: gone
    assert res is not None and res.missing == ("wrist",) and res.t_obs == 1.15


def test_all_inputs_optional() -> None:
    sync = ApproximateTimeSync(
        [InputSpec("a", optional=True), InputSpec("b", optional=True)], slop=SLOP, max_age=0.3
    )
    assert sync.latest_synchronised(now=1.0) is None
    assert "no live input" in sync.last_reason
    feed(sync, "b", [1.0])
    res = sync.latest_synchronised(now=1.0)
    assert res is not None and res.missing == ("a",) and res.t_obs == 1.0
    feed(sync, "a", [1.01])
    res = sync.latest_synchronised(now=1.02)
    assert res is not None and res.missing == () and res.t_obs == 1.01


def test_live_optional_without_partner_blocks_until_gone() -> None:
    sync = optional_wrist(max_age=0.2)
    feed(sync, "cam", [1.0])
    feed(sync, "wrist", [1.05])  # live but never within slop of a cam frame
    assert sync.latest_synchronised(now=1.06) is None
    assert "slop" in sync.last_reason


def joint_stream(t0: float, t1: float, hz: float = 500.0) -> list[float]:
    n = int(round((t1 - t0) * hz))
    return [t0 + k / hz for k in range(n + 1)]


def test_sample_and_hold_takes_nearest_sample_to_reference() -> None:
    sync = ApproximateTimeSync(
        ["cam", InputSpec("joints", sample_and_hold=True, queue_size=500)], slop=SLOP
    )
    feed(sync, "joints", joint_stream(0.9, 1.3))
    feed(sync, "cam", [1.0007])
    res = sync.latest_synchronised(now=1.3)
    assert res is not None
    assert res.stamps["joints"] == pytest.approx(1.000)  # 0.7 ms away; 1.002 is 1.3 ms away
    assert res.t_obs == 1.0007  # the camera is the newest member of the set
    feed(sync, "cam", [1.0013])
    res = sync.latest_synchronised(now=1.3)
    assert res is not None and res.stamps["joints"] == pytest.approx(1.002)
    assert res.t_obs == pytest.approx(1.002)  # now the joint sample is the newest


def test_sample_and_hold_tie_goes_to_newer_sample() -> None:
    sync = ApproximateTimeSync(["cam", InputSpec("j", sample_and_hold=True)], slop=1.0)
    feed(sync, "j", [0.5, 1.5])
    feed(sync, "cam", [1.0])
    res = sync.latest_synchronised(now=2.0)
    assert res is not None and res.stamps["j"] == 1.5


def test_sample_and_hold_rejects_when_no_sample_within_slop() -> None:
    sync = ApproximateTimeSync(
        ["cam", InputSpec("joints", sample_and_hold=True, queue_size=500)], slop=SLOP
    )
    feed(sync, "joints", joint_stream(0.5, 0.9))  # the joint stream stopped at 0.9 s
    feed(sync, "cam", [1.0])
    assert sync.latest_synchronised(now=1.0) is None
    assert "joints" in sync.last_reason


def test_optional_hold_input_becomes_missing() -> None:
    sync = ApproximateTimeSync(
        ["cam", InputSpec("odom", sample_and_hold=True, optional=True)], slop=SLOP
    )
    feed(sync, "cam", [1.0])
    res = sync.latest_synchronised(now=1.0)
    assert res is not None and res.missing == ("odom",)


def test_hold_input_does_not_choose_the_set() -> None:
    # Joint states only arrive up to 1.0 s; the camera's newest frame is at 1.2 s and is
    # chosen; the hold input then fails, rather than pulling the set back to an older frame.
    sync = ApproximateTimeSync(["cam", InputSpec("j", sample_and_hold=True)], slop=SLOP)
    feed(sync, "cam", [1.0, 1.2])
    feed(sync, "j", [0.999])
    assert sync.latest_synchronised(now=1.2) is None


def test_queue_is_bounded_sorted_and_counts_drops() -> None:
    sync = ApproximateTimeSync(["a", "b"], slop=SLOP, queue_size=3)
    feed(sync, "a", [1.0, 1.1, 1.2, 1.3])  # 1.0 falls out
    assert sync.add("a", 1.15, "late") is True  # out of order: inserted, 1.1 falls out
    assert sync.add("a", 0.5, "ancient") is False  # older than a full queue
    assert sync.add("a", math.nan, "bad") is False
    assert sync.dropped == {"a": 2, "b": 0}
    feed(sync, "b", [1.0, 1.1, 1.15])
    res = sync.latest_synchronised(now=1.4)
    assert res is not None and res.payloads["a"] == "late"
    # Nothing pairs with b@1.0 or b@1.1 any more.
    sync.clear()
    assert sync.latest_synchronised(now=1.4) is None


def test_same_stamp_replaces_payload() -> None:
    sync = ApproximateTimeSync(["a"], slop=SLOP)
    sync.add("a", 1.0, "first")
    sync.add("a", 1.0, "second")
    res = sync.latest_synchronised(now=1.0)
    assert res is not None and res.payloads["a"] == "second"


def test_unknown_input_and_bad_config() -> None:
    sync = ApproximateTimeSync(["a"], slop=SLOP)
    with pytest.raises(KeyError):
        sync.add("nope", 1.0, None)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a", "a"], slop=SLOP)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a"], slop=-1.0)
    with pytest.raises(ValueError):
        ApproximateTimeSync([InputSpec("j", sample_and_hold=True)], slop=SLOP)
    with pytest.raises(ValueError, match="max_age"):  # optional needs a notion of "gone"
        ApproximateTimeSync(["a", InputSpec("o", optional=True)], slop=SLOP)


def brute_force(queues: list[list[float]], slop: float) -> tuple[float, ...] | None:
    """Reference: the combination with the latest newest stamp, newest members within it."""
    best_t: float | None = None
    for combo in itertools.product(*queues):
        if max(combo) - min(combo) <= slop and (best_t is None or max(combo) > best_t):
            best_t = max(combo)
    if best_t is None:
        return None
    return tuple(max(s for s in q if best_t - slop <= s <= best_t) for q in queues)


# Stamps and slop are multiples of 1/64 s so that every sum and difference is exact and the
# brute force and the synchroniser cannot disagree by rounding.
stamp_lists = st.lists(
    st.integers(min_value=0, max_value=128).map(lambda k: 1.0 + k / 64.0),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(max_examples=300, deadline=None)
@given(
    queues=st.lists(stamp_lists, min_size=1, max_size=3),
    slop_k=st.integers(min_value=0, max_value=20),
)
def test_matches_brute_force(queues: list[list[float]], slop_k: int) -> None:
    slop = slop_k / 64.0
    names = [f"in{i}" for i in range(len(queues))]
    sync = ApproximateTimeSync(names, slop=slop, queue_size=10)
    for n, q in zip(names, queues):
        for s in reversed(q):  # arbitrary order: the queue sorts
            sync.add(n, s, s)
    res = sync.latest_synchronised(now=10.0)
    expected = brute_force([sorted(q) for q in queues], slop)
    if expected is None:
        assert res is None
    else:
        assert isinstance(res, SyncResult)
        got = tuple(res.stamps[n] for n in names)
        assert got == expected
        assert res.t_obs == max(expected)
        assert max(got) - min(got) <= slop


def test_clear_since_discards_messages_still_in_flight() -> None:
    # After a scene reset at t=5, a message stamped 4.9 that arrives late describes the old scene.
    sync = ApproximateTimeSync(["a", "b"], slop=SLOP)
    feed(sync, "a", [4.8, 4.9])
    feed(sync, "b", [4.9])
    sync.clear(since=5.0)
    assert not sync.add("a", 4.95, "late")
    assert sync.dropped["a"] == 1
    assert sync.latest_synchronised(now=5.0) is None
    feed(sync, "a", [5.0])
    feed(sync, "b", [5.01])
    res = sync.latest_synchronised(now=5.02)
    assert res is not None and res.stamps == {"a": 5.0, "b": 5.01}
    sync.clear()  # a plain clear accepts any stamp again
    assert sync.add("a", 1.0, "old")


def test_camera_that_stops_is_the_only_input_named_stale() -> None:
    """Issue 11: the hold samples chosen next to a dead camera's last frame are as old as that
    frame; judging them by the chosen sample blamed every input. Only the camera stopped."""
    sync = ApproximateTimeSync(
        [InputSpec("cam", max_age=0.5), InputSpec("wrist", max_age=0.5),
         InputSpec("joints", sample_and_hold=True, queue_size=1000, max_age=0.25)],
        slop=SLOP,
    )
    feed(sync, "cam", [0.8 + k / 15 for k in range(4)])  # the base camera stops after 1.0 s
    wrist = [0.8 + k / 15 for k in range(46)]          # the wrist camera runs on to 3.8 s
    joints = joint_stream(0.8, 3.8)                    # and so do the joint states
    for now in (1.3, 1.6, 2.0, 3.8):                   # before and after the camera's max_age
        feed(sync, "wrist", [t for t in wrist if now - 0.1 < t <= now])
        feed(sync, "joints", [t for t in joints if now - 0.1 < t <= now])
        res = sync.latest_synchronised(now=now)
        # Once the wrist queue no longer reaches back to 1.0 s there is no set at all.
        assert res is None or (res.lagging == () and res.t_obs == pytest.approx(1.0))
        assert [s.name for s in sync.staleness(now)] == ([] if now - 1.0 <= 0.5 else ["cam"]), now
        head = sync.last_reason.split("(")[0]          # the blame; details in parentheses
        assert "joints" not in head and "wrist" not in head, (now, sync.last_reason)
        assert ("cam late by" in head) == (now - 1.0 > 0.5), (now, sync.last_reason)
    assert res is None and sync.last_reason.startswith("stale: cam late by 2.300 s")


def test_stopped_hold_input_is_named_stale_when_no_set_forms() -> None:
    sync = ApproximateTimeSync(
        [InputSpec("cam", max_age=0.5), InputSpec("joints", sample_and_hold=True, max_age=0.25)], slop=SLOP
    )
    feed(sync, "joints", [0.99, 1.0])                  # the joint driver stopped at 1.0 s
    feed(sync, "cam", [1.0, 1.4])
    assert sync.latest_synchronised(now=1.4) is None
    assert sync.last_reason.startswith("stale: joints late by 0.150 s") and "cam" not in sync.last_reason.split("(")[0]


def test_live_inputs_that_no_longer_align_are_lagging_not_stale() -> None:
    sync = ApproximateTimeSync([InputSpec("a", max_age=0.5), InputSpec("b", max_age=0.5)], slop=SLOP)
    feed(sync, "a", [1.0, 1.5, 2.0])
    feed(sync, "b", [1.0, 1.56, 2.06])                 # b's clock drifted beyond slop after 1.0 s
    res = sync.latest_synchronised(now=2.1)
    assert res is not None and res.stale == () and not res.fresh
    assert {s.name for s in res.lagging} == {"a", "b"} and "do not align" in sync.last_reason


@pytest.mark.timeout(10)
def test_spread_that_rounds_onto_the_slop_terminates() -> None:
    # Defect: 23.85 - 23.8 > 0.05 in floats but 23.8 + 0.05 == 23.85, so the bound never moved
    # and latest_synchronised spun forever (two 20 Hz cameras one tick apart, slop 0.05).
    assert 23.85 - 23.8 > 0.05 and 23.8 + 0.05 == 23.85
    sync = ApproximateTimeSync(["a", "b"], slop=0.05)
    feed(sync, "a", [23.75, 23.8, 23.85])
    feed(sync, "b", [23.75, 23.8])
    res = sync.latest_synchronised(now=23.9)
    assert res is not None and res.stamps == {"a": 23.8, "b": 23.8}
    sync = ApproximateTimeSync(["a", "b"], slop=0.05)
    feed(sync, "a", [23.85])
    feed(sync, "b", [23.8])
    assert sync.latest_synchronised(now=23.9) is None and "slop" in sync.last_reason
