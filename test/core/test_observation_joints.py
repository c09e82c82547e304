"""Observation assembly with JointState messages merged by name (issue 11) and honest input health."""
from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.observation import ObservationAssembler, ObservationConfig
from pi0_ros.robots.embodiment import load_embodiment

GRIP = "robotiq_85_left_knuckle_joint"


def ur5e():
    emb = load_embodiment("ur5e")
    arm = [d.joint for d in emb.dims if d.kind == "joint"]
    return emb, arm


def frames(asm, emb, t):
    for c in emb.cameras:
        asm.add_image(c.slot, t, np.zeros((8, 8, 3), np.uint8))


def test_arm_and_gripper_messages_on_one_topic_give_observations() -> None:
    """A UR driver and a Robotiq driver both publish on /joint_states, each its own joints."""
    emb, arm = ur5e()
    asm = ObservationAssembler(emb)
    for k in range(50):                   # arm at 100 Hz, gripper at 50 Hz, interleaved
        t = 1.0 + k * 0.01
        asm.add_joint_state("arm", t, arm, [0.1 * (i + 1) for i in range(6)])
        if k % 2:
            asm.add_joint_state("arm", t + 0.003, [GRIP, "robotiq_85_right_knuckle_joint"], [0.4, -0.4])
    frames(asm, emb, 1.31)                # nearest samples: arm 1.310, gripper 1.313
    res = asm.assemble(1.35)
    assert res.reason == "ok", res.reason
    o = res.observation
    np.testing.assert_allclose(o.state, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.4])
    # The source's stamp is the newest message that contributed a needed joint (the gripper's).
    assert o.input_stamps["joints:arm"] == pytest.approx(1.313) and o.t_obs == pytest.approx(1.313)
    assert set(o.input_stamps) == {"camera:base_0_rgb", "camera:left_wrist_0_rgb", "joints:arm"}


def test_partial_stream_beside_a_full_one_never_stutters() -> None:
    """A full stream plus a partial one (elbow only, another publisher 17 ms behind, e.g. a
    relay): every frame gives an observation and no value ever goes back in time. Before, the
    partial message nearest a frame was taken as the whole source state: no observation."""
    emb, arm = ur5e()
    asm = ObservationAssembler(emb)
    elbow = arm.index("elbow_joint")
    published, elbows = 0, []
    for k in range(300):                  # 3 s at 100 Hz; the signal is the time itself
        t = 1.0 + k * 0.01
        asm.add_joint_state("arm", t, arm + [GRIP], [t] * 7)
        if k >= 2:
            asm.add_joint_state("arm", t - 0.017, ["elbow_joint"], [t - 0.017])
        if k % 7 == 0 and k > 0:          # ~15 Hz camera, its frame nearest a partial message
            frames(asm, emb, t - 0.016)
            res = asm.assemble(t)
            assert res.observation is not None, res.reason
            published += 1
            elbows.append(res.observation.state[elbow])
            assert res.observation.state[elbow] == pytest.approx(t - 0.016, abs=0.006)
    assert published == 42 and elbows == sorted(elbows)


def test_gripper_that_stops_goes_stale_alone() -> None:
    emb, arm = ur5e()
    asm = ObservationAssembler(emb, ObservationConfig(joint_max_age=0.25))
    for k in range(100):
        t = 1.0 + k * 0.01
        asm.add_joint_state("arm", t, arm, [0.0] * 6)
        if t <= 1.3:                       # the gripper driver dies at 1.3 s
            asm.add_joint_state("arm", t, [GRIP], [0.0])
    frames(asm, emb, 1.99)
    res = asm.assemble(1.99)
    assert res.observation is None
    assert [s.name for s in res.stale] == [f"joints:arm/{GRIP}"] and res.missing == ()
    assert res.reason.startswith(f"stale: joints:arm/{GRIP} (/joint_states) late by 0.440 s"), res.reason
    assert "shoulder" not in res.reason and "camera" not in res.reason


def test_joint_sample_outside_slop_blocks_and_names_the_joint() -> None:
    emb, arm = ur5e()
    asm = ObservationAssembler(emb, ObservationConfig(slop=0.05, joint_max_age=0.25))
    asm.add_joint_state("arm", 1.0, [GRIP], [0.0])          # the gripper publishes at 5 Hz
    for k in range(20):
        asm.add_joint_state("arm", 1.0 + k * 0.01, arm, [0.0] * 6)
    frames(asm, emb, 1.19)
    res = asm.assemble(1.2)
    assert res.observation is None and GRIP in res.reason and "slop" in res.reason, res.reason


def test_missing_joint_names_the_joint_the_topic_and_what_the_source_has() -> None:
    """Panda names (panda_joint1) against the FR3 YAML (fr3_joint1): missing, never "stale"."""
    emb = load_embodiment("franka")
    asm = ObservationAssembler(emb)
    for k in range(60):
        t = 1.0 + k * 0.01
        frames(asm, emb, t)
        asm.add_joint_state("arm", t, [f"panda_joint{i}" for i in range(1, 8)], [0.0] * 7)
        asm.add_joint_state("gripper", t, ["fr3_finger_joint1", "fr3_finger_joint2"], [0.02, 0.02])
        res = asm.assemble(t)
    assert res.observation is None and res.stale == ()
    names = [m.name for m in res.missing]
    assert names == [f"joints:arm/fr3_joint{i}" for i in range(1, 8)]
    m = res.missing[0]
    assert (m.joint, m.topic) == ("fr3_joint1", "/joint_states") and "panda_joint1" in m.has
    assert res.reason == ("missing: joints 'fr3_joint1', 'fr3_joint2', 'fr3_joint3', 'fr3_joint4', 'fr3_joint5', "
                          "'fr3_joint6', 'fr3_joint7' of source 'arm' not in the messages on /joint_states, which "
                          "carry: panda_joint1, panda_joint2, panda_joint3, panda_joint4, panda_joint5, panda_joint6, "
                          "panda_joint7"), res.reason
    assert m.describe() == ("joint 'fr3_joint1' of source 'arm' not in the messages on /joint_states, which carry: "
                            "panda_joint1, panda_joint2, panda_joint3, panda_joint4, panda_joint5, panda_joint6, "
                            "panda_joint7")
    assert "stale" not in res.reason and "late" not in res.reason


