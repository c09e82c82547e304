"""The policy and executor nodes take a checkpoint's inference.json unless a parameter says
otherwise: `checkpoint:=DIR` alone runs the checkpoint as it was validated (real-time chunking,
noise scale, Euler steps, execute_steps), a parameter given to the node wins, and the parameters
files that `ros2 launch` passes do not hide the checkpoint's settings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from pi0_ros import camera_views
from pi0_ros.msg import PolicyStatus
from pi0_ros.ros.common import given_parameters
from pi0_ros.ros.executor_node import ExecutorNode
from pi0_ros.ros.policy_node import PolicyNode

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "pi0_sim_aloha_pick_cube"
PARAMS = ROOT / "config" / "params" / "trossen_bimanual.yaml"


class StubPolicy:
    random_weights = False
    action_dim = 32

    def warmup(self, n: int = 0) -> list:
        return []


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """The shipped model with other settings than anything's default (execute_steps 7, 3 Euler steps)."""
    d = tmp_path / "ckpt"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.model", "assets"):
        (d / f).symlink_to(SHIPPED / f)
    (d / "inference.json").write_text(json.dumps({"realtime_chunking": True, "noise_scale": 0.0, "execute_steps": 7,
                                                  "num_steps": 3}))
    return d


class Context:
    """An rclpy context (optionally with command-line arguments) and the nodes made in it."""

    def __init__(self, args: list[str] | None = None) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=args)
        self.nodes: list[Node] = []

    def make(self, cls, *args, policy=None, **params):
        kw = {"policy": policy} if policy is not None else {}
        node = cls(*args, context=self.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
                   **kw)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for n in reversed(self.nodes):
            n.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def ctx():
    c = Context()
    yield c
    c.close()


def _ready(node: PolicyNode, timeout: float = 60.0) -> None:
    import time

    end = time.monotonic() + timeout
    while node.status_msg.state not in (PolicyStatus.READY, PolicyStatus.ERROR) and time.monotonic() < end:
        time.sleep(0.05)
    assert node.status_msg.state == PolicyStatus.READY, node.status_msg.last_error


def test_given_parameters_tells_overrides_from_defaults(ctx):
    node = ctx.make(Node, "probe", noise_scale=1.0)
    assert given_parameters(node, ["noise_scale", "realtime_chunking"]) == {"noise_scale"}


def test_policy_node_with_only_the_shipped_checkpoint_runs_its_validated_settings(ctx):
    node = ctx.make(PolicyNode, checkpoint=str(SHIPPED), warmup_runs=0)
    _ready(node)
    assert node.rtc is not None                               # real-time chunking on
    assert node.policy.noise_scale == 0.0 and node.policy.num_steps == 10
    assert node.get_parameter("realtime_chunking").value is True   # `ros2 param get` shows what runs
    assert node.get_parameter("noise_scale").value == 0.0
    assert node.inference["noise_scale"].source == f"checkpoint {SHIPPED / 'inference.json'}"


def test_an_explicit_parameter_wins_over_the_checkpoint(ctx, checkpoint):
    node = ctx.make(PolicyNode, checkpoint=str(checkpoint), warmup_runs=0, realtime_chunking=False, noise_scale=1.0)
    _ready(node)
    assert node.rtc is None
    assert node.policy.noise_scale == 1.0                      # given, although it is the default
    assert node.policy.num_steps == 3                          # not given: the checkpoint's
    assert node.inference["realtime_chunking"].source == "parameter"
    assert node.inference["num_steps"].source.startswith("checkpoint")


def test_without_a_file_the_defaults_apply(ctx):
    node = ctx.make(PolicyNode, policy=StubPolicy())
    assert node.rtc is None and node.params["noise_scale"] == 1.0 and node.params["num_steps"] == 10
    assert {s.source for s in node.inference.values()} == {"default"}
    ex = ctx.make(ExecutorNode)
    assert ex.core.scheduler.execute_steps == ex.embodiment.execute_steps == 25
    assert ex.execute_steps.source == "embodiment trossen_bimanual"


