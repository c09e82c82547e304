"""Training: schedule/mixture maths, loss decreases, resume == uninterrupted, checkpoint -> Policy, freeze.

DDP and FSDP2: test_train_distributed.py."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pi0_ros.cli import main as cli_main
from pi0_ros.data.bag2dataset import convert
from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros import camera_views
from pi0_ros.data.synthetic import write_synthetic_bag
from pi0_ros.model.normalize import load_norm_stats
from pi0_ros.training.data import StepBatches, combined_norm_stats, mixture_weights
from pi0_ros.training.model_setup import FROZEN_PREFIX, lr_factor
from pi0_ros.training.train import TrainConfig, sample_time, step_generator, train

EMB = "ur5e"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    write_synthetic_bag(root / "bags_a" / "ep0", EMB, duration=3.0, seed=0, prompt="pick up the red cube")
    write_synthetic_bag(root / "bags_a" / "ep1", EMB, duration=3.0, seed=1, prompt="pick up the red cube", storage="sqlite3")
    write_synthetic_bag(root / "bags_b" / "ep0", EMB, duration=2.0, seed=2, prompt="stack the blue block", command_rate=None)
    convert([root / "bags_a"], EMB, root / "ds_a", progress=False)
    convert([root / "bags_b"], EMB, root / "ds_b", progress=False)
    return [str(root / "ds_a"), str(root / "ds_b")]


def tiny_cfg(datasets, out, **kw) -> TrainConfig:
    base = dict(datasets=datasets, out=str(out), preset="tiny", steps=6, batch_size=4, lr=1e-3, warmup=2,
                chunk_size=4, num_cameras=2, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_mixture_weights_and_schedule():
    w = mixture_weights([1000, 10])
    np.testing.assert_allclose(w, np.array([1000**0.43, 10**0.43]) / (1000**0.43 + 10**0.43))
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(1 / 11)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(10 / 11)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    t = sample_time(200_000, step_generator(0, 0))
    assert 0.001 <= float(t.min()) and float(t.max()) <= 1.0
    assert float(t.mean()) == pytest.approx(0.6 * 0.999 + 0.001, abs=3e-3)  # Beta(1.5, 1) mean 0.6


def test_batches_are_deterministic_and_masked(datasets):
    ds = [Pi0Dataset(d, chunk_size=4) for d in datasets]
    norm = combined_norm_stats(ds, 32)
    np.testing.assert_allclose(norm["ur5e"]["state"].mean, np.concatenate([d.state for d in ds]).mean(0), atol=1e-6)
    a = StepBatches(ds, norm, 4, 0, 1, 0, 32, ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"), 224, 10)
    b0, b1 = a[5], a[5]
    assert torch.equal(b0["actions"], b1["actions"]) and b0["prompts"] == b1["prompts"]
    assert b0["images"].shape == (4, 3, 224, 224, 3) and b0["image_masks"][:, :2].all() and not b0["image_masks"][:, 2].any()
    assert not b0["mask"][:, :, 7:].any() and (b0["actions"][:, :, 7:] == 0).all()
    # The two ranks of a 2-process run split the same global batch.
    r0 = StepBatches(ds, norm, 4, 0, 2, 0, 32, ("base_0_rgb",), 224, 10)[5]
    r1 = StepBatches(ds, norm, 4, 1, 2, 0, 32, ("base_0_rgb",), 224, 10)[5]
    assert torch.equal(torch.cat([r0["state"], r1["state"]]), b0["state"])


def test_state_noise_moves_only_the_joint_state_and_keeps_the_absolute_targets(datasets):
    """--state-noise: the model sees a noisy joint state, and the delta labels are taken from that
    same noisy state, so noisy state + label = the recorded target (the state no longer says where
    the arm is heading). Grippers (absolute labels) and the image are untouched; noise is
    deterministic per step, like the rest of the batch."""
    from pi0_ros.model.normalize import Normalizer
    from pi0_ros.training.data import delta_mask

    ds = [Pi0Dataset(d, chunk_size=4) for d in datasets]
    norm = combined_norm_stats(ds, 32, delta_actions=True)
    args = (ds, norm, 4, 0, 1, 0, 32, ("base_0_rgb",), 224, 10)
    clean, noisy = StepBatches(*args, delta_actions=True)[3], StepBatches(*args, delta_actions=True, state_noise=0.05)[3]
    assert torch.equal(noisy["state"], StepBatches(*args, delta_actions=True, state_noise=0.05)[3]["state"])
    assert torch.equal(clean["images"], noisy["images"]) and clean["prompts"] == noisy["prompts"]
    n = Normalizer(norm["ur5e"])
    joints = np.flatnonzero(delta_mask(ds[0]))
    gripper = 6
    s0, s1 = (n.unnormalize(b["state"].numpy().astype(np.float64), "state") for b in (clean, noisy))
    a0, a1 = (n.unnormalize(b["actions"].numpy().astype(np.float64), "actions") for b in (clean, noisy))
    moved = s1[:, joints] - s0[:, joints]
    assert 0.02 < moved.std() < 0.08 and np.abs(moved).min() > 0  # every joint of every sample moved, std ~0.05 rad
    np.testing.assert_allclose(s1[:, gripper], s0[:, gripper], atol=1e-6)
    np.testing.assert_allclose(a1[:, :, gripper], a0[:, :, gripper], atol=1e-6)
    # The absolute joint targets (state + delta) are the recorded ones either way.
    np.testing.assert_allclose(a1[:, :, joints] + s1[:, None, joints], a0[:, :, joints] + s0[:, None, joints], atol=1e-4)
    with pytest.raises(ValueError, match="state-noise"):
        StepBatches(*args, state_noise=-0.1)


def test_episode_start_weight_draws_the_first_seconds_more_often(datasets):
    """--episode-start-weight W: frames in each episode's first --episode-start-s seconds are drawn W
    times as often as the rest, within each dataset (the mixture across datasets is unchanged);
    W = 1 draws exactly what it drew before; a weight <= 0 or a negative span is refused."""
    ds = [Pi0Dataset(d, chunk_size=4) for d in datasets]
    norm = combined_norm_stats(ds, 32)
    args = (ds, norm, 64, 0, 1, 0, 32, ("base_0_rgb",), 224, 400)
    plain, weighted = StepBatches(*args), StepBatches(*args, episode_start_weight=5.0, episode_start_s=0.5)
    assert plain.indices(7) == StepBatches(*args, episode_start_weight=1.0, episode_start_s=0.5).indices(7)

    def early_share(b: StepBatches) -> float:
        picks = [(d, f) for s in range(400) for d, f in b.indices(s) if d == 0]
        return float(np.mean([ds[0].frame_index[f] / ds[0].fps < 0.5 for _, f in picks]))

    base = float(np.mean(ds[0].frame_index / ds[0].fps < 0.5))   # the share of early frames in the data
    expect = 5 * base / (5 * base + (1 - base))
    assert 0.05 < base < 0.4
    assert early_share(plain) == pytest.approx(base, abs=0.03)
    assert early_share(weighted) == pytest.approx(expect, abs=0.03)
    # the datasets' mixture does not change
    count = lambda b: sum(d == 0 for s in range(400) for d, _ in b.indices(s))
    assert count(weighted) == count(plain)
    for bad in ({"episode_start_weight": 0.0}, {"episode_start_weight": float("nan")}, {"episode_start_s": -1.0}):
        with pytest.raises(ValueError, match="episode-start"):
            StepBatches(*args, **bad)


def eval_loss(model, tokenizer, cfg: TrainConfig, n_batches: int = 4) -> float:
    """Masked loss over fixed batches with fixed noise and time (a low-variance yardstick)."""
    from pi0_ros.training.data import model_inputs
    from pi0_ros.training.train import masked_loss

    ds = [Pi0Dataset(d, chunk_size=model.config.chunk_size) for d in cfg.datasets]
    batches = StepBatches(ds, combined_norm_stats(ds, model.config.action_dim), 8, 0, 1, 1234, model.config.action_dim,
                          model.config.camera_names, 224, n_batches)
    total = 0.0
    with torch.no_grad():
        for i in range(n_batches):
            b = batches[i]
            g = step_generator(999, i)
            noise = torch.randn(b["actions"].shape, generator=g)
            t = sample_time(b["actions"].shape[0], g)
            per = model.loss(model_inputs(b, tokenizer, torch.device("cpu")), b["actions"], noise=noise, time=t)
            total += float(masked_loss(per, b["mask"], b["mask"].sum()))
    return total / n_batches


@pytest.mark.slow
def test_loss_decreases(datasets, tmp_path):
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.training.model_setup import build_model

    cfg = tiny_cfg(datasets[:1], tmp_path / "run", steps=60, batch_size=4, lr=5e-3, warmup=4)
    init, tokenizer = build_model(cfg, torch.device("cpu"))
    before = eval_loss(init, tokenizer, cfg)
    s = train(cfg)
    assert np.isfinite(s["losses"]).all()
    after = eval_loss(load_checkpoint(tmp_path / "run" / "checkpoints" / "step_000060"), tokenizer, cfg)
    assert after < 0.9 * before, (before, after)  # 0.81 measured: the rest is the irreducible noise part
    rows = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 61))
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_resume_equals_uninterrupted(datasets, tmp_path):
    full = train(tiny_cfg(datasets, tmp_path / "full", save_every=3, num_workers=2))  # workers change nothing
    part = train(tiny_cfg(datasets, tmp_path / "part", save_every=3, stop_after=3))
    assert part["end_step"] == 3
    rest = train(tiny_cfg(datasets, tmp_path / "part", save_every=3, resume=True))
    assert rest["start_step"] == 3 and rest["end_step"] == 6
    np.testing.assert_array_equal(full["losses"][3:], rest["losses"])
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step_000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "step_000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    log = [json.loads(x)["step"] for x in (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]


def test_cli_checkpoint_loads_into_policy_and_infers(datasets, tmp_path):
    from pi0_ros.policy import Policy
    from pi0_ros.robots.embodiment import load_embodiment

    out = tmp_path / "cli"
    rc = cli_main(["train", "--dataset", datasets[0], "--preset", "tiny", "--out", str(out), "--steps", "2",
                   "--batch-size", "2", "--chunk-size", "4", "--num-cameras", "2", "--warmup", "1"])
    assert rc == 0
    ckpt = out / "checkpoints" / "step_000002"
    assert (out / "checkpoints" / "latest").read_text().strip() == ckpt.name
    policy = Policy.from_checkpoint(ckpt, "ur5e")
    ds_stats = load_norm_stats(os.path.join(datasets[0], "norm_stats.json"))
    np.testing.assert_allclose(policy.normalizer.stats["actions"].mean, ds_stats["actions"].mean, atol=1e-9)
    emb = load_embodiment(EMB)
    # The camera views the dataset was converted with travel with the checkpoint (the node checks them).
    assert camera_views.load_for(ckpt, "ur5e") == {c.slot: c.crop for c in emb.cameras}
    inp = policy.dummy_input("pick up the red cube")
    out_ = policy.infer(inp, noise=np.zeros((4, 32), dtype=np.float32))
    assert out_.actions.shape == (4, 32) and np.isfinite(out_.actions).all()
    assert emb.robot_actions(out_.actions).shape == (4, 7)
    # Fine-tune from that checkpoint (its tokenizer and config), expert only.
    rc = cli_main(["train", "--dataset", datasets[1], "--init", str(ckpt), "--out", str(tmp_path / "ft"), "--steps", "1",
                   "--batch-size", "2", "--freeze-vlm"])
    assert rc == 0 and Policy.from_checkpoint(tmp_path / "ft" / "checkpoints" / "step_000001").chunk_size == 4


def test_freeze_vlm_trains_only_the_expert(datasets, tmp_path):
    from pi0_ros.model.checkpoint import load_checkpoint

    s = train(tiny_cfg(datasets, tmp_path / "frozen", steps=2, freeze_vlm=True))
    assert s["trainable_parameters"] < s["parameters"]
    from pi0_ros.training.model_setup import build_model
    init, _ = build_model(tiny_cfg(datasets, tmp_path / "x"), torch.device("cpu"))
    trained = load_checkpoint(tmp_path / "frozen" / "checkpoints" / "step_000002")
    before, after = init.state_dict(), trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(not k.startswith(FROZEN_PREFIX) for k in changed)
    assert any(k.startswith("paligemma_with_expert.gemma_expert.") for k in changed)


def test_freeze_vision_trains_the_vlm_layers_but_not_the_image_encoder(datasets, tmp_path):
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.training.model_setup import VISION_PREFIXES, build_model, loss_unused_prefixes

    s = train(tiny_cfg(datasets, tmp_path / "fv", steps=2, freeze_vision=True))
    init, _ = build_model(tiny_cfg(datasets, tmp_path / "x"), torch.device("cpu"))
    trained = load_checkpoint(tmp_path / "fv" / "checkpoints" / "step_000002")
    before, after = init.state_dict(), trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith(VISION_PREFIXES) for k in changed)
    assert any(k.startswith("paligemma_with_expert.paligemma.model.language_model.layers.") for k in changed)
    assert any(k.startswith("paligemma_with_expert.gemma_expert.") for k in changed)
    frozen = sum(v.numel() for k, v in before.items() if k.startswith(VISION_PREFIXES + loss_unused_prefixes(init)))
    assert s["trainable_parameters"] == s["parameters"] - frozen
    with pytest.raises(ValueError, match="one of"):
        train(tiny_cfg(datasets, tmp_path / "both", steps=1, freeze_vlm=True, freeze_vision=True))


def test_num_cameras_widens_an_init_checkpoint_and_changes_nothing_until_a_new_camera_comes(datasets, tmp_path):
    """--num-cameras with --init adds camera slots (wrists beside a top camera): same weights, the
    same actions while the new slots are empty; a checkpoint's slots are never removed."""
    import torch

    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.model.inputs import ModelInputs
    from pi0_ros.training.model_setup import build_model, with_more_cameras

    train(tiny_cfg(datasets[:1], tmp_path / "one", steps=1, num_cameras=1))
    ckpt = str(tmp_path / "one" / "checkpoints" / "step_000001")
    base = load_checkpoint(ckpt, device="cpu").eval()
    wide, _ = build_model(TrainConfig(datasets=datasets[:1], out=str(tmp_path / "w"), init=ckpt, num_cameras=2),
                          torch.device("cpu"))
    wide.eval()
    assert base.config.num_cameras == 1 and wide.config.num_cameras == 2
    assert wide.config.camera_names == ("base_0_rgb", "left_wrist_0_rgb")
    S, g = base.config.vision.image_size, torch.Generator().manual_seed(0)
    state = torch.randn(2, base.config.action_dim, generator=g)
    tokens, token_masks = torch.randint(1, 50, (2, 5), generator=g), torch.ones(2, 5, dtype=torch.bool)
    top = torch.rand(2, 1, 3, S, S, generator=g) * 2 - 1
    noise = torch.randn(2, base.config.chunk_size, base.config.action_dim, generator=g)
    one = ModelInputs(top, torch.ones(2, 1, dtype=torch.bool), tokens, token_masks, state)
    empty_wrist = ModelInputs(torch.cat([top, -torch.ones_like(top)], 1), torch.tensor([[True, False]] * 2),
                              tokens, token_masks, state)
    wrist = ModelInputs(torch.cat([top, torch.rand_like(top) * 2 - 1], 1), torch.ones(2, 2, dtype=torch.bool),
                        tokens, token_masks, state)
    with torch.no_grad():
        before = base.sample_actions(one, noise=noise, num_steps=2)
        torch.testing.assert_close(wide.sample_actions(empty_wrist, noise=noise, num_steps=2), before)
        assert not torch.allclose(wide.sample_actions(wrist, noise=noise, num_steps=2), before, atol=1e-4)
    with pytest.raises(ValueError, match="added to, not removed"):
        with_more_cameras(wide.config, 1, "a two-camera checkpoint")


