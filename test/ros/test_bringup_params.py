"""Safe by default and --params-file: the executor node and `pi0-ros bringup` are dry runs
unless told `dry_run false`; a ROS 2 parameters YAML reaches the nodes, below the options."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy

from pi0_ros.cli import build_parser
from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.ros.bringup import Bringup, load_params_file, resolve

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[2]


class StubPolicy:
    """The Policy interface without a model (these tests never infer)."""

    random_weights = False
    action_dim = 32

    def warmup(self, n: int = 0) -> list:
        return []

    def infer(self, inp, noise=None):
        raise RuntimeError("not used")


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _robot_publishers(node, emb) -> int:
    return sum(len(node.get_publishers_info_by_topic(o.topic)) for o in emb.outputs)


def test_executor_node_defaults_to_dry_run(context):
    from rclpy.parameter import Parameter

    from pi0_ros.ros.executor_node import ExecutorNode

    emb = load_embodiment("trossen_bimanual")
    dry = ExecutorNode(context=context)
    live = ExecutorNode(context=context, namespace="live", parameter_overrides=[Parameter("dry_run", value=False)])
    try:
        assert dry.params["dry_run"] is True and dry.commands.dry_run
        assert _robot_publishers(live, emb) == len(emb.outputs)  # the check can see publishers ...
        assert _robot_publishers(dry, emb) == len(emb.outputs)   # ... and they are all the live node's
    finally:
        dry.destroy_node()
        live.destroy_node()


def _args(*argv: str):
    return build_parser().parse_args(["bringup", *argv])


def test_bringup_is_dry_run_unless_told_false():
    assert Bringup("trossen_bimanual").dry_run is True
    assert resolve(_args(), {})["dry_run"] is True
    assert resolve(_args("--dry-run", "true"), {})["dry_run"] is True
    assert resolve(_args("--dry-run", "false"), {})["dry_run"] is False
    # A params file cannot make it live (as in the launch file, the argument wins).
    assert resolve(_args(), {"executor": {"dry_run": False}})["dry_run"] is True


def test_load_params_file_per_node_and_wildcard(tmp_path):
    roles, unknown = load_params_file(ROOT / "config" / "params" / "ur5e.yaml")
    assert {roles[r]["embodiment"] for r in ("observation", "policy", "executor", "viz")} == {"ur5e"}
    assert roles["policy"]["warmup_runs"] == 2 and unknown == []
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    embodiment: franka\n"
                 "/pi0_executor:\n  ros__parameters:\n    execute_steps: 7\n"
                 "pi0_sim:\n  ros__parameters:\n    seed: 3\n"
                 "someone_else:\n  ros__parameters:\n    x: 1\n")
    roles, unknown = load_params_file(f)
    assert roles["executor"] == {"embodiment": "franka", "execute_steps": 7}
    assert roles["observation"] == {"embodiment": "franka"} and roles["sim"] == {"embodiment": "franka", "seed": 3}
    assert unknown == ["someone_else"]
    # Options given on the command line win over the file, the file over the built-in defaults.
    files = {"policy": {"trigger": "continuous", "embodiment": "franka"}}
    assert resolve(_args(), files)["trigger"] == "continuous" and resolve(_args(), files)["embodiment"] == "franka"
    assert resolve(_args("--trigger", "request", "--embodiment", "ur5e"), files)["trigger"] == "request"
    assert resolve(_args("--embodiment", "ur5e"), files)["embodiment"] == "ur5e"
    f.write_text("pi0_policy:\n  no_ros_parameters: {}\n")
    with pytest.raises(ValueError, match="ros__parameters"):
        load_params_file(f)


def test_bringup_applies_file_params_below_its_own(context):
    b = Bringup("ur5e", policy=StubPolicy(), context=context,
                file_params={"executor": {"execute_steps": 7, "dry_run": False, "embodiment": "franka"},
                             "observation": {"publish_rate_hz": 5.0}})
    try:
        b.start()
        ex, obs = b.nodes["executor"], b.nodes["observation"]
        assert ex.core.scheduler.execute_steps == 7                  # from the file
        assert obs.get_parameter("publish_rate_hz").value == 5.0
        assert ex.embodiment.name == "ur5e"                          # Bringup's own fields win
        assert ex.params["dry_run"] is True and ex.commands.dry_run  # the file cannot make it live
    finally:
        b.stop()


@pytest.mark.slow
def test_bringup_cli_params_file_and_dry_run_log():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "pi0_ros.cli", "bringup", "--duration", "2", "--params-file",
                          str(ROOT / "config" / "params" / "ur5e.yaml")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "executor for ur5e" in log and "DRY RUN" in log and "LIVE" not in log, log[-3000:]
