"""Observation + policy + executor nodes end to end on a real ROS graph with a synthetic robot
(cameras + joint states) and the tiny random-weight pi0."""
from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from pi0_ros.msg import ActionChunk, Observation, PolicyStatus
from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.ros.conversions import stamp_to_sec
from pi0_ros.ros.executor_node import ExecutorNode
from pi0_ros.ros.observation_node import ObservationNode
from pi0_ros.ros.policy_node import PolicyNode
from pi0_ros.srv import SetPrompt

from harness import FakeRobot, Graph, mid_state, now

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def tiny_policy():
    from pi0_ros.policy import Policy

    return Policy.tiny_random(seed=0, num_cameras=3)


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def bring_up(graph, policy, name="trossen_bimanual", trigger="continuous", **obs_params):
    emb = load_embodiment(name)
    robot = FakeRobot(graph, emb, mid_state(emb), joint_rate=100, camera_rate=15, camera_shape=(120, 160))
    obs_node = graph.add(ObservationNode(**graph.params(embodiment=name, prompt="pick up the red cube", **obs_params)))
    pol = graph.add(PolicyNode(policy=policy, **graph.params(embodiment=name, trigger=trigger, warmup_runs=1)))
    ex = graph.add(ExecutorNode(**graph.params(embodiment=name)))
    seen = {"obs": [], "chunks": [], "status": [], "diag": []}
    n = robot.node
    n.create_subscription(Observation, "/observation", seen["obs"].append, QoSProfile(depth=50))
    n.create_subscription(ActionChunk, "/action_chunk", seen["chunks"].append, RELIABLE)
    n.create_subscription(PolicyStatus, "/pi0_policy/status", seen["status"].append, RELIABLE)
    n.create_subscription(DiagnosticArray, "/diagnostics", seen["diag"].append, RELIABLE)
    return emb, robot, obs_node, pol, ex, seen


def test_chunks_flow_stamped_with_observation_time(graph, tiny_policy):
    emb, robot, obs_node, pol, ex, seen = bring_up(graph, tiny_policy)
    assert graph.wait_for(lambda: len(seen["chunks"]) >= 3, 30), (obs_node.last_reason, pol.status_msg)
    obs_by_seq = {o.sequence: o for o in seen["obs"]}
    for c in seen["chunks"]:
        o = obs_by_seq.get(c.observation_sequence)
        if o is None:
            continue
        assert stamp_to_sec(c.header.stamp) == stamp_to_sec(o.header.stamp)  # stamp = t_obs
        # t_obs is the newest synchronised input stamp.
        assert stamp_to_sec(o.header.stamp) == max(stamp_to_sec(t) for t in o.input_stamps)
        assert c.embodiment == emb.name and list(c.joint_names) == emb.dim_names
        assert (c.chunk_size, c.action_dim, c.dt) == (50, emb.num_dims, emb.dt)
        assert np.all(np.isfinite(c.actions)) and c.prompt == "pick up the red cube"
        assert c.latency_ms >= c.inference_ms > 0
    o = seen["obs"][-1]
    assert list(o.image_valid) == [True, True, True] and o.images[0].width == 224 and o.images[0].height == 224
    assert pol.status_msg.random_weights and pol.status_msg.chunks_produced >= 3
    # The executor executes them: commands are published and finite.
    assert graph.wait_for(lambda: ex.core.scheduler.counters.actions_executed > 10, 10)
    assert all(np.all(np.isfinite(v)) for _, v in robot.commanded)


def test_request_trigger_paces_chunks(graph, tiny_policy):
    """In request mode the policy infers only when the executor asks for the next chunk."""
    emb, robot, obs_node, pol, ex, seen = bring_up(graph, tiny_policy, trigger="request")
    assert graph.wait_for(lambda: len(seen["chunks"]) >= 4, 30)
    t = [stamp_to_sec(c.header.stamp) for c in seen["chunks"][-3:]]
    # ~execute_steps*dt = 0.5 s apart minus latency, not back-to-back every ~50 ms.
    assert min(np.diff(t)) > 0.25, np.diff(t)
    assert ex.core.scheduler.counters.switched >= 3


