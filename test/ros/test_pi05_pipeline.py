"""π0.5 checkpoints drive the ROS pipeline end to end: a tiny π0.5 with random weights is written
in the openpi layout and in the LeRobot layout, and the policy node loads each from its
``checkpoint`` parameter alone (config.json says the family; nothing else is configured)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rclpy.qos import QoSProfile, ReliabilityPolicy
from safetensors.torch import load_file, save_file

from pi0_ros.model import PI0Model, get_preset
from pi0_ros.model.checkpoint import EMBED_KEY, LM_HEAD_KEY
from pi0_ros.model.normalize import NormStats
from pi0_ros.model.tokenizer import tiny_tokenizer
from pi0_ros.msg import ActionChunk, Observation
from pi0_ros.policy import save_policy_checkpoint
from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.ros.executor_node import ExecutorNode
from pi0_ros.ros.observation_node import ObservationNode
from pi0_ros.ros.policy_node import PolicyNode

from harness import FakeRobot, Graph, mid_state

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
EMBODIMENT = "trossen_bimanual"


def write_tiny_pi05_checkpoint(directory, layout: str, asset_id: str, dims: int, seed: int = 0):
    """A pi05_tiny checkpoint with random weights (non-zero adaRMS gates, so the prompt and the
    images matter), the tiny tokenizer and quantile statistics; weights in ``layout``:
    "openpi" (bare keys, tied embedding stored only as lm_head, unused expert lm_head) or
    "lerobot" (every key under ``model.``)."""
    torch.manual_seed(seed)
    config = get_preset("pi05_tiny")
    model = PI0Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".dense." in name:
                p.normal_(0.0, 0.05)
    rng = np.random.default_rng(seed)
    q01 = -1.0 - rng.random(dims)
    stats = {k: NormStats(mean=np.zeros(dims), std=np.ones(dims), q01=q01, q99=q01 + 2.5) for k in ("state", "actions")}
    save_policy_checkpoint((model, tiny_tokenizer(max_len=config.max_token_len)), directory, asset_id=asset_id,
                           norm_stats=stats)
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    if layout == "openpi":
        state[LM_HEAD_KEY] = state.pop(EMBED_KEY)
        state["paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.zeros(config.vocab_size, config.expert.width)
    elif layout == "lerobot":
        state = {"model." + k: v for k, v in state.items()}
    else:
        raise ValueError(layout)
    save_file(state, str(weights))
    assert json.loads((directory / "config.json").read_text())["family"] == "pi05"
    return model


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


@pytest.mark.parametrize("layout", ["openpi", "lerobot"])
def test_pi05_checkpoint_drives_the_pipeline(graph, tmp_path, layout):
    emb = load_embodiment(EMBODIMENT)
    write_tiny_pi05_checkpoint(tmp_path, layout, emb.asset_id, dims=emb.num_dims)
    robot = FakeRobot(graph, emb, mid_state(emb), joint_rate=100, camera_rate=15, camera_shape=(120, 160))
    obs_node = graph.add(ObservationNode(**graph.params(embodiment=EMBODIMENT, prompt="pick up the red cube")))
    pol = graph.add(PolicyNode(**graph.params(embodiment=EMBODIMENT, checkpoint=str(tmp_path), trigger="continuous",
                                              warmup_runs=1)))
    ex = graph.add(ExecutorNode(**graph.params(embodiment=EMBODIMENT)))
    chunks, observations = [], []
    robot.node.create_subscription(ActionChunk, "/action_chunk", chunks.append, RELIABLE)
    robot.node.create_subscription(Observation, "/observation", observations.append, QoSProfile(depth=50))
    assert graph.wait_for(lambda: len(chunks) >= 3, 60), (obs_node.last_reason, pol.status_msg)

    policy = pol.policy
    assert policy.config.family == "pi05" and policy.config.max_token_len == 200
    assert policy.normalizer.mode == "quantile"  # π0.5's default, from config.json alone
    assert not pol.status_msg.random_weights
    for c in chunks:
        assert (c.chunk_size, c.action_dim) == (50, emb.num_dims) and list(c.joint_names) == emb.dim_names
        assert np.all(np.isfinite(c.actions)) and c.prompt == "pick up the red cube"
    # the prompt carries the state: tokens of the latest observation decode to openpi's format
    state = emb.padded_state(np.asarray(observations[-1].state, dtype=np.float64), policy.action_dim)
    from pi0_ros.policy import PolicyInput

    inputs = policy.make_inputs(PolicyInput(images={}, state=state, prompt="pick up the red cube"))
    text = policy.tokenizer.decode(inputs.tokens[0].numpy(), inputs.token_masks[0].numpy())
    assert text.startswith("Task: pick up the red cube, State: ") and text.endswith(";\nAction: ")
    assert len(text.split("State: ")[1].split(";")[0].split()) == emb.num_dims  # the robot's dims only
    # the executor runs the chunks
    assert graph.wait_for(lambda: ex.core.scheduler.counters.actions_executed > 10, 20)
    assert all(np.all(np.isfinite(v)) for _, v in robot.commanded)
