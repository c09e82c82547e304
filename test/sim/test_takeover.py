"""`pi0-ros collect-takeover` (pi0_ros.sim.takeover), ROS-free: a stand-in policy that aims its grasp
3 cm beside the cube drives first; the expert takes over from the measured joints and picks the
cube; only the expert's frames are recorded, into a dataset our loader reads. A policy that
already holds the cube is not taken over."""
from __future__ import annotations

import json
from types import SimpleNamespace

import mujoco
import numpy as np
import pytest

from pi0_ros.cli import main as cli_main
from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros.sim import takeover as tk
from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.expert import PickCubeExpert
from pi0_ros.sim.grasp_report import CLOSE_COMMANDED


class OffsetOracle:
    """The Policy interface, answering with the expert's plan for the named cube moved by ``shift``
    (m, along y) at each reset: ``shift`` 0 picks the cube, 0.03 closes beside it."""

    camera_names = ("base_0_rgb",)
    action_dim, chunk_size = 32, 50
    config = SimpleNamespace(vision=SimpleNamespace(image_size=32))

    def __init__(self, env: SimEnv, shift: float) -> None:
        self.env, self.shift, self.plan = env, shift, None
        reset = env.reset

        def reset_and_plan(*args, **kwargs):
            reset(*args, **kwargs)
            adr = env.scene.objects[env.task.target_object].qpos_adr + 1
            env.data.qpos[adr] += self.shift
            mujoco.mj_forward(env.model, env.data)
            self.plan = np.array(PickCubeExpert(env).plan)
            env.data.qpos[adr] -= self.shift
            mujoco.mj_forward(env.model, env.data)

        env.reset = reset_and_plan

    def infer(self, inp, noise=None):
        emb = self.env.embodiment
        assert inp.state.shape == (self.action_dim,)
        idx = np.minimum(np.arange(self.env.tick, self.env.tick + self.chunk_size), len(self.plan) - 1)
        return SimpleNamespace(actions=emb.pad(emb.to_model(self.plan[idx]), self.action_dim))


@pytest.fixture(scope="module")
def ur5e():
    e = SimEnv("ur5e", seed=0, render=True, image_size=64)
    yield e
    e.close()


def test_takeover_after_a_close_beside_the_cube_recovers_and_records_only_the_expert(ur5e):
    env = ur5e
    emb = env.embodiment
    policy = OffsetOracle(env, 0.03)
    seed = 4
    close = tk.expert_close_tick(env, seed)
    tick = close + 10  # the stand-in has shut its gripper beside the cube
    ep = tk.run_takeover(env, policy, seed, tick, execute_steps=16)
    assert ep.skipped is None and ep.success, "the expert recovers from the missed grasp"
    g = env.scene.gripper_dim["arm"]
    # The first recorded frame is the state the policy left: the fingers shut on nothing, the
    # expert's first target re-opens them (a regrasp is what this data teaches).
    assert emb.to_model(ep.states[0])[g] > CLOSE_COMMANDED
    assert emb.to_model(ep.actions[0])[g] < emb.to_model(ep.states[0])[g]
    # Frames: the expert's plan at the control rate, each camera as the dataset stores it.
    assert ep.frames == ep.actions.shape[0] == ep.states.shape[0] > 40
    assert set(ep.images) == set(emb.camera_slots())
    assert all(len(v) == ep.frames and v[0].shape == (224, 224, 3) and v[0].dtype == np.uint8 for v in ep.images.values())
    # Actions are the expert's targets: within one rate-limited tick of the previous one.
    step = np.abs(np.diff(ep.actions, axis=0)).max(axis=0)
    assert np.all(step <= emb.max_velocity * emb.dt + 1e-9)


def test_the_same_miss_without_a_takeover_fails(ur5e):
    """The stand-in's miss is a real miss: left alone it does not pick the cube."""
    env = ur5e
    policy = OffsetOracle(env, 0.03)
    env.reset(4)
    for t in range(len(policy.plan)):
        env.set_targets(policy.plan[t])
        env.step()
    assert not env.success()


def test_a_policy_holding_the_cube_is_not_taken_over(ur5e):
    env = ur5e
    policy = OffsetOracle(env, 0.0)
    seed = 4
    close = tk.expert_close_tick(env, seed)
    ep = tk.run_takeover(env, policy, seed, close + int(round(1.2 / env.embodiment.dt)), execute_steps=16)
    assert ep.skipped in ("policy_holding", "policy_succeeded") and ep.frames == 0


def test_takeover_ticks_span_the_approach_and_the_close():
    rng = np.random.default_rng(0)
    ticks = [tk.takeover_tick(rng, 50, 0.25, 1.5, 0.05) for _ in range(2000)]
    clean = sum(t == 0 for t in ticks) / len(ticks)
    assert 0.2 < clean < 0.3
    taken = [t for t in ticks if t]
    assert min(taken) == 25 and max(taken) == 80
    assert all(tk.takeover_tick(rng, 50, 1.0, 1.5, 0.05) == 0 for _ in range(20))


def test_collect_writes_the_recorded_episodes_into_a_dataset_the_loader_reads(ur5e, tmp_path):
    """Clean demonstrations and finished takeovers are the dataset's episodes, nothing else."""
    env = ur5e
    policy = OffsetOracle(env, 0.03)
    out = tmp_path / "ds"
    summary = tk.collect(env, policy, out, range(4, 7), 16, clean_share=0.34, after_close_s=1.5, rng_seed=1,
                         progress=False)
    rows = summary["per_episode"]
    assert summary["episodes"] == 3
    assert summary["recorded"] == sum(1 for r in rows if r["success"] and not r["skipped"]) >= 2
    ds = Pi0Dataset(out, chunk_size=50)
    assert len(ds) == summary["frames"]
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["robot_type"] == "ur5e" and info["fps"] == 20 and info["total_episodes"] == summary["recorded"]
    ours = json.loads((out / "meta" / "pi0_ros.json").read_text())
    assert ours["action_source"] in ("expert", "expert_takeover", "mixed")
    with pytest.raises(SystemExit, match="not empty"):
        tk.collect(env, policy, out, range(4, 5), 16, clean_share=0.0, after_close_s=1.5, rng_seed=1, progress=False)


@pytest.mark.parametrize("bad", [["--clean-share", "1.5"], ["--episodes", "0"], ["--after-close", "-1"]])
def test_collect_takeover_cli_refuses_bad_arguments_before_loading_anything(bad, tmp_path):
    with pytest.raises(SystemExit, match="clean-share"):
        cli_main(["collect-takeover", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), *bad])
