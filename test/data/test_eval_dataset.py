"""pi0-ros eval-dataset: open-loop errors of predicted vs recorded chunks, per dim, and the plots."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pi0_ros.data.bag2dataset import convert
from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros.data.synthetic import write_synthetic_bag
from pi0_ros.eval_dataset import evaluate, held_out_episodes, to_robot
from pi0_ros.robots.embodiment import load_embodiment

EMB = "ur5e"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalds")
    for i in range(3):
        write_synthetic_bag(d / "bags" / f"episode_{i:06d}", EMB, seed=i, prompt=f"task {i}", duration=2.0)
    convert([d / "bags"], EMB, d / "ds", fps=10, progress=False)
    return d / "ds"


def test_held_out_episodes():
    assert held_out_episodes(list(range(20)), 0.1) == [18, 19]
    assert held_out_episodes([0, 1, 2], 0.1) == [2]
    assert held_out_episodes([0, 1, 2], 0.1, [0]) == [0]
    with pytest.raises(ValueError, match=r"\[7\] not in the dataset"):
        held_out_episodes([0, 1], 0.5, [7])


def test_errors_against_a_known_prediction(dataset):
    """A policy that always predicts zeros (model convention): MAE = mean |recorded - zero in robot units|."""
    H, D = 6, 32
    ds = Pi0Dataset(dataset, chunk_size=H, load_images=False)
    zero_robot = to_robot(np.zeros(len(ds.dims)), ds.dims)
    stub = SimpleNamespace(chunk_size=H, action_dim=D, camera_names=("base_0_rgb",), noise_scale=0.0,
                           infer=lambda inp, noise=None: SimpleNamespace(actions=np.zeros((H, D))))
    r = evaluate(ds, stub, [2], every=4, execute_steps=2)
    idx = np.flatnonzero(ds.episode_index == 2)
    rec = to_robot(ds.action, ds.dims)  # model convention -> robot units
    errs_exec, errs_chunk = [], []
    for i in idx[::4]:
        fut = np.arange(i, min(i + H, idx[-1] + 1))
        errs_chunk.append(np.abs(rec[fut] - zero_robot))
        errs_exec.append(np.abs(rec[fut[:2]] - zero_robot))
    want_chunk = np.concatenate(errs_chunk).mean(0)
    want_exec = np.concatenate(errs_exec).mean(0)
    names = [d["name"] for d in ds.dims]
    np.testing.assert_allclose([r["mae_chunk"][n] for n in names], want_chunk, rtol=1e-5)
    np.testing.assert_allclose([r["mae_execute_steps"][n] for n in names], want_exec, rtol=1e-5)
    assert r["chunks"] == len(idx[::4]) and r["episodes"] == [2]
    # Robot units: the gripper error is in driver units, not [0, 1].
    emb = load_embodiment(EMB)
    np.testing.assert_allclose(ds.action_robot, emb.to_robot(ds.action), atol=1e-5)


def test_cli_prints_per_dim_errors_and_writes_plots(dataset, tmp_path, capsys):
    from pi0_ros.cli import main as cli_main
    from pi0_ros.policy import Policy, save_policy_checkpoint
    from pi0_ros.model.normalize import load_norm_stats

    emb = load_embodiment(EMB)
    policy = Policy.tiny_random(seed=0, action_dim=32, num_steps=2)
    ckpt = save_policy_checkpoint(policy, tmp_path / "ckpt", asset_id=emb.asset_id,
                                  norm_stats=load_norm_stats(dataset / "norm_stats.json"))
    rc = cli_main(["eval-dataset", "--dataset", str(dataset), "--checkpoint", str(ckpt), "--every", "8",
                   "--num-steps", "2", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0
    for d in emb.dim_names:
        assert d in out
    assert "MAE first" in out and "MAE chunk" in out
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["episodes"] == [2] and m["execute_steps"] == min(emb.execute_steps, policy.chunk_size)
    assert all(np.isfinite(v) for v in m["mae_chunk"].values())
    assert (tmp_path / "out" / "episode_000002.png").stat().st_size > 5000
