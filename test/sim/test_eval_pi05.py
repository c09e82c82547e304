"""`pi0-ros eval` with a π0.5 checkpoint: the simulator, the ROS nodes and the policy node loading
the checkpoint by its directory alone (config.json says π0.5)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pi0_ros.cli import main as cli_main
from pi0_ros.model.normalize import NormStats
from pi0_ros.policy import Policy, save_policy_checkpoint
from pi0_ros.robots.embodiment import load_embodiment

pytestmark = pytest.mark.ros


def test_eval_runs_a_pi05_checkpoint(tmp_path, capsys):
    emb = load_embodiment("trossen_bimanual")
    policy = Policy.tiny_random(seed=0, num_cameras=1, family="pi05")
    n = emb.num_dims
    stats = {k: NormStats(mean=np.zeros(n), std=np.ones(n), q01=emb.lower.copy(), q99=emb.upper.copy())
             for k in ("state", "actions")}
    save_policy_checkpoint(policy, tmp_path, asset_id=emb.asset_id, norm_stats=stats)
    rc = cli_main(["eval", "--checkpoint", str(tmp_path), "--episodes", "1", "--max-time", "1.5", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 1 and summary["checkpoint"] == str(tmp_path)
    assert summary["per_episode"][0]["chunks"] >= 1
    assert summary["safety_interventions"].get("non_finite", 0) == 0