def test_keep_norm_stats_continues_the_init_checkpoints_normalisation(datasets, tmp_path):
    """Continued training on other data of the same robot: without the flag the stats are the new
    data's (every normalised input moves at step 0); with it, the checkpoint's are kept exactly."""
    from pi0_ros.policy import Policy

    first = train(tiny_cfg(datasets[:1], tmp_path / "first", steps=2))
    assert first["end_step"] == 2
    ckpt = tmp_path / "first" / "checkpoints" / "step_000002"
    old = load_norm_stats(ckpt / "assets" / "ur5e" / "norm_stats.json")
    new_data = load_norm_stats(os.path.join(datasets[1], "norm_stats.json"))
    assert not np.allclose(old["state"].mean, new_data["state"].mean)  # the two datasets differ
    common = dict(datasets=datasets[1:], steps=1, batch_size=2, lr=1e-4, warmup=1, seed=3)
    train(TrainConfig(out=str(tmp_path / "plain"), init=str(ckpt), **common))
    train(TrainConfig(out=str(tmp_path / "kept"), init=str(ckpt), keep_norm_stats=True, **common))
    plain = Policy.from_checkpoint(tmp_path / "plain" / "checkpoints" / "step_000001", "ur5e").normalizer.stats
    kept = Policy.from_checkpoint(tmp_path / "kept" / "checkpoints" / "step_000001", "ur5e").normalizer.stats
    np.testing.assert_allclose(plain["state"].mean, new_data["state"].mean, atol=1e-9)
    for key in ("state", "actions"):
        np.testing.assert_array_equal(kept[key].mean, old[key].mean)
        np.testing.assert_array_equal(kept[key].std, old[key].std)
    with pytest.raises(ValueError, match="delta-actions"):
        train(TrainConfig(out=str(tmp_path / "delta"), init=str(ckpt), keep_norm_stats=True, delta_actions=True,
                          **common))
    with pytest.raises(ValueError, match="keep-norm-stats"):
        train(tiny_cfg(datasets[1:], tmp_path / "preset", keep_norm_stats=True))
