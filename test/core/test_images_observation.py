"""ROS-free image decoding (every common encoding) and observation assembly."""
from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.images import ImageDecodeError, check_crop, crop_region, decode_compressed, decode_raw, encode_compressed
from pi0_ros.observation import ObservationAssembler, ObservationConfig
from pi0_ros.robots.embodiment import JointStateError, load_embodiment

RGB = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"])
def test_colour_encodings_give_rgb(enc):
    src = {"rgb8": RGB, "bgr8": RGB[..., ::-1], "8UC3": RGB[..., ::-1],
           "rgba8": np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)]),
           "bgra8": np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)])}[enc]
    src = np.ascontiguousarray(src)
    out = decode_raw(6, 5, enc, src.shape[1] * src.shape[2], False, src.tobytes())
    np.testing.assert_array_equal(out, RGB)


def test_row_padding_step_is_respected():
    padded = np.zeros((6, 5 * 3 + 4), np.uint8)
    padded[:, :15] = RGB.reshape(6, 15)
    np.testing.assert_array_equal(decode_raw(6, 5, "rgb8", 19, False, padded.tobytes()), RGB)


@pytest.mark.parametrize("big", [False, True])
def test_mono16_scaled_to_8bit(big):
    px = np.array([[0, 256, 65535]], dtype=">u2" if big else "<u2")
    out = decode_raw(1, 3, "mono16", 6, big, px.tobytes())
    assert out.shape == (1, 3, 3) and out[0, :, 0].tolist() == [0, 1, 255]
    assert np.all(out[..., 0] == out[..., 1])


def test_mono8_to_rgb():
    out = decode_raw(2, 2, "mono8", 2, False, bytes([0, 10, 20, 30]))
    assert out[1, 1].tolist() == [30, 30, 30]


@pytest.mark.parametrize("args, words", [
    ((2, 2, "yuv422", 4, False, bytes(8)), "unsupported encoding"),
    ((2, 2, "rgb8", 3, False, bytes(12)), "step"),
    ((2, 2, "rgb8", 6, False, bytes(11)), "needs"),
    ((0, 2, "rgb8", 6, False, b""), "empty"),
])
def test_bad_raw_images_rejected(args, words):
    with pytest.raises(ImageDecodeError, match=words):
        decode_raw(*args)


def test_compressed_round_trip_and_garbage():
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8] = (255, 0, 0)
    out = decode_compressed(encode_compressed(img, "png"))
    np.testing.assert_array_equal(out, img)
    with pytest.raises(ImageDecodeError):
        decode_compressed(b"not a jpeg")
    with pytest.raises(ImageDecodeError):
        decode_compressed(b"")


# ---------------------------------------------------------------- region of interest
def test_crop_region_takes_fractions_of_any_frame_size():
    img = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3).astype(np.uint8)
    roi = crop_region(img, (0.25, 0.5, 0.5, 0.25))
    assert roi.shape == (240, 160, 3) and np.shares_memory(roi, img)
    np.testing.assert_array_equal(roi, img[120:360, 320:480])
    assert crop_region(img, None) is img
    assert crop_region(img[:3, :3], (0.0, 0.0, 0.01, 0.01)).shape == (1, 1, 3)  # never empty


@pytest.mark.parametrize("crop, words", [
    ([0.5, 0.5, 0.6, 0.1], "top + height <= 1"),
    ([0.0, 0.0, 0.0, 0.5], "0 < height"),
    ([-0.1, 0.0, 0.5, 0.5], "0 <= top"),
    ([0.0, 0.0, float("nan"), 0.5], "finite"),
    ([0.0, 0.0, 0.5], "[top, left, height, width]"),
    ("0 0 1 1", "[top, left, height, width]"),
    ([0.0, "a", 0.5, 0.5], "four numbers"),
])
def test_bad_crop_says_what_is_wrong(crop, words):
    with pytest.raises(ValueError, match="cam.crop") as err:
        check_crop(crop, "cam.crop")
    assert words in str(err.value)


