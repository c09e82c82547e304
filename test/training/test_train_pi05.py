"""Training smoke test for π0.5 on the pi05_tiny preset: the state goes into the prompt, the
loss falls, and the checkpoint loads back as a π0.5 policy with quantile normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pi0_ros.cli import main as cli_main
from pi0_ros.data.bag2dataset import convert
from pi0_ros.data.synthetic import write_synthetic_bag
from pi0_ros.model.tokenizer import pi05_prompt
from pi0_ros.training.data import StepBatches, combined_norm_stats, model_inputs
from pi0_ros.training.model_setup import build_model
from pi0_ros.training.train import TrainConfig, train

EMB = "ur5e"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_pi05")
    write_synthetic_bag(root / "bags" / "ep0", EMB, duration=3.0, seed=0, prompt="pick up the red cube")
    convert([root / "bags"], EMB, root / "ds", progress=False)
    return str(root / "ds")


def test_pi05_batches_write_the_quantile_normalised_state_into_the_prompt(dataset, tmp_path):
    from pi0_ros.data.dataset import Pi0Dataset

    cfg = TrainConfig(datasets=[dataset], out=str(tmp_path), preset="pi05_tiny", chunk_size=4, num_cameras=2)
    model, tokenizer = build_model(cfg, torch.device("cpu"))
    assert model.config.family == "pi05" and tokenizer.max_len == 200
    ds = [Pi0Dataset(dataset, chunk_size=4, convention="model")]
    norm = combined_norm_stats(ds, 32)
    batches = StepBatches(ds, norm, 2, 0, 1, 0, 32, model.config.camera_names, 224, 1, norm_mode="quantile")
    batch = batches[0]
    width = norm[ds[0].asset_id]["state"].dim
    assert batch["state_dims"] == [width, width]
    inputs = model_inputs(batch, tokenizer, torch.device("cpu"), state_in_prompt=True)
    for b in range(2):
        text = tokenizer.decode(inputs.tokens[b].numpy(), inputs.token_masks[b].numpy())
        assert text == pi05_prompt(batch["prompts"][b], batch["state"][b, :width].numpy())
    # quantile normalisation keeps the training state within about [-1, 1]
    assert float(batch["state"][:, :width].abs().max()) < 1.5


@pytest.mark.slow
def test_pi05_tiny_trains_and_its_checkpoint_is_a_pi05_policy(dataset, tmp_path):
    from pi0_ros.policy import Policy

    cfg = TrainConfig(datasets=[dataset], out=str(tmp_path / "run"), preset="pi05_tiny", steps=40, batch_size=4,
                      lr=5e-3, warmup=4, chunk_size=4, num_cameras=2, seed=3)
    s = train(cfg)
    losses = np.asarray(s["losses"])
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.8 * losses[:10].mean(), losses
    ckpt = tmp_path / "run" / "checkpoints" / "step_000040"
    weights = load_file(str(ckpt / "model.safetensors"))
    assert "time_mlp_in.weight" in weights and "state_proj.weight" not in weights
    # training opened the adaRMS gates that openpi's init closes
    assert weights["paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight"].abs().max() > 0
    policy = Policy.from_checkpoint(ckpt, EMB)
    assert policy.config.family == "pi05" and policy.normalizer.mode == "quantile"
    out = policy.infer(policy.dummy_input("pick up the red cube"), noise=np.zeros((4, 32), dtype=np.float32))
    assert out.actions.shape == (4, 32) and np.isfinite(out.actions).all()
    # the CLI takes the preset by name
    rc = cli_main(["train", "--dataset", dataset, "--preset", "pi05_tiny", "--out", str(tmp_path / "cli"), "--steps", "1",
                   "--batch-size", "2", "--chunk-size", "4", "--num-cameras", "2", "--warmup", "1"])
    assert rc == 0
