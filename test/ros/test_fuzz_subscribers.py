"""Fuzz every subscriber of the pipeline with random and malformed messages on a real ROS
graph: no node crashes, and nothing unsafe (NaN, out of limits, over the step limit) is ever
published on a command topic."""
from __future__ import annotations

import math
import string

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Header, String

from pi0_ros.msg import ActionChunk, Observation
from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.ros.conversions import sec_to_stamp
from pi0_ros.ros.executor_node import ExecutorNode
from pi0_ros.ros.observation_node import ObservationNode
from pi0_ros.ros.policy_node import PolicyNode

from harness import FakeRobot, Graph, make_chunk, mid_state, now

pytestmark = [pytest.mark.ros, pytest.mark.slow]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
WEIRD = [math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, 1e-300]


def rand_floats(rng, n):
    return [float(rng.choice(WEIRD)) if rng.random() < 0.3 else float(rng.normal() * 10 ** rng.integers(0, 4))
            for _ in range(n)]


def rand_str(rng, k=8):
    return "".join(rng.choice(list(string.ascii_letters + "_/ ")) for _ in range(int(rng.integers(0, k))))


def random_image(rng, stamp):
    enc = str(rng.choice(["rgb8", "bgr8", "mono8", "mono16", "16UC1", "rgba8", "yuv422", "", "32FC1", "bayer_rggb8"]))
    h, w = int(rng.integers(0, 40)), int(rng.integers(0, 40))
    msg = Image(height=h, width=w, encoding=enc, step=int(rng.integers(0, 200)), is_bigendian=int(rng.integers(0, 2)))
    msg.header.stamp = stamp
    msg.data = rng.integers(0, 255, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
    return msg


def random_chunk(rng, emb, t):
    h, d = int(rng.integers(0, 60)), int(rng.choice([0, 1, emb.num_dims, emb.num_dims, 40]))
    acts = np.array(rand_floats(rng, h * d)).reshape(h, d) if h * d else np.zeros((h, d))
    # Stamps near now, and sometimes far in the future or the past (a wrong clock, a replay).
    stamp = t + rng.normal() * 0.5 + float(rng.choice([0.0, 0.0, 0.0, 3600.0, -3600.0, 1e9]))
    msg = make_chunk(emb, acts if h * d else np.zeros((1, emb.num_dims)), stamp, int(rng.integers(0, 5)),
                     dt=float(rng.choice([emb.dt, emb.dt, 0.0, -0.1, math.nan])))
    if h * d == 0:
        msg.actions = []
    if rng.random() < 0.3:
        msg.embodiment = rand_str(rng)
    if rng.random() < 0.3:
        msg.joint_names = [rand_str(rng) for _ in range(int(rng.integers(0, 20)))]
    if rng.random() < 0.2:
        msg.actions = msg.actions[: int(rng.integers(0, max(1, len(msg.actions))))]
    return msg


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_fuzz_every_subscriber(seed):
    g = Graph()
    try:
        _run(g, seed)
    finally:
        g.close()


def _run(g: Graph, seed: int) -> None:
    from pi0_ros.policy import Policy

    name = "mobile_trossen_arx"  # has every input kind: cameras, two joint sources, odometry
    emb = load_embodiment(name)
    robot = FakeRobot(g, emb, mid_state(emb), joint_rate=100, camera_rate=10)
    obs = g.add(ObservationNode(**g.params(embodiment=name, prompt="fuzz")))
    pol = g.add(PolicyNode(policy=Policy.tiny_random(seed=0), **g.params(embodiment=name, trigger="continuous",
                                                                         warmup_runs=0)))
    ex = g.add(ExecutorNode(**g.params(embodiment=name, dry_run=False)))
    fz = g.node("fuzzer")
    from nav_msgs.msg import Odometry

    pubs = {
        "image": [fz.create_publisher(Image, c.topic, qos_profile_sensor_data) for c in emb.cameras],
        "joints": [fz.create_publisher(JointState, t, qos_profile_sensor_data) for t in emb.joint_state_sources.values()],
        "odom": fz.create_publisher(Odometry, emb.odometry_topic, qos_profile_sensor_data),
        "chunk": fz.create_publisher(ActionChunk, "/action_chunk", RELIABLE),
        "obs": fz.create_publisher(Observation, "/observation", QoSProfile(depth=2)),
        "estop": fz.create_publisher(Bool, "/estop", RELIABLE),
        "prompt": fz.create_publisher(String, "/prompt", RELIABLE),
        "request": fz.create_publisher(Header, "/chunk_request", RELIABLE),
    }
    assert g.wait_for(lambda: pubs["chunk"].get_subscription_count() > 0 and len(robot.commanded) > 3, 10)
    rng = np.random.default_rng(seed)
    ticks_before = ex.ticks
    for k in range(400):
        t = now(fz)
        stamp = sec_to_stamp(t + rng.normal() * 0.2)
        kind = rng.integers(0, 9)
        if kind == 0:
            pubs["image"][int(rng.integers(0, len(pubs["image"])))].publish(random_image(rng, stamp))
        elif kind == 1:  # a valid frame with a wild stamp (future/past)
            img = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
            img.header.stamp = sec_to_stamp(t + float(rng.choice([-1e6, 1e6, 0.0, -5.0])))
            pubs["image"][0].publish(img)
        elif kind == 2:
            n = int(rng.integers(0, 10))
            names = [str(rng.choice(["waist", "shoulder", "elbow", "gripper", rand_str(rng)])) for _ in range(n)]
            js = JointState(name=names, position=rand_floats(rng, int(rng.integers(0, 10))))
            js.header.stamp = stamp
            pubs["joints"][int(rng.integers(0, 2))].publish(js)
        elif kind == 3:
            od = Odometry()
            od.header.stamp = stamp
            od.twist.twist.linear.x, od.twist.twist.angular.z = rand_floats(rng, 2)
            pubs["odom"].publish(od)
        elif kind == 4:
            pubs["chunk"].publish(random_chunk(rng, emb, t))
        elif kind == 5:
            o = Observation(embodiment=str(rng.choice([name, rand_str(rng)])), sequence=int(rng.integers(0, 1000)))
            o.header.stamp = stamp
            o.camera_slots = [rand_str(rng) for _ in range(int(rng.integers(0, 4)))]
            o.images = [random_image(rng, stamp) for _ in range(int(rng.integers(0, 4)))]
            o.image_valid = [bool(rng.integers(0, 2)) for _ in range(int(rng.integers(0, 4)))]
            o.state_names = emb.dim_names if rng.random() < 0.5 else [rand_str(rng)]
            o.state = rand_floats(rng, int(rng.integers(0, 20)))
            pubs["obs"].publish(o)
        elif kind == 6:
            pubs["prompt"].publish(String(data=rand_str(rng, 100)))
            pubs["request"].publish(Header(stamp=stamp))
        elif kind == 7:
            pubs["estop"].publish(Bool(data=bool(rng.random() < 0.1)))
        else:  # a valid split JointState: some of a source's joints, from another "driver"
            src = str(rng.choice(list(emb.joint_state_sources)))
            dims = [(i, d) for i, d in enumerate(emb.dims) if d.source == src]
            pick = [dims[j] for j in sorted(rng.choice(len(dims), int(rng.integers(1, len(dims) + 1)), replace=False))]
            js = JointState(name=[d.joint for _, d in pick], position=[float(robot.state[i]) for i, _ in pick])
            js.header.stamp = stamp
            pubs["joints"][list(emb.joint_state_sources).index(src)].publish(js)
        if k % 20 == 0:
            g.wait_for(lambda: False, 0.05)
    g.wait_for(lambda: False, 1.0)
    # Alive: the control loop kept ticking, the policy worker and node callbacks survived.
    assert ex._thread.is_alive() and ex.ticks > ticks_before + 40
    assert pol._thread.is_alive()
    # Safe: every command finite, within limits and within the per-tick step limit.
    vals = np.array([v for _, v in robot.commanded])
    assert np.all(np.isfinite(vals))
    assert np.all(vals >= emb.lower - 1e-9) and np.all(vals <= emb.upper + 1e-9)
    pos = np.array([not k.startswith("base_") for k in emb.kinds])
    steps = np.abs(np.diff(vals, axis=0))
    ok = steps <= (emb.max_velocity / emb.control_rate_hz) + 1e-9  # base dims: acceleration limit
    ok[:, ~pos] |= vals[1:, ~pos] == 0.0  # an e-stop may stop the base at once
    assert np.all(ok)
    assert ex.tick_errors == 0
    for o in emb.outputs:
        for _, m in robot.commands[o.name]:
            tw = getattr(m, "twist", m)  # TwistStamped or Twist
            data = np.array(m.data) if hasattr(m, "data") else np.array([tw.linear.x, tw.angular.z])
            assert np.all(np.isfinite(data))
    assert sum(ex.core.rejected.values()) > 10 and sum(obs.rejected.values()) > 10
