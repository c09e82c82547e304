"""`pi0-ros demo --embodiment` and the checkpoint's inference settings in `eval`/`demo`: options not
given leave the settings to the checkpoint's inference.json; a robot without a trained checkpoint
is an error that names the choices, not another robot's weights."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pi0_ros.cli import main as cli_main
from pi0_ros.ros import demo

pytestmark = pytest.mark.ros
SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "pi0_sim_aloha_pick_cube"
MULTI = SHIPPED.parent / "pi0_sim_multi_pick_cube"


def _demo_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    return p.parse_args(list(argv))


def test_each_demo_robot_ships_a_checkpoint():
    # One checkpoint runs the demo on every robot (the done-when).
    assert {demo.default_checkpoint(r) for r in demo.DEMO_EMBODIMENTS} == {str(MULTI)}
    # The multi-robot checkpoint holds each robot's norm stats and the settings it was validated with.
    assert {p.name for p in (MULTI / "assets").iterdir()} >= {"trossen", "ur5e", "franka"}
    validated = json.loads((MULTI / "inference.json").read_text())["validated"]["embodiments"]
    assert set(validated) == {"trossen_bimanual", "ur5e", "franka"}
    assert demo.default_checkpoint("no_such_robot") is None


@pytest.mark.parametrize("argv, match", [
    (["--embodiment", "franka", "--policy", "scripted"], "scripted expert picks cubes on trossen_bimanual only"),
    (["--embodiment", "ur5"], "no simulated robot 'ur5'; choose one of trossen_bimanual, ur5e, franka"),
    (["--noise-scale", "2"], "noise_scale must be a number within"),
])
def test_demo_refuses_before_starting_anything(argv, match, tmp_path):
    with pytest.raises((SystemExit, ValueError), match=f"(?s){match}"):
        demo.run(_demo_args(*argv, "--out", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_demo_runs_another_robot_with_random_weights(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--embodiment", "ur5e", "--checkpoint", "", "--duration", "2", "--episode-time", "2",
                     "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["embodiment"] == "ur5e" and s["random_weights"] and s["episodes"] >= 1
    assert s["inference"]["execute_steps"] == {"value": 16, "source": "embodiment ur5e"}


@pytest.mark.slow
def test_eval_runs_the_checkpoints_settings_unless_given(capsys):
    # --lockstep: the sim waits for the policy, so a loaded computer still gets chunks within 1.5 s.
    rc = cli_main(["eval", "--checkpoint", str(SHIPPED), "--episodes", "1", "--max-time", "1.5", "--noise-scale", "1",
                   "--lockstep", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    src = f"checkpoint {SHIPPED / 'inference.json'}"
    assert (s["realtime_chunking"], s["inference_sources"]["realtime_chunking"]) == (True, src)
    assert (s["execute_steps"], s["inference_sources"]["execute_steps"]) == (25, src)
    assert (s["noise_scale"], s["inference_sources"]["noise_scale"]) == (1.0, "option")
    assert s["per_episode"][0]["chunks"] >= 1
    # How the episode ended is counted: the outcomes add up to the episodes.
    assert s["per_episode"][0]["outcome"] in s["outcomes"] and sum(s["outcomes"].values()) == s["episodes"]