def test_observation_shows_only_the_cameras_region_of_interest(cropped_ur5e):
    """A top camera's crop (cameras.base_0_rgb.crop) is cut out before the resize."""
    emb = load_embodiment(cropped_ur5e)
    cam = next(c for c in emb.cameras if c.slot == "base_0_rgb")
    assert cam.crop is not None
    frame = np.zeros((480, 640, 3), np.uint8)
    roi = crop_region(frame, cam.crop)
    roi[...] = 200                      # inside the region: grey; outside: black
    roi[roi.shape[0] // 2, :] = (255, 0, 0)   # a red row through its middle
    asm = ObservationAssembler(emb)
    feed(asm, emb, 10.0)
    asm.add_image("base_0_rgb", 10.0, frame)
    img = asm.assemble(10.05).observation.images["base_0_rgb"]
    # A square region of a 4:3 frame is 1.33:1 wide: padded rows top and bottom, no black beside.
    h = round(224 * roi.shape[0] / roi.shape[1])
    top = (224 - h) // 2
    assert (img[top + 2: top + h - 2, :] > 0).all(axis=-1).all()
    assert img[:top - 1].max() == 0 and img[top + h + 1:].max() == 0
    assert (img[top + h // 2 - 1: top + h // 2 + 2, :, 0] > 200).any(axis=0).all()
    # The wrist camera has no crop: its whole frame.
    full = np.full((48, 64, 3), 100, np.uint8)
    asm.add_image("left_wrist_0_rgb", 10.0, full)
    assert asm.assemble(10.05).observation.images["left_wrist_0_rgb"][112, 0].tolist() == [100] * 3


# ---------------------------------------------------------------- observation assembly
def feed(asm, emb, t, cams=True, state=None):
    state = np.zeros(emb.num_dims) if state is None else state
    if cams:
        for c in emb.cameras:
            asm.add_image(c.slot, t, np.full((48, 64, 3), 100, np.uint8))
    for s in emb.joint_state_sources:
        dims = [(i, d) for i, d in enumerate(emb.dims) if d.source == s]
        asm.add_joint_state(s, t, [d.joint for _, d in dims], [state[i] for i, _ in dims])


def test_assembles_synchronised_observation():
    emb = load_embodiment("trossen_bimanual")
    asm = ObservationAssembler(emb)
    state = np.linspace(-0.5, 0.5, emb.num_dims)
    feed(asm, emb, 10.0, state=state)
    res = asm.assemble(10.05)
    assert res.reason == "ok"
    o = res.observation
    assert o.t_obs == 10.0 and set(o.images) == {c.slot for c in emb.cameras}
    assert o.images["base_0_rgb"].shape == (224, 224, 3)
    # 64x48 -> 224x168 content, padded with black top and bottom.
    assert o.images["base_0_rgb"][0, 0].tolist() == [0, 0, 0] and o.images["base_0_rgb"][112, 112].tolist() == [100] * 3
    np.testing.assert_allclose(o.state, state)


def test_stale_camera_blocks_and_is_named():
    emb = load_embodiment("ur5e")
    asm = ObservationAssembler(emb, ObservationConfig(camera_max_age=0.2))
    feed(asm, emb, 1.0)
    for s in emb.joint_state_sources:  # joint states keep coming, cameras stopped
        asm.add_joint_state(s, 2.0, [d.joint for d in emb.dims], [0.0] * emb.num_dims)
    res = asm.assemble(2.0)
    assert res.observation is None
    assert "camera:base_0_rgb" in {s.name for s in res.stale} and "late by" in res.reason


def test_optional_cameras_are_masked():
    emb = load_embodiment("trossen_bimanual")
    asm = ObservationAssembler(emb, ObservationConfig(cameras_optional=True))
    asm.add_image("base_0_rgb", 5.0, np.zeros((10, 10, 3), np.uint8))
    feed(asm, emb, 5.0, cams=False)
    res = asm.assemble(5.0)
    assert res.observation.image_valid == {"base_0_rgb": True, "left_wrist_0_rgb": False, "right_wrist_0_rgb": False}


def test_bad_joint_states_rejected_and_counted():
    emb = load_embodiment("ur5e")
    asm = ObservationAssembler(emb)
    with pytest.raises(JointStateError, match="not finite"):
        asm.add_joint_state("arm", 1.0, ["elbow_joint"], [float("nan")])
    with pytest.raises(JointStateError, match="names but"):
        asm.add_joint_state("arm", 1.0, ["elbow_joint"], [0.0, 1.0])
    assert asm.rejected["joints:arm"] == 2


def test_missing_joint_in_source_gives_reason_not_zero():
    emb = load_embodiment("ur5e")
    asm = ObservationAssembler(emb)
    for c in emb.cameras:
        asm.add_image(c.slot, 1.0, np.zeros((8, 8, 3), np.uint8))
    asm.add_joint_state("arm", 1.0, ["shoulder_pan_joint"], [0.1])
    res = asm.assemble(1.0)
    assert res.observation is None and "shoulder_lift_joint" in res.reason


def test_odometry_rotated_into_base_frame():
    emb = load_embodiment("mobile_fibocom")
    asm = ObservationAssembler(emb, ObservationConfig(odom_twist_in_world=True))
    feed(asm, emb, 1.0)
    yaw = np.pi / 2  # base faces +y in the world: world vx=0, vy=1 is forward
    asm.add_odometry(1.0, 0.0, 1.0, 0.2, (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)))
    o = asm.assemble(1.0).observation
    np.testing.assert_allclose(o.state[-3:], [1.0, 0.0, 0.2], atol=1e-12)


def test_measured_state_goes_stale_per_source():
    from pi0_ros.executor import MeasuredState

    emb = load_embodiment("mobile_trossen_arx")
    m = MeasuredState(emb, timeout=0.25)
    for s in emb.joint_state_sources:
        m.update_joints(s, 1.0, {d.joint: 0.1 for d in emb.dims if d.source == s})
    assert m.get(1.0) is None  # no odometry yet: a mobile robot's state is incomplete
    m.update_base(1.0, 0.2, 0.0, -0.1)
    np.testing.assert_allclose(m.get(1.1)[-2:], [0.2, -0.1])
    m.update_joints("left", 1.3, {d.joint: 0.1 for d in emb.dims if d.source == "left"})
    assert m.get(1.3) is None  # the right arm's driver went quiet for > 0.25 s
    m.clear()
    assert m.get(1.3) is None


def test_measured_state_ignores_joint_states_from_before_a_reset():
    from pi0_ros.executor import MeasuredState

    emb = load_embodiment("trossen_bimanual")
    m = MeasuredState(emb, timeout=0.25)
    old = {s: {d.joint: 0.5 for d in emb.dims if d.source == s} for s in emb.joint_state_sources}
    new = {s: {d.joint: 0.0 for d in emb.dims if d.source == s} for s in emb.joint_state_sources}
    m.clear(since=10.0)  # the simulator was reset at t=10
    for s in emb.joint_state_sources:
        assert not m.update_joints(s, 1.0, old[s], stamp=9.98)  # in flight from the old episode
    assert m.get(1.0) is None  # no reference from the old pose
    for s in emb.joint_state_sources:
        assert m.update_joints(s, 1.01, new[s], stamp=10.0)
    assert np.allclose(m.get(1.01)[[0, 1, 7]], 0.0)  # the new pose, not the old 0.5
    # Unstamped messages (stamp unknown) are never mistaken for old ones.
    assert m.update_joints("left", 1.02, old["left"], stamp=None)
    assert m.get(1.02)[0] == 0.5
    assert not m.update_base(1.02, 0.1, 0.0, 0.0, stamp=9.0)
