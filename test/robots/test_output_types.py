"""Embodiment outputs: the command interfaces and their per-output params are validated at load."""
from __future__ import annotations

import copy

import pytest
import yaml

from pi0_ros.robots.embodiment import EmbodimentError, embodiments_dir, load_all, parse_embodiment

UR5E = yaml.safe_load((embodiments_dir() / "ur5e.yaml").read_text())
MOBILE = yaml.safe_load((embodiments_dir() / "mobile_trossen_arx.yaml").read_text())


def with_output(spec, name, **changes):
    spec = copy.deepcopy(spec)
    for o in spec["outputs"]:
        if o["name"] == name:
            o.update(changes)
    return spec


def test_shipped_interfaces():
    by_name = {e.name: {o.name: o for o in e.outputs} for e in load_all()}
    assert len(by_name) == 7
    ur = by_name["ur5e"]
    assert ur["arm"].type == "trajectory_msgs/msg/JointTrajectory"
    assert ur["gripper"].type == "control_msgs/action/GripperCommand" and ur["gripper"].is_action
    assert ur["gripper"].topic == "/robotiq_gripper_controller/gripper_cmd"
    fr = by_name["franka"]
    assert fr["arm"].topic == "/fr3_arm_controller/joint_trajectory"
    assert fr["gripper"].topic == "/fr3_gripper/gripper_action"
    assert by_name["mobile_trossen_arx"]["base"].type == "geometry_msgs/msg/TwistStamped"
    assert by_name["mobile_trossen_arx"]["base"].topic == "/diff_drive_controller/cmd_vel"
    assert by_name["trossen_bimanual"]["left_arm"].type == "std_msgs/msg/Float64MultiArray"  # the sim default


def test_gripper_params_parsed_and_checked():
    e = parse_embodiment(UR5E)
    assert e.outputs[1].params == {"max_effort": 50.0, "deadband": 0.02, "allow_stalling": True}
    with pytest.raises(EmbodimentError, match=r"params.speed: unknown"):
        parse_embodiment(with_output(UR5E, "gripper", params={"speed": 1.0}))
    with pytest.raises(EmbodimentError, match=r"params.allow_stalling: expected bool"):
        parse_embodiment(with_output(UR5E, "gripper", params={"allow_stalling": 1.0}))
    with pytest.raises(EmbodimentError, match=r"params.max_effort: must be finite and >= 0"):
        parse_embodiment(with_output(UR5E, "gripper", params={"max_effort": -1.0}))
    with pytest.raises(EmbodimentError, match="exactly one dim"):
        parse_embodiment(with_output(UR5E, "arm", type="control_msgs/action/GripperCommand", params={}))


def test_twist_and_twist_stamped_are_interchangeable_for_the_base():
    for t in ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"):
        e = parse_embodiment(with_output(MOBILE, "base", type=t))
        assert e.outputs[-1].type == t
    with pytest.raises(EmbodimentError, match="Twist or TwistStamped"):
        parse_embodiment(with_output(MOBILE, "left_arm", dims=["left_waist", "base_vx"]))


def test_follow_joint_trajectory_output():
    e = parse_embodiment(with_output(UR5E, "arm", type="control_msgs/action/FollowJointTrajectory",
                                     topic="/scaled_joint_trajectory_controller/follow_joint_trajectory"))
    assert e.outputs[0].is_action and e.outputs[0].joint_names[0] == "shoulder_pan_joint"
