"""`pi0-ros diagnose-grasp` (pi0_ros.sim.grasp_diagnosis), ROS-free: an oracle that answers with
the expert's own plan must aim exactly where the expert closes and succeed closed loop; the
summary counts misses and signed bias; the shipped checkpoint runs through the CLI."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pi0_ros.cli import main as cli_main
from pi0_ros.sim import grasp_diagnosis as gd
from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.expert import make_expert
from pi0_ros.sim.grasp_report import OUTCOMES

MULTI = Path(__file__).resolve().parents[2] / "checkpoints" / "pi0_sim_multi_pick_cube"


class ExpertOracle:
    """The Policy interface, answering each observation with the expert's plan from this tick on."""

    camera_names = ("base_0_rgb",)
    action_dim, chunk_size = 32, 50
    config = SimpleNamespace(vision=SimpleNamespace(image_size=32))

    def __init__(self, env: SimEnv) -> None:
        self.env, self.plan = env, None
        reset = env.reset

        def reset_and_plan(*args, **kwargs):  # the expert plans from the state right after a reset
            reset(*args, **kwargs)
            self.plan = np.array(make_expert(env).plan)

        env.reset = reset_and_plan

    def infer(self, inp, noise=None):
        emb = self.env.embodiment
        assert inp.state.shape == (self.action_dim,) and set(inp.images) == {"base_0_rgb"}
        assert inp.images["base_0_rgb"].shape == (32, 32, 3)
        idx = np.minimum(np.arange(self.env.tick, self.env.tick + self.chunk_size), len(self.plan) - 1)
        return SimpleNamespace(actions=emb.pad(emb.to_model(self.plan[idx]), self.action_dim))


@pytest.fixture(scope="module")
def ur5e():
    e = SimEnv("ur5e", seed=0, render=True, image_size=64)
    yield e, ExpertOracle(e)
    e.close()


@pytest.mark.parametrize("lead", [8, 16])
def test_an_oracle_aims_exactly_where_the_expert_closes(ur5e, lead):
    env, oracle = ur5e
    r = gd.teacher_forced(env, oracle, 3, lead)
    assert r["predicted_close_step"] == lead
    assert r["policy_offset"] == pytest.approx(r["expert_offset"], abs=1e-4)
    assert max(abs(r["expert_offset"]["closing"]), abs(r["expert_offset"]["across"])) < gd.MISS


def test_an_oracle_picks_the_cube_closed_loop(ur5e):
    env, oracle = ur5e
    r = gd.closed_loop(env, oracle, 3, execute_steps=16)
    assert r["outcome"] == "success", r
    assert max(abs(r["close_offset"]["closing"]), abs(r["close_offset"]["across"])) < gd.MISS


class StateCopier(ExpertOracle):
    """Answers with the plan of the last expert made: a policy that continues the trajectory its
    state is on, wherever that leads."""

    def __init__(self, env: SimEnv, monkeypatch) -> None:
        super().__init__(env)
        import pi0_ros.sim.expert as expert_module

        made = expert_module.make_expert

        def recording(e, **kw):
            x = made(e, **kw)
            self.plan = np.array(x.plan)
            return x

        monkeypatch.setattr(expert_module, "make_expert", recording)


def test_state_reliance_tells_an_aim_from_the_image_from_one_that_follows_the_state(ur5e, monkeypatch):
    env, oracle = ur5e
    for seed in (3, 4):  # two shift directions
        seeing = gd.shifted_aim(env, oracle, seed, 16, 0.025)
        e = seeing["expert_offset"]
        assert 0.02 < np.hypot(e["closing"], e["across"]) < 0.03  # the misled expert closes 2.5 cm off
        assert abs(seeing["kept"]) < 0.15, seeing                 # knows the cube: corrects all of it
    copier = StateCopier(env, monkeypatch)
    copying = gd.shifted_aim(env, copier, 3, 16, 0.025)
    assert copying["kept"] == pytest.approx(1.0, abs=0.05), copying
    s = gd.summarise({16: []}, [], {16: [seeing, copying, {**copying, "kept": None}]})
    assert s["state_reliance"]["16"]["no_close_predicted"] == 1
    assert s["state_reliance"]["16"]["median_kept"] == pytest.approx((seeing["kept"] + copying["kept"]) / 2, abs=1e-3)


def test_summary_counts_misses_and_keeps_the_sign_of_a_bias():
    off = lambda c, a: {"approach": 0.01, "closing": c, "across": a}  # noqa: E731
    aim = {8: [{"policy_offset": off(0.0, 0.02)}, {"policy_offset": off(0.001, 0.004)}, {"policy_offset": None}]}
    loop = [{"outcome": "success", "close_offset": off(0.0, 0.005)},
            {"outcome": "closed_empty", "close_offset": off(0.0, 0.03)},
            {"outcome": "never_reached", "close_offset": None}]
    s = gd.summarise(aim, loop)
    t = s["teacher_forced"]["8"]
    assert (t["episodes"], t["no_close_predicted"], t["miss_share"]) == (3, 1, 0.5)
    assert t["mean_offset_m"]["across"] == pytest.approx(0.012)
    c = s["closed_loop"]
    assert (c["successes"], c["outcomes"], c["miss_share"]) == (1, {"closed_empty": 1, "never_reached": 1, "success": 1}, 0.5)
    assert c["mean_offset_m"]["across"] == pytest.approx(0.0175)  # one-sided: the sign survives


@pytest.mark.slow
def test_cli_diagnoses_the_shipped_checkpoint(capsys):
    rc = cli_main(["diagnose-grasp", "--checkpoint", str(MULTI), "--embodiment", "ur5e", "--episodes", "1",
                   "--seed", "1000", "--lead", "8", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["embodiment"] == "ur5e" and s["execute_steps"] == 16 and s["seeds"] == "1000-1000"
    aim = s["per_episode"]["teacher_forced"]["8"][0]
    # From the expert's state 8 ticks before its close, the shipped checkpoint closes within a
    # few ticks of it and on the cube (deterministic: noise 0 on CPU).
    assert aim["predicted_close_step"] is not None and abs(aim["predicted_close_step"] - 8) <= 4
    assert max(abs(aim["policy_offset"]["closing"]), abs(aim["policy_offset"]["across"])) < gd.MISS
    assert s["per_episode"]["closed_loop"][0]["outcome"] in OUTCOMES


def test_cli_refuses_a_lead_below_one_and_a_shift_out_of_range():
    with pytest.raises(SystemExit, match="--lead must be >= 1"):
        cli_main(["diagnose-grasp", "--checkpoint", str(MULTI), "--embodiment", "ur5e", "--lead", "0"])
    for bad in ("-0.01", "0.5", "nan"):
        with pytest.raises(SystemExit, match="--shift must be within"):
            cli_main(["diagnose-grasp", "--checkpoint", str(MULTI), "--embodiment", "ur5e", "--shift", bad])
