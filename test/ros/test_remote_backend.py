"""The policy node with `backend: remote` against `pi0-ros serve` on real DDS: chunks flow like
local ones; a killed server turns the status to ERROR with the reason, publishes nothing, the
executor holds; a restarted server is picked up again."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy

from pi0_ros.msg import ActionChunk, PolicyStatus
from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.ros.conversions import stamp_to_sec
from pi0_ros.ros.executor_node import ExecutorNode
from pi0_ros.ros.observation_node import ObservationNode
from pi0_ros.ros.policy_node import PolicyNode
from pi0_ros.serving.client import RemotePolicy
from pi0_ros.serving.process import ServeProcess

from harness import FakeRobot, Graph, mid_state, now

pytestmark = [pytest.mark.ros, pytest.mark.slow]
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
SERVE_ARGS = ["--warmup", "1", "--torch-threads", "1"]


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def test_remote_backend_end_to_end_then_server_killed_and_restarted(graph):
    name = "trossen_bimanual"
    emb = load_embodiment(name)
    server = ServeProcess(SERVE_ARGS).start()
    try:
        port = int(server.uri.rsplit(":", 1)[1])
        robot = FakeRobot(graph, emb, mid_state(emb), joint_rate=100, camera_rate=15, camera_shape=(120, 160))
        graph.add(ObservationNode(**graph.params(embodiment=name, prompt="pick up the red cube")))
        pol = graph.add(PolicyNode(**graph.params(embodiment=name, trigger="request", warmup_runs=1, backend="remote",
                                                  server_uri=server.uri, request_timeout=10.0)))
        ex = graph.add(ExecutorNode(**graph.params(embodiment=name)))
        chunks, status = [], []
        robot.node.create_subscription(ActionChunk, "/action_chunk", chunks.append, RELIABLE)
        robot.node.create_subscription(PolicyStatus, "/pi0_policy/status", status.append, RELIABLE)

        assert graph.wait_for(lambda: len(chunks) >= 3, 60), pol.status_msg
        assert isinstance(pol.policy, RemotePolicy) and pol.policy.key_set.name == "pi0_ros"
        assert pol.status_msg.checkpoint == server.uri and pol.status_msg.random_weights   # the server says so
        for c in chunks:
            assert (c.chunk_size, c.action_dim, c.dt) == (50, emb.num_dims, emb.dt)
            assert list(c.joint_names) == emb.dim_names and np.all(np.isfinite(c.actions))
            assert c.latency_ms >= c.inference_ms > 0          # latency from t_obs, model time from the server
        assert graph.wait_for(lambda: ex.core.scheduler.counters.actions_executed > 10, 10)

        server.kill()
        t_kill = now(robot.node)
        assert graph.wait_for(lambda: pol.status_msg.state == PolicyStatus.ERROR, 15), pol.status_msg
        assert "lost" in pol.status_msg.last_error or "cannot connect" in pol.status_msg.last_error
        assert graph.wait_for(lambda: any(s.state == PolicyStatus.ERROR and s.last_error for s in status), 5)
        n_dead = len(chunks)
        holds = ex.core.safety.counters.get("hold", 0)
        graph.wait_for(lambda: False, 3.0)                     # the executor runs out of chunk and holds
        assert len(chunks) == n_dead                           # nothing published while the server is down
        assert all(stamp_to_sec(c.header.stamp) < t_kill for c in chunks)
        assert ex.core.safety.counters.get("hold", 0) > holds

        server = ServeProcess(SERVE_ARGS, port=port).start()
        assert graph.wait_for(lambda: len(chunks) > n_dead + 1, 60), pol.status_msg
        assert graph.wait_for(lambda: pol.status_msg.state in (PolicyStatus.READY, PolicyStatus.INFERRING), 10)
        assert stamp_to_sec(chunks[-1].header.stamp) > t_kill
    finally:
        server.stop()


def test_eval_remote_runs_the_simulator_through_pi0_ros_serve(capsys):
    """`pi0-ros eval --remote`: serve in a child process, the sim pipeline as its client."""
    import argparse
    import json
    from pathlib import Path

    from pi0_ros import evaluation

    ckpt = Path(__file__).resolve().parents[2] / "checkpoints" / "pi0_sim_aloha_pick_cube"
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(ckpt), "--episodes", "1", "--max-time", "1.5", "--remote",
                              "--realtime-chunking", "--noise-scale", "0", "--json"])
    assert evaluation.run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["remote"].startswith("ws://127.0.0.1:") and summary["episodes"] == 1
    assert summary["per_episode"][0]["chunks"] >= 1


def test_unknown_backend_is_refused(graph):
    with pytest.raises(ValueError, match="backend must be 'local' or 'remote'"):
        PolicyNode(**graph.params(embodiment="trossen_bimanual", backend="grpc"))
