"""Key sets: openpi's ALOHA / DROID / LIBERO observation dicts onto the model's slots and back."""
from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.images import encode_compressed
from pi0_ros.serving.keys import KeySetError, detect, list_key_sets, load_key_set, parse_key_set, to_rgb_uint8

from test_protocol import openpi_examples

D = 32


@pytest.fixture(scope="module")
def key_sets():
    return [load_key_set(n) for n in list_key_sets()]


def test_shipped_key_sets(key_sets):
    assert {k.name for k in key_sets} == {"aloha", "droid", "libero", "pi0_ros"}


def test_aloha_example_maps_channel_first_cameras_and_state_into_slots(key_sets):
    obs = openpi_examples()["aloha"]
    obs["state"] = np.arange(14.0)
    ks = detect(key_sets, obs)
    images, state, prompt = ks.decode(obs, D)
    assert ks.name == "aloha" and prompt == "do something"
    assert set(images) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}   # cam_low has no slot
    np.testing.assert_array_equal(images["base_0_rgb"], obs["images"]["cam_high"].transpose(1, 2, 0))
    np.testing.assert_array_equal(images["right_wrist_0_rgb"], obs["images"]["cam_right_wrist"].transpose(1, 2, 0))
    np.testing.assert_array_equal(state, np.r_[np.arange(14.0), np.zeros(D - 14)])
    assert ks.select_actions(np.arange(50 * D, dtype=float).reshape(50, D)).shape == (50, 14)


def test_droid_joint_and_gripper_fill_slots_0_to_7(key_sets):
    obs = openpi_examples()["droid"]
    ks = detect(key_sets, obs)
    images, state, _ = ks.decode(obs, D)
    assert ks.name == "droid" and set(images) == {"base_0_rgb", "left_wrist_0_rgb"}
    np.testing.assert_array_equal(state[:7], obs["observation/joint_position"])
    assert state[7] == obs["observation/gripper_position"][0] and not state[8:].any()
    obs["observation/gripper_position"] = 0.25    # a scalar is fine, as in openpi's DroidInputs
    assert ks.decode(obs, D)[1][7] == 0.25
    assert ks.select_actions(np.zeros((10, D))).shape == (10, 8)


def test_libero_example_and_action_width(key_sets):
    obs = openpi_examples()["libero"]
    ks = detect(key_sets, obs)
    assert ks.name == "libero" and ks.select_actions(np.zeros((50, D))).shape == (50, 7)
    np.testing.assert_array_equal(ks.decode(obs, D)[1][:8], obs["observation/state"])


def test_encode_then_decode_is_the_identity_for_every_key_set(key_sets):
    rng = np.random.default_rng(1)
    images = {s: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
              for s in ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")}
    for ks in key_sets:
        state = np.zeros(D)
        width = max(s.stop or D for s in ks.state)
        state[:width] = rng.normal(size=width)
        obs = ks.encode(images, state, "pick up the red cube")
        assert detect(key_sets, obs) is ks
        got_images, got_state, prompt = ks.decode(obs, D)
        assert prompt == "pick up the red cube"
        np.testing.assert_array_equal(got_state, state)
        for slot, img in got_images.items():
            np.testing.assert_array_equal(img, images[slot])
        actions = rng.normal(size=(50, D))
        np.testing.assert_array_equal(ks.place_actions(ks.select_actions(actions), D)[:, slice(*ks.action_slots(D))],
                                      actions[:, slice(*ks.action_slots(D))])


def test_encode_resizes_to_the_model_size_and_refuses_to_drop_state():
    ks = load_key_set("aloha")
    img = np.full((480, 640, 3), 200, np.uint8)
    obs = ks.encode({"base_0_rgb": img}, np.zeros(32), "x", image_size=112)
    assert obs["images"]["cam_high"].shape == (3, 112, 112) and obs["images"]["cam_high"].dtype == np.uint8
    state = np.zeros(32)
    state[15] = 1.0                                    # a base velocity: aloha has no key for it
    with pytest.raises(KeySetError, match=r"state slots \[15\]"):
        ks.encode({}, state, "x")
    jpeg = ks.encode({"base_0_rgb": img}, np.zeros(32), "x", jpeg_quality=80)["images"]["cam_high"]
    assert isinstance(jpeg, bytes) and len(jpeg) < 224 * 224 * 3 // 10


def test_image_values_openpi_accepts():
    hwc = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(hwc.transpose(2, 0, 1)), hwc)
    assert to_rgb_uint8(np.ones((4, 5, 3), np.float32)).max() == 255                 # float in [0, 1]
    assert to_rgb_uint8(encode_compressed(hwc, "png")).shape == (20, 30, 3)
    for bad in (np.zeros((4, 5)), np.zeros((4, 5, 3), np.int32), np.full((4, 5, 3), np.nan), "img", b"notajpeg"):
        with pytest.raises(KeySetError):
            to_rgb_uint8(bad)


def test_observation_errors_name_the_key(key_sets):
    obs = openpi_examples()["aloha"]
    obs["state"] = np.ones(13)
    with pytest.raises(KeySetError, match="'state' must have 14 values"):
        detect(key_sets, obs).decode(obs, D)
    with pytest.raises(KeySetError, match="match no key set"):
        detect(key_sets, {"foo": np.ones(3)})
    obs["state"] = np.array([np.inf] * 14)
    with pytest.raises(KeySetError, match="non-finite"):
        detect(key_sets, obs).decode(obs, D)


@pytest.mark.parametrize("patch,msg", [
    ({"images": {"top": {"key": "x"}}}, "unknown camera slot"),
    ({"state": [{"key": "a", "slots": [0, 8]}, {"key": "b", "slots": [7, 9]}]}, "overlap"),
    ({"actions": {"slots": [4, 2]}}, "slots must be"),
    ({"images": {"base_0_rgb": {"key": "x", "layout": "whc"}}}, "layout"),
])
def test_bad_key_set_yaml_fails_with_the_field(patch, msg):
    data = {"name": "t", "images": {"base_0_rgb": {"key": "img"}}, "state": [{"key": "s", "slots": [0, 7]}],
            "actions": {"slots": [0, 7]}, **patch}
    with pytest.raises(KeySetError, match=msg):
        parse_key_set(data, "t.yaml")