def test_nothing_received_is_missing_and_a_stopped_camera_is_the_only_stale_input() -> None:
    emb, arm = ur5e()
    asm = ObservationAssembler(emb, ObservationConfig(camera_max_age=0.5, joint_max_age=0.25))
    h = asm.health(1.0)
    assert {m.name for m in h.missing} == {"camera:base_0_rgb", "camera:left_wrist_0_rgb", "joints:arm"}
    assert h.stale == () and "nothing received yet" in h.describe()
    published = 0
    for k in range(300):                      # 3 s; the wrist camera dies at 1.5 s
        t = 1.0 + k * 0.01
        asm.add_joint_state("arm", t, arm + [GRIP], [0.0] * 7)
        if k % 7 == 0:
            asm.add_image("base_0_rgb", t, np.zeros((8, 8, 3), np.uint8))
            if t <= 1.5:
                asm.add_image("left_wrist_0_rgb", t, np.zeros((8, 8, 3), np.uint8))
        res = asm.assemble(t)
        published += res.observation is not None
        named = set(asm.health(t).problem_inputs) | {s.name for s in res.stale}
        assert named <= {"camera:left_wrist_0_rgb"}, (t, res.reason)
        if t > 2.1:
            assert named == {"camera:left_wrist_0_rgb"} and res.reason.startswith(
                "stale: camera:left_wrist_0_rgb (/camera/wrist/image_raw)"), res.reason
    assert published > 0


def test_after_a_reset_inputs_get_their_max_age_to_come_back_then_are_stale() -> None:
    """A new episode clears the queues: that is neither a missing driver nor (yet) a stale one."""
    emb, arm = ur5e()
    asm = ObservationAssembler(emb, ObservationConfig(camera_max_age=0.5, joint_max_age=0.25))
    for k in range(20):
        t = 1.0 + k * 0.01
        asm.add_joint_state("arm", t, arm + [GRIP], [0.0] * 7)
    frames(asm, emb, 1.19)
    assert asm.assemble(1.2).observation is not None
    asm.clear(since=1.3, now=1.3)
    assert asm.health(1.5).ok                          # within every max_age: waiting, not a fault
    asm.add_joint_state("arm", 1.75, arm + [GRIP], [0.0] * 7)
    h = asm.health(1.9)                                # joints are back; the cameras are not
    assert h.missing == () and [s.name for s in h.stale] == ["camera:base_0_rgb", "camera:left_wrist_0_rgb"]
    assert h.stale[0].age == pytest.approx(0.6)
    # Without the time of the clear, nothing since then reads as missing (the old behaviour).
    asm.clear(since=2.0)
    assert {m.name for m in asm.health(2.0).missing} == {"camera:base_0_rgb", "camera:left_wrist_0_rgb", "joints:arm"}


def test_input_status_pauses_on_named_inputs_at_once_and_on_other_reasons_only_when_idle() -> None:
    from pi0_ros.observation import AssembleResult, MissingInput, input_status
    from pi0_ros.sync import StaleInput

    stale = AssembleResult(None, "stale: camera:base_0_rgb ...", (StaleInput("camera:base_0_rgb", 0.7, 0.5),))
    st = input_status(stale, idle_for=0.0, max_idle=0.5)
    assert not st.ok and st.stale == ("camera:base_0_rgb",) and st.key == ("camera:base_0_rgb",)
    missing = AssembleResult(None, "missing: ...", (), (MissingInput("joints:arm/fr3_joint1", "/joint_states"),))
    assert input_status(missing, 0.0, 0.5).missing == ("joints:arm/fr3_joint1",)
    late = AssembleResult(None, "'joints:arm/elbow_joint' has no sample within slop 0.05 s of t_ref=12.000000")
    assert input_status(late, idle_for=0.1, max_idle=0.5).ok          # one late sample: no pause
    st = input_status(late, idle_for=0.6, max_idle=0.5)
    assert not st.ok and st.message.startswith("no observation for 0.600 s: 'joints:arm/elbow_joint'")
    later = AssembleResult(None, "'joints:arm/elbow_joint' has no sample within slop 0.05 s of t_ref=12.100000")
    assert input_status(later, 0.7, 0.5).key == st.key                # same problem, same key
    assert input_status(AssembleResult(None, "ok"), 9.0, 0.5).ok


def test_inputs_starting_with_the_node_are_not_missing_until_their_max_age() -> None:
    emb, arm = ur5e()
    asm = ObservationAssembler(emb, ObservationConfig(camera_max_age=0.5, joint_max_age=0.25))
    asm.wait_for_inputs(10.0)
    assert asm.health(10.2).ok
    frames(asm, emb, 10.3)
    h = asm.health(10.3)                               # joints had 0.25 s: now they are missing
    assert [m.name for m in h.missing] == ["joints:arm"] and h.stale == ()
