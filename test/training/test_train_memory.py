"""Memory levers: activation checkpointing (same gradients, fewer saved activations), bf16, optimizers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pi0_ros.model.config import get_preset
from pi0_ros.model.inputs import ModelInputs
from pi0_ros.model.pi0 import PI0Model
from pi0_ros.training.train import train


def _batch(B: int = 2, cameras: int = 2):
    g = torch.Generator().manual_seed(0)
    inp = ModelInputs(images=torch.rand(B, cameras, 3, 224, 224, generator=g) * 2 - 1,
                      image_masks=torch.ones(B, cameras, dtype=torch.bool),
                      tokens=torch.randint(0, 1000, (B, 48), generator=g), token_masks=torch.ones(B, 48, dtype=torch.bool),
                      state=torch.randn(B, 32, generator=g))
    return inp, torch.randn(B, 4, 32, generator=g), torch.randn(B, 4, 32, generator=g), torch.rand(B, generator=g)


def _grads_and_saved_bytes(model: PI0Model, checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of one loss, and the bytes autograd keeps for backward during the forward."""
    inp, actions, noise, t = _batch()
    model.zero_grad(set_to_none=True)
    model.set_gradient_checkpointing(checkpointing)
    saved: dict[int, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        saved[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()  # each storage once
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = model.loss(inp, actions, noise=noise, time=t).mean()
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, sum(saved.values())


def test_grad_checkpointing_gives_the_same_gradients_and_saves_less():
    torch.manual_seed(0)
    model = PI0Model(get_preset("tiny", dtype="float32", chunk_size=4, num_cameras=2))
    plain, plain_bytes = _grads_and_saved_bytes(model, False)
    ckpt, ckpt_bytes = _grads_and_saved_bytes(model, True)
    assert plain.keys() == ckpt.keys() and len(plain) > 50
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-6, atol=1e-7, msg=k)
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)
    with torch.no_grad():  # inference is unaffected by the flag
        inp, _, noise, _ = _batch()
        model.eval()
        a = model.sample_actions(inp, noise=noise)
        model.set_gradient_checkpointing(False)
        torch.testing.assert_close(model.sample_actions(inp, noise=noise), a, rtol=0, atol=0)


def test_bf16_autocast_is_close_to_fp32(train_datasets, tiny_cfg, tmp_path):
    fp32 = train(tiny_cfg(train_datasets, tmp_path / "fp32", steps=1, precision="fp32"))
    bf16 = train(tiny_cfg(train_datasets, tmp_path / "bf16a", steps=1, precision="bf16-autocast"))
    assert bf16["losses"][0] != fp32["losses"][0]  # bf16 matmuls did run
    assert bf16["losses"][0] == pytest.approx(fp32["losses"][0], rel=0.05)


def test_bf16_frozen_weights_fused_optimizer_and_checkpointing(train_datasets, tiny_cfg, tmp_path):
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.policy import Policy
    from pi0_ros.training.model_setup import VISION_PREFIXES, build_model, store_frozen_in_bf16, trainable_parameters

    cfg = tiny_cfg(train_datasets, tmp_path / "mix", steps=2, precision="bf16", freeze_vision=True,
                   grad_checkpoint=True, optimizer="adamw-fused")
    s = train(cfg)
    assert np.isfinite(s["losses"]).all()
    # Frozen matrices are stored in bf16, trainable ones stay fp32 (the optimizer's master copy).
    model, _ = build_model(cfg, torch.device("cpu"))
    trainable_parameters(model, False, True)
    store_frozen_in_bf16(model)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"] \
        == torch.bfloat16
    assert all(d == torch.float32 for n, d in dtypes.items() if not n.startswith(VISION_PREFIXES)
               and "layers.1." not in n and "language_model.norm" not in n)
    trained = load_checkpoint(s["checkpoint"])  # loads as any checkpoint
    assert Policy.from_checkpoint(s["checkpoint"]).chunk_size == 4 and trained.config.dtype == "float32"


def test_8bit_optimizer_needs_cuda(train_datasets, tiny_cfg, tmp_path):
    with pytest.raises(RuntimeError, match="adamw-8bit"):
        train(tiny_cfg(train_datasets, tmp_path / "8bit", steps=1, optimizer="adamw-8bit"))
