"""pretrain-vlm: the localisation stage writes a π0 checkpoint that `train --init` accepts."""
from __future__ import annotations

import json

import torch

from pi0_ros.model.checkpoint import load_checkpoint
from pi0_ros.model.config import get_preset
from pi0_ros.model.pi0 import PI0Model
from pi0_ros.training.vlm_pretrain import below_last_layer, pretrain, render_layouts


def test_view_below_last_layer_shares_weights_and_leaves_the_stack_alone() -> None:
    model = PI0Model(get_preset("sim", dtype="float32"))
    view = below_last_layer(model.vlm)
    assert len(view.layers) == model.config.vlm.depth - 1 == view.config.depth
    assert len(model.vlm.layers) == model.config.vlm.depth  # the original keeps every layer
    assert view.layers[0].self_attn.q_proj.weight is model.vlm.layers[0].self_attn.q_proj.weight


def test_layout_labels_follow_the_cubes() -> None:
    images, pos, colors = render_layouts("trossen_bimanual", "pick_cube", 3, 5, 112)
    assert images.shape == (3, 112, 112, 3) and images.dtype == "uint8"
    assert set(pos) == set(colors) == {"red", "blue"}
    for c in colors:
        assert pos[c].shape == (3, 2) and abs(pos[c]).max() <= 1.0 + 1e-6
    # Every layout shows the red cube (the camera frames the workspace).
    red = (images[..., 0].astype(int) - images[..., 2].astype(int)) > 100   # (n, S, S)
    for i in range(3):
        ys, xs = red[i].nonzero()
        assert len(xs) > 10


def test_pretrain_trains_the_vlm_below_its_last_layer_only(tmp_path) -> None:
    torch.manual_seed(0)
    fresh = PI0Model(get_preset("sim", dtype="float32"))
    out = tmp_path / "pt"
    summary = pretrain(out=str(out), n_layouts=6, holdout=2, steps=3, batch_size=4, log_every=1)
    assert json.loads((out / "pretrain_vlm.json").read_text())["steps"] == 3
    assert len(summary["log"]) == 3 and all(e["named_cm"] >= 0 for e in summary["log"])
    model = load_checkpoint(out, dtype=torch.float32)
    after, before = model.state_dict(), fresh.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    depth = model.config.vlm.depth
    assert any("vision_tower" in k for k in changed) and any("language_model.layers.0." in k for k in changed)
    assert not any(f"language_model.layers.{depth - 1}." in k for k in changed)
    assert not any("gemma_expert" in k or k.startswith(("action_", "state_proj")) for k in changed)
    assert (out / "tokenizer.model").is_file()
