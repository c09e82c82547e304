"""SimNode over real rclpy/DDS, in process: joint states, images, prompt, commands, reset."""
import contextlib
import time

import numpy as np
import pytest

import rclpy
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from pi0_ros.ros.sim_node import PROMPT_QOS, SimNode  # noqa: E402

pytestmark = pytest.mark.ros


@contextlib.contextmanager
def sim_node(**params):
    """A SimNode in its own context with parameter overrides (name=value)."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = SimNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    try:
        yield ctx, node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.fixture
def ros():
    with sim_node(image_size=64, image_rate_hz=25.0, seed=2) as (ctx, node):
        probe = rclpy.create_node("sim_probe", context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        ex.add_node(probe)
        yield ex, node, probe
        ex.shutdown()
        probe.destroy_node()


def spin_until(ex, cond, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.02)
        if cond():
            return True
    return False


def test_sim_node_topics_and_commands(ros):
    ex, node, probe = ros
    got = {"left": [], "right": [], "img": {}, "clock": [], "prompt": [], "success": []}
    probe.create_subscription(JointState, "/follower_left/joint_states", got["left"].append, qos_profile_sensor_data)
    probe.create_subscription(JointState, "/follower_right/joint_states", got["right"].append, qos_profile_sensor_data)
    for topic in ("/cam_high/image_raw", "/cam_left_wrist/image_raw", "/cam_right_wrist/image_raw"):
        probe.create_subscription(Image, topic, lambda m, t=topic: got["img"].setdefault(t, m), qos_profile_sensor_data)
    probe.create_subscription(Clock, "/clock", got["clock"].append, 10)
    probe.create_subscription(String, "/prompt", got["prompt"].append, PROMPT_QOS)
    probe.create_subscription(Bool, "/sim/success", got["success"].append, 10)
    cmd = probe.create_publisher(Float64MultiArray, "/follower_left/arm_controller/commands", 10)
    grip = probe.create_publisher(Float64MultiArray, "/follower_left/gripper_controller/commands", 10)

    assert spin_until(ex, lambda: got["left"] and got["right"] and len(got["img"]) == 3 and got["prompt"]
                      and got["clock"] and got["success"])
    js = got["left"][-1]
    assert list(js.name) == ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
    assert js.position[-1] == pytest.approx(1.491, abs=0.02)  # open gripper, robot units
    for t, im in got["img"].items():
        assert (im.encoding, im.height, im.width, im.step) == ("rgb8", 64, 64, 192), t
        a = np.frombuffer(bytes(im.data), np.uint8).reshape(64, 64, 3)
        assert a.mean() > 20, t
    assert got["prompt"][-1].data in ("pick up the red cube", "pick up the blue cube")
    assert got["success"][-1].data is False
    # Header stamps are sim time and match /clock.
    stamp = js.header.stamp.sec + js.header.stamp.nanosec * 1e-9
    assert 0 <= stamp < 30

    target = [0.4, -0.6, 0.9, 0.0, -0.2, 0.3]
    for _ in range(3):
        cmd.publish(Float64MultiArray(data=target))
        grip.publish(Float64MultiArray(data=[-0.6213]))
        spin_until(ex, lambda: False, timeout=0.05)

    def tracked():
        m = got["left"][-1]
        pos = dict(zip(m.name, m.position))
        return abs(pos["waist"] - 0.4) < 0.05 and abs(pos["wrist_rotate"] - 0.3) < 0.05 and pos["gripper"] < -0.4

    assert spin_until(ex, tracked, timeout=20.0), dict(zip(got["left"][-1].name, got["left"][-1].position))
    right = dict(zip(got["right"][-1].name, got["right"][-1].position))
    assert abs(right["waist"]) < 0.02

    # Reset: new episode, arm back home, stamps keep increasing, prompt re-published.
    before = got["left"][-1].header.stamp
    cli = probe.create_client(Trigger, "/sim/reset")
    assert cli.wait_for_service(timeout_sec=5.0)
    fut = cli.call_async(Trigger.Request())
    assert spin_until(ex, fut.done)
    assert fut.result().success, fut.result().message
    n_prompts = len(got["prompt"])
    got["left"].clear()
    assert spin_until(ex, lambda: len(got["left"]) > 3)
    pos = dict(zip(got["left"][-1].name, got["left"][-1].position))
    assert abs(pos["waist"]) < 0.05
    after = got["left"][-1].header.stamp
    assert (after.sec, after.nanosec) > (before.sec, before.nanosec)
    assert spin_until(ex, lambda: len(got["prompt"]) >= n_prompts, timeout=2.0)


def test_sim_stamps_never_round_down_a_whole_second():
    """3.9999999 s must become 4.0 s, not 3.0 s (a rounding bug once made stamps jump back)."""
    from pi0_ros.ros.conversions import sec_to_stamp, stamp_to_sec

    for t in (3.9999999999, 0.99999999996, 12.04, 7.0):
        assert abs(stamp_to_sec(sec_to_stamp(t)) - t) < 1e-9


def test_sim_node_passes_the_disturbance_to_the_simulator():
    with sim_node(image_rate_hz=0.0, disturbance_std=0.03, disturbance_tau=0.4) as (_, node):
        d = node.env.disturbance
        assert d.enabled and d.std == 0.03 and d.tau == 0.4
        # Arm joints only: grippers are never pushed.
        kinds = [dim.kind for dim in node.embodiment.dims]
        assert list(d.mask) == [k == "joint" for k in kinds]