def test_executor_takes_execute_steps_from_the_checkpoint_unless_given(ctx, checkpoint):
    ex = ctx.make(ExecutorNode, checkpoint=str(checkpoint))
    assert ex.core.scheduler.execute_steps == 7 and ex.execute_steps.source.startswith("checkpoint")
    assert ex.get_parameter("execute_steps").value == 7
    given = ctx.make(ExecutorNode, checkpoint=str(checkpoint), execute_steps=5)
    assert given.core.scheduler.execute_steps == 5 and given.execute_steps.source == "parameter"


def test_as_ros2_launch_passes_them_the_params_file_does_not_hide_the_checkpoint(checkpoint, tmp_path):
    """pi0.launch.py gives both nodes config/params/<embodiment>.yaml and checkpoint:=DIR."""
    c = Context(["pi0", "--ros-args", "--params-file", str(PARAMS), "-p", f"checkpoint:={checkpoint}"])
    try:
        pol = c.make(PolicyNode, warmup_runs=0)
        ex = c.make(ExecutorNode)
        _ready(pol)
        assert pol.rtc is not None and pol.policy.noise_scale == 0.0 and pol.policy.num_steps == 3
        assert ex.core.scheduler.execute_steps == 7
    finally:
        c.close()
    # A value the user puts in a parameters file wins.
    own = tmp_path / "own.yaml"
    own.write_text("pi0_policy:\n  ros__parameters:\n    realtime_chunking: false\n    noise_scale: 0.5\n"
                   "pi0_executor:\n  ros__parameters:\n    execute_steps: 10\n")
    c = Context(["pi0", "--ros-args", "--params-file", str(PARAMS), "--params-file", str(own),
                 "-p", f"checkpoint:={checkpoint}"])
    try:
        pol = c.make(PolicyNode, policy=StubPolicy())
        ex = c.make(ExecutorNode)
        assert pol.rtc is None and pol.params["noise_scale"] == 0.5 and pol.params["num_steps"] == 3
        assert ex.core.scheduler.execute_steps == 10
    finally:
        c.close()


def test_bringup_gives_the_executor_the_checkpoint(checkpoint):
    from pi0_ros.ros.bringup import Bringup

    c = Context()
    b = Bringup("trossen_bimanual", checkpoint=str(checkpoint), policy=StubPolicy(), context=c.context)
    try:
        b.start()
        assert b.nodes["executor"].core.scheduler.execute_steps == 7
        assert b.nodes["policy"].rtc is not None
    finally:
        b.stop()
        c.close()


def test_an_invalid_file_stops_both_nodes(ctx, tmp_path):
    (tmp_path / "inference.json").write_text(json.dumps({"noise_scale": 2}))
    with pytest.raises(ValueError, match="noise_scale must be a number within"):
        ctx.make(PolicyNode, checkpoint=str(tmp_path), policy=StubPolicy())
    with pytest.raises(ValueError, match="noise_scale must be a number within"):
        ctx.make(ExecutorNode, checkpoint=str(tmp_path))


def test_policy_node_leaves_cores_to_the_rest_by_default(ctx):
    import os

    import torch

    before = torch.get_num_threads()
    try:
        ctx.make(PolicyNode, policy=StubPolicy())
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 2)   # auto
        ctx.make(PolicyNode, policy=StubPolicy(), torch_threads=3)
        assert torch.get_num_threads() == 3                                      # given
    finally:
        torch.set_num_threads(before)


def test_policy_node_refuses_a_checkpoint_trained_on_other_camera_views(ctx, tmp_path, cropped_ur5e):
    """An embodiment that crops the top camera; a checkpoint trained on its whole frame must not run on it
    (refused before the model loads: no weights needed here)."""
    d = tmp_path / "ckpt"
    camera_views.save(d / "assets" / "ur5e", {"base_0_rgb": None, "left_wrist_0_rgb": None})
    with pytest.raises(camera_views.CameraViewMismatch, match="base_0_rgb: trained on the whole frame, the embodiment "
                                                              "gives crop \\[0.2, 0.25, 0.5, 0.5\\]"):
        ctx.make(PolicyNode, embodiment=cropped_ur5e, checkpoint=str(d), warmup_runs=0)