def test_prompt_change_takes_effect_on_next_chunk(graph, tiny_policy):
    emb, robot, obs_node, pol, ex, seen = bring_up(graph, tiny_policy)
    assert graph.wait_for(lambda: len(seen["chunks"]) >= 1, 30)
    prompt_pub = robot.node.create_publisher(String, "/prompt", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    prompt_pub.publish(String(data="pick up the blue cube"))
    assert graph.wait_for(lambda: seen["chunks"][-1].prompt == "pick up the blue cube", 10)
    cli = robot.node.create_client(SetPrompt, "/pi0_observation/set_prompt")
    assert cli.wait_for_service(timeout_sec=5)
    fut = cli.call_async(SetPrompt.Request(prompt="wave"))
    assert graph.wait_for(fut.done, 5) and fut.result().success
    assert graph.wait_for(lambda: seen["chunks"][-1].prompt == "wave", 10)


def test_stale_camera_pauses_policy_with_diagnostic(graph, tiny_policy):
    emb, robot, obs_node, pol, ex, seen = bring_up(graph, tiny_policy)
    assert graph.wait_for(lambda: len(seen["chunks"]) >= 1, 30)
    robot.cameras_alive = False  # camera driver dies
    graph.wait_for(lambda: False, 1.0)  # > camera_max_age (0.5 s)
    n_chunks = len(seen["chunks"])
    t_dead = now(robot.node)
    graph.wait_for(lambda: False, 1.5)
    # No chunk from an observation taken after the camera died.
    late = [c for c in seen["chunks"][n_chunks:] if stamp_to_sec(c.header.stamp) > t_dead]
    assert late == []
    diag = [s for d in seen["diag"] for s in d.status if "observation" in s.name and s.level != b"\x00"]
    assert diag and "late" in diag[-1].message and "camera:base_0_rgb" in diag[-1].message, \
        [(s.name, s.message) for d in seen["diag"] for s in d.status]
    # The executor runs out of chunk and holds.
    assert graph.wait_for(lambda: ex.last_result is not None and ex.last_result.held, 3)


def test_policy_never_uses_old_observation(graph, tiny_policy):
    emb, robot, obs_node, pol, ex, seen = bring_up(graph, tiny_policy)
    assert graph.wait_for(lambda: len(seen["chunks"]) >= 1, 30)
    pol.params["max_observation_age"] = 0.0  # every observation is now too old
    n = len(seen["chunks"])
    graph.wait_for(lambda: False, 1.0)
    assert len(seen["chunks"]) <= n + 1  # at most the one already in flight
    assert pol.status_msg.observations_rejected > 0
    assert pol.status_msg.state == PolicyStatus.PAUSED and "too old" in pol.status_msg.last_error


class GuideRecorder:
    """The tiny policy, recording the real-time chunking guide of every call."""

    def __init__(self, policy):
        self.policy, self.calls = policy, []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def infer(self, inp, noise=None):
        out = self.policy.infer(inp, noise)
        self.calls.append((inp.stamp, inp.guide, out.actions))
        return out


def test_realtime_chunking_continues_the_previous_chunk_until_reset(graph, tiny_policy):
    rec = GuideRecorder(tiny_policy)
    emb = load_embodiment("trossen_bimanual")
    FakeRobot(graph, emb, mid_state(emb), joint_rate=100, camera_rate=15, camera_shape=(120, 160))
    graph.add(ObservationNode(**graph.params(embodiment=emb.name, prompt="pick up the red cube")))
    pol = graph.add(PolicyNode(policy=rec, **graph.params(embodiment=emb.name, trigger="request", warmup_runs=1,
                                                          realtime_chunking=True)))
    graph.add(ExecutorNode(**graph.params(embodiment=emb.name)))
    assert graph.wait_for(lambda: len(rec.calls) >= 3, 30)
    (t0, g0, _), (t1, g1, a0) = rec.calls[0], rec.calls[1]
    assert g0 is None                                       # nothing to continue yet
    assert g1 is not None
    offset = round((t1 - t0) / emb.dt)
    overlap = 50 - offset
    np.testing.assert_allclose(g1.actions[:overlap], rec.calls[0][2][offset:])  # same time slots
    assert g1.weights[0] == 1 and np.all(g1.weights[overlap:] == 0)        # latency frozen, rest free
    n = len(rec.calls)
    pol.reset_chunking()                                     # new episode
    assert graph.wait_for(lambda: len(rec.calls) >= n + 3, 30)
    # The chunk started after the reset (the one in flight during it may still continue) is free.
    fresh = [i for i in (n, n + 1) if rec.calls[i][1] is None]
    assert fresh and rec.calls[fresh[0] + 1][1] is not None
