"""The 7 embodiments as data: openpi slot layout, pad/unpad identity, gripper conversion,
joint-state assembly by name, and load-time validation of bad YAML."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pi0_ros.robots.embodiment import (
    EmbodimentError,
    JointStateError,
    joint_state_positions,
    list_embodiments,
    load_all,
    load_embodiment,
    parse_embodiment,
)

EXPECTED = {  # name -> (action dims, cameras, control rate, execute_steps, asset id)
    "ur5e": (7, 2, 20, 16, "ur5e"),
    "ur5e_bimanual": (14, 3, 20, 16, "ur5e_dual"),
    "franka": (8, 2, 20, 16, "franka"),
    "trossen_bimanual": (14, 3, 50, 25, "trossen"),
    "arx_bimanual": (14, 3, 50, 25, "arx"),
    "mobile_trossen_arx": (16, 3, 50, 25, "trossen_mobile"),
    "mobile_fibocom": (17, 3, 50, 25, "fibocom_mobile"),
}


def test_seven_embodiments_ship():
    assert sorted(list_embodiments()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_summary_numbers(name):
    e = load_embodiment(name)
    dims, cams, rate, steps, asset = EXPECTED[name]
    assert (e.num_dims, len(e.cameras), e.control_rate_hz, e.execute_steps, e.asset_id) == (dims, cams, rate, steps, asset)
    assert e.execute_steps * e.dt == pytest.approx(0.8 if rate == 20 else 0.5)


def _slots(e, pred):
    return [d.slot for d in e.dims if pred(d)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_openpi_slot_layout(name):
    """Slots follow openpi: 0-5 left arm, 6 left gripper, 7-12 right arm, 13 right gripper, 14.. base;
    7-joint arms use 0-6 and the gripper at 7."""
    e = load_embodiment(name)
    grippers = _slots(e, lambda d: d.kind == "gripper")
    joints = _slots(e, lambda d: d.kind == "joint")
    base = [(d.kind, d.slot) for d in e.dims if d.kind.startswith("base_")]
    if name == "franka":
        assert joints == list(range(7)) and grippers == [7]
    elif name == "ur5e":
        assert joints == list(range(6)) and grippers == [6]
    else:
        assert joints == list(range(6)) + list(range(7, 13))
        assert grippers == [6, 13]
        assert [d.name.startswith("left_") for d in e.dims if d.slot < 7] == [True] * 7
        assert [d.name.startswith("right_") for d in e.dims if 7 <= d.slot < 14] == [True] * 7
    if name == "mobile_trossen_arx":
        assert base == [("base_vx", 14), ("base_wz", 15)]
    elif name == "mobile_fibocom":
        assert base == [("base_vx", 14), ("base_vy", 15), ("base_wz", 16)]
    else:
        assert base == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("action_dim", [18, 32])
def test_pad_unpad_identity(name, action_dim):
    e = load_embodiment(name)
    rng = np.random.default_rng(0)
    robot = rng.uniform(e.lower, e.upper, size=(5, e.num_dims))
    padded = e.pad(e.to_model(robot), action_dim)
    assert padded.shape == (5, action_dim)
    # Every slot not owned by the robot is exactly zero.
    free = np.setdiff1d(np.arange(action_dim), e.slots)
    assert np.all(padded[:, free] == 0.0)
    np.testing.assert_allclose(e.robot_actions(padded), robot, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e.padded_state(robot[0], action_dim), padded[0])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gripper_convention(name):
    e = load_embodiment(name)
    for i, d in enumerate(e.dims):
        if d.kind != "gripper":
            continue
        robot = np.zeros(e.num_dims)
        robot[i] = d.open
        assert e.to_model(robot)[i] == pytest.approx(0.0)
        robot[i] = d.closed
        assert e.to_model(robot)[i] == pytest.approx(1.0)


def test_aloha_gripper_constants():
    e = load_embodiment("trossen_bimanual")
    g = [d for d in e.dims if d.kind == "gripper"]
    assert [(d.open, d.closed) for d in g] == [(1.4910, -0.6213)] * 2


def test_padded_width_too_small_is_an_error():
    e = load_embodiment("mobile_fibocom")
    with pytest.raises(ValueError, match="action_dim must be >= 17"):
        e.pad(np.zeros(17), 16)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_split_outputs_cover_every_dim_once(name):
    e = load_embodiment(name)
    robot = np.arange(e.num_dims, dtype=float)
    parts = e.split_outputs(robot)
    got = np.sort(np.concatenate(list(parts.values())))
    np.testing.assert_array_equal(got, robot)
    for o in e.outputs:
        np.testing.assert_array_equal(parts[o.name], [e.dim_names.index(n) for n in o.dims])


# ------------------------------------------------------------------ joint states by name
def _positions(e, value=0.1):
    out: dict[str, dict[str, float]] = {}
    for d in e.dims:
        if d.source:
            out.setdefault(d.source, {})[d.joint] = value
    return out


def test_state_from_several_partial_sources_by_name():
    e = load_embodiment("trossen_bimanual")
    pos = _positions(e)
    # Same joint names in both sources; distinguish by source, and shuffle order + add fingers.
    pos["left"] = dict(reversed(list(pos["left"].items())), left_finger=0.02)
    pos["left"]["waist"] = -0.5
    pos["right"]["waist"] = 0.7
    s = e.state_from_joints(pos)
    assert s[e.dim_names.index("left_waist")] == -0.5
    assert s[e.dim_names.index("right_waist")] == 0.7


def test_mobile_state_needs_base_velocity():
    e = load_embodiment("mobile_fibocom")
    with pytest.raises(JointStateError, match="base velocity"):
        e.state_from_joints(_positions(e))
    s = e.state_from_joints(_positions(e), {"base_vx": 0.2, "base_vy": -0.1, "base_wz": 0.3})
    np.testing.assert_allclose(s[-3:], [0.2, -0.1, 0.3])


def test_missing_joint_rejected_not_zero_filled():
    e = load_embodiment("ur5e")
    pos = _positions(e)
    del pos["arm"]["elbow_joint"]
    with pytest.raises(JointStateError, match="elbow_joint"):
        e.state_from_joints(pos)


def test_missing_source_rejected():
    e = load_embodiment("franka")
    pos = _positions(e)
    del pos["gripper"]
    with pytest.raises(JointStateError, match="/fr3_gripper/joint_states"):
        e.state_from_joints(pos)


def test_jointstate_nan_rejected():
    with pytest.raises(JointStateError, match="not finite"):
        joint_state_positions(["a", "b"], [0.0, float("nan")])
    e = load_embodiment("ur5e")
    pos = _positions(e)
    pos["arm"]["wrist_1_joint"] = float("inf")
    with pytest.raises(JointStateError, match="not finite"):
        e.state_from_joints(pos)


def test_jointstate_length_mismatch_and_duplicates_rejected():
    with pytest.raises(JointStateError, match="2 names but 3 positions"):
        joint_state_positions(["a", "b"], [0.0, 1.0, 2.0])
    with pytest.raises(JointStateError, match="twice"):
        joint_state_positions(["a", "a"], [0.0, 1.0])
    assert joint_state_positions(["a", "b"], [0.5, 1.5]) == {"a": 0.5, "b": 1.5}


# ------------------------------------------------------------------ bad YAML
@pytest.fixture
def aloha_yaml(tmp_path):
    data = yaml.safe_load(Path(load_embodiment("trossen_bimanual").source_file).read_text())

    def write(mutate) -> Path:
        d = copy.deepcopy(data)
        mutate(d)
        p = tmp_path / "robot.yaml"
        p.write_text(yaml.safe_dump(d))
        return p

    return write


def _del_joint(d):
    del d["dims"][2]["joint"]


def _dup_joint(d):
    d["dims"][1]["joint"] = d["dims"][0]["joint"]


def _slot_out_of_range(d):
    d["dims"][3]["slot"] = 40


def _negative_slot(d):
    d["dims"][3]["slot"] = -1


def _overlap(d):
    d["dims"][8]["slot"] = d["dims"][2]["slot"]


def _bad_type(d):
    d["outputs"][0]["type"] = "std_msgs/msg/Float32MultiArray"


def _unknown_output_dim(d):
    d["outputs"][0]["dims"][0] = "left_nose"


def _uncovered_dim(d):
    d["outputs"][1]["dims"] = []


def _dup_name(d):
    d["dims"][1]["name"] = d["dims"][0]["name"]


def _bad_limits(d):
    d["dims"][0]["limits"] = [1.0, -1.0]


def _gripper_no_closed(d):
    del d["dims"][6]["closed"]


def _bad_camera_slot(d):
    d["cameras"]["nose_rgb"] = {"topic": "/x"}


def _crop_past_edge(d):
    d["cameras"]["base_0_rgb"]["crop"] = [0.6, 0.0, 0.5, 1.0]


def _crop_not_four(d):
    d["cameras"]["base_0_rgb"]["crop"] = [0.1, 0.1, 0.5]


def _bad_source(d):
    d["dims"][0]["source"] = "middle"


def _bad_rate(d):
    d["control_rate_hz"] = 0


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (_del_joint, "dims[2](left_elbow).joint", "missing"),
        (_dup_joint, "dims[1](left_shoulder).joint", "duplicate joint"),
        (_slot_out_of_range, "dims[3](left_forearm_roll).slot", "out of range"),
        (_negative_slot, "dims[3](left_forearm_roll).slot", "out of range"),
        (_overlap, "dims[8](right_shoulder).slot", "overlaps dim 'left_elbow'"),
        (_bad_type, "outputs[0](left_arm).type", "unknown message type"),
        (_unknown_output_dim, "outputs[0](left_arm).dims", "unknown dim 'left_nose'"),
        (_uncovered_dim, "outputs", "not sent to any output"),
        (_dup_name, "dims[1](left_waist).name", "duplicate dim name"),
        (_bad_limits, "dims[0](left_waist).limits", "lower < upper"),
        (_gripper_no_closed, "dims[6](left_gripper).closed", "missing"),
        (_bad_camera_slot, "cameras.nose_rgb", "unknown camera slot"),
        (_crop_past_edge, "cameras.base_0_rgb.crop", "top + height <= 1"),
        (_crop_not_four, "cameras.base_0_rgb.crop", "[top, left, height, width]"),
        (_bad_source, "dims[0](left_waist).source", "unknown source"),
        (_bad_rate, "control_rate_hz", "must be in"),
    ],
)
def test_bad_yaml_names_file_and_field(aloha_yaml, mutate, field, words):
    p = aloha_yaml(mutate)
    with pytest.raises(EmbodimentError) as err:
        load_embodiment(p)
    msg = str(err.value)
    assert str(p) in msg and field in msg and words in msg, msg


def test_unparseable_yaml(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(EmbodimentError, match="broken.yaml: cannot read YAML"):
        load_embodiment(p)


def test_unknown_embodiment_lists_known():
    with pytest.raises(EmbodimentError, match="known: arx_bimanual"):
        load_embodiment("hal9000")


def test_eighth_robot_is_one_yaml(tmp_path):
    """Adding a robot needs only data: a single-arm 6-DoF + gripper robot from a new YAML."""
    d = {
        "name": "my_arm", "asset_id": "my_arm", "control_rate_hz": 30, "execute_steps": 20,
        "cameras": {"base_0_rgb": {"topic": "/cam/image_raw", "compressed": True}},
        "joint_state_sources": {"arm": "/my_arm/joint_states"},
        "dims": [{"name": f"j{i}", "kind": "joint", "slot": i, "source": "arm", "joint": f"j{i}",
                  "limits": [-1, 1], "max_velocity": 1.0} for i in range(6)]
        + [{"name": "grip", "kind": "gripper", "slot": 6, "source": "arm", "joint": "grip", "limits": [0, 1],
            "max_velocity": 1.0, "open": 1.0, "closed": 0.0}],
        "outputs": [{"name": "arm", "topic": "/my_arm/cmd", "type": "std_msgs/msg/Float64MultiArray",
                     "dims": [f"j{i}" for i in range(6)] + ["grip"]}],
    }
    p = tmp_path / "my_arm.yaml"
    p.write_text(yaml.safe_dump(d))
    e = load_embodiment(p)
    assert e.num_dims == 7 and e.cameras[0].compressed
    robot = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0])
    assert e.to_model(robot)[6] == 0.0  # fully open
    np.testing.assert_allclose(e.robot_actions(e.pad(e.to_model(robot), 32)), robot)


def test_parse_rejects_non_mapping():
    with pytest.raises(EmbodimentError, match="expected a mapping"):
        parse_embodiment([1, 2, 3], "x.yaml")


def test_cli_embodiments_json():
    out = subprocess.run([sys.executable, "-m", "pi0_ros.cli", "embodiments", "--json"],
                         check=True, capture_output=True, text=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(EXPECTED)
    for name, (dims, cams, rate, steps, _) in EXPECTED.items():
        r = rows[name]
        assert (r["action_dims"], len(r["cameras"]), r["control_rate_hz"], r["execute_steps"]) == (dims, cams, rate, steps)


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "pi0_ros.cli", "--help"], check=True, capture_output=True, text=True).stdout
    assert "embodiments" in out and "bench" in out
