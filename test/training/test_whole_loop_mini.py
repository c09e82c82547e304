"""The whole loop in miniature, as CI can afford it: record scripted episodes in the simulator
through the ROS pipeline into mcap bags -> bag2dataset -> train a few steps -> load the
checkpoint in the policy node -> run one closed-loop episode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ros]


def pi0(*args: str, timeout: float = 600) -> str:
    out = subprocess.run([sys.executable, "-m", "pi0_ros.cli", *args], capture_output=True, text=True,
                         timeout=timeout, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_record_convert_train_deploy(tmp_path: Path):
    bags, ds, run = tmp_path / "bags", tmp_path / "ds", tmp_path / "run"
    rec = json.loads(pi0("collect", "--episodes", "2", "--seed", "5", "--out", str(bags), "--episode-time", "3.5",
                         "--json").strip().splitlines()[-1])
    assert rec["episodes"] == 2
    topics = rec["recording"]["topics"]
    assert all(t["received"] == t["written"] and t["dropped"] == 0 for t in topics.values()), topics
    assert sorted(p.name for p in bags.iterdir()) == ["episode_000000", "episode_000001"]
    assert all(next(p.glob("*.mcap"), None) for p in bags.iterdir())

    conv = json.loads(pi0("bag2dataset", *map(str, sorted(bags.iterdir())), "--embodiment", "trossen_bimanual",
                          "--out", str(ds), "--quiet"))
    assert conv["episodes"] >= 2 and conv["frames"] > 200 and conv["action_source"] == "commands"

    pi0("train", "--dataset", str(ds), "--preset", "sim", "--out", str(run), "--steps", "4", "--batch-size", "4", "--delta-actions",
        "--warmup", "1", "--seed", "0")
    ckpt = run / "checkpoints" / "step_000004"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.model").is_file()
    assert list((ckpt / "assets").glob("*/norm_stats.json")) and list((ckpt / "assets").glob("*/delta_actions.json"))

    # Open-loop evaluation on the recorded data: per-dim errors printed, one plot per held-out episode.
    ev = pi0("eval-dataset", "--dataset", str(ds), "--checkpoint", str(ckpt), "--every", "25", "--num-steps", "2",
             "--out", str(tmp_path / "eval"))
    assert "MAE chunk" in ev and "left_waist" in ev and "right_gripper" in ev
    assert list((tmp_path / "eval").glob("episode_*.png")) and (tmp_path / "eval" / "metrics.json").is_file()

    from pi0_ros.ros.sim_session import SimSession

    s = SimSession("trossen_bimanual", "pick_cube", checkpoint=str(ckpt), seed=9)
    try:
        s.wait_ready()
        assert not s.policy_node.status_msg.random_weights
        r = s.run_episode(9, max_time=2.0, stop_on_success=False)
    finally:
        s.close()
    assert r.chunks >= 2, r
    assert s.executor_node.commands.published > 20
    assert "non_finite" not in r.interventions
