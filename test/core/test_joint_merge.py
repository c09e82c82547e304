"""JointMerge: JointState messages on one topic merge by joint name with per-joint freshness."""
from __future__ import annotations

import math

import pytest

from pi0_ros.joint_merge import JointMerge
from pi0_ros.robots.embodiment import JointStateError

ARM = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]
GRIP = "robotiq_85_left_knuckle_joint"


def test_split_messages_on_one_source_merge_to_the_full_state() -> None:
    m = JointMerge()
    m.update("arm", ARM, [0.1] * 6, stamp=1.000, received=1.001)
    m.update("arm", [GRIP], [0.4], stamp=1.002, received=1.003)  # the gripper driver's own message
    assert m.positions("arm", ARM + [GRIP]) == {**{j: 0.1 for j in ARM}, GRIP: 0.4}
    assert m.missing("arm", ARM + [GRIP]) == ()
    assert m.fresh("arm", ARM + [GRIP], now=1.01, max_age=0.1)
    assert m.newest_stamp("arm", ARM) == 1.000 and m.newest_stamp("arm", ARM + [GRIP]) == 1.002
    assert m.names("arm") == tuple(sorted(ARM + [GRIP]))


def test_partial_stream_beside_a_full_one_never_reverts_a_value() -> None:
    """A full stream and a partial one with older stamps (delivered late): values only move forward."""
    m = JointMerge()
    seen = []
    for k in range(20):
        t = 1.0 + 0.01 * k
        m.update("arm", ARM, [t] * 6, stamp=t, received=t)
        # A second publisher republishes the elbow from 30 ms ago (e.g. a relay): must not win.
        m.update("arm", ["elbow_joint"], [t - 0.03], stamp=t - 0.03, received=t + 0.001)
        seen.append(m.positions("arm", ARM)["elbow_joint"])
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.19)
    assert m.sample("arm", "elbow_joint").stamp == pytest.approx(1.19)


def test_equal_stamp_replaces_newest_arrival_wins() -> None:
    m = JointMerge()
    m.update("arm", ["elbow_joint"], [1.0], stamp=2.0, received=2.0)
    assert m.update("arm", ["elbow_joint"], [2.0], stamp=2.0, received=2.1) == ("elbow_joint",)
    assert m.positions("arm")["elbow_joint"] == 2.0


def test_a_joint_that_stops_goes_stale_alone() -> None:
    m = JointMerge()
    m.update("arm", ARM, [0.0] * 6, stamp=1.0, received=1.0)
    m.update("arm", [GRIP], [0.0], stamp=1.0, received=1.0)
    m.update("arm", ARM, [0.0] * 6, stamp=1.5, received=1.5)  # the gripper driver died
    stale = m.stale("arm", ARM + [GRIP], now=1.5, max_age=0.25)
    assert [j for j, _ in stale] == [GRIP] and stale[0][1] == pytest.approx(0.5)
    assert m.fresh("arm", ARM, now=1.5, max_age=0.25)
    assert not m.fresh("arm", ARM + [GRIP], now=1.5, max_age=0.25)
    # Freshness by stamp instead of receipt time (the observation side's clock).
    m.update("arm", ARM, [0.0] * 6, stamp=1.2, received=2.0)  # older stamp: ignored for values
    assert m.stale("arm", ARM, now=2.0, max_age=0.25, by="stamp")[0][1] == pytest.approx(0.5)


def test_missing_joint_is_missing_not_stale() -> None:
    m = JointMerge()
    m.update("arm", ["panda_joint1"], [0.0], stamp=1.0, received=1.0)
    assert m.missing("arm", ["fr3_joint1"]) == ("fr3_joint1",)
    assert m.stale("arm", ["fr3_joint1"], now=9.0, max_age=0.1) == ()
    assert m.names("arm") == ("panda_joint1",) and m.names("other") == ()


def test_malformed_message_takes_nothing() -> None:
    m = JointMerge()
    with pytest.raises(JointStateError):
        m.update("arm", ["a", "b"], [0.0, math.nan], stamp=1.0, received=1.0)
    with pytest.raises(JointStateError):
        m.update("arm", ["a", "a"], [0.0, 1.0], stamp=1.0, received=1.0)
    assert m.sources() == () and m.positions("arm") == {}


def test_clear_since_ignores_messages_in_flight_and_unknown_stamps_are_kept() -> None:
    m = JointMerge()
    m.update("arm", ARM, [0.5] * 6, stamp=9.0, received=9.0)
    m.clear(since=10.0)
    assert m.positions("arm") == {}
    assert m.update("arm", ARM, [0.5] * 6, stamp=9.99, received=10.1) == () and m.ignored == 1
    assert m.update("arm", ARM, [0.0] * 6, stamp=10.0, received=10.1) == tuple(ARM)
    # Unstamped: accepted, ordered by arrival, aged by receipt time.
    assert m.update("arm", ["elbow_joint"], [0.3], stamp=None, received=10.2) == ("elbow_joint",)
    s = m.sample("arm", "elbow_joint")
    assert s.position == 0.3 and s.age(10.3, by="stamp") == pytest.approx(0.1)
    assert m.newest_stamp("arm", ARM) == 10.0
