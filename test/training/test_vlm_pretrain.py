"""pretrain-vlm: the localisation stage writes a π0 checkpoint that `train --init` accepts."""
from __future__ import annotations

import json

import numpy as np
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


def test_one_embodiment_renders_the_layouts_of_before() -> None:
    """The shipped recipe's grounding (one embodiment) must not change: same seeds, same order."""
    from pi0_ros.training.vlm_pretrain import render_layout_set

    images, pos, colors, half, group = render_layout_set(["trossen_bimanual"], "pick_cube", 3, 2, 7, 56)
    old_images, old_pos, old_colors = render_layouts("trossen_bimanual", "pick_cube", 5, 7, 56)
    assert colors == old_colors and np.array_equal(images, old_images)
    assert all(np.array_equal(pos[c], old_pos[c]) for c in colors)
    assert (group == 0).all() and half.shape == (5, 2) and (half == half[0]).all()


def test_layouts_are_the_top_camera_as_the_policy_sees_it(cropped_ur5e) -> None:
    """The grounding images go through the camera's region of interest (cameras.base_0_rgb.crop),
    as the observation node and bag2dataset do, so grounding and policy see the same view."""
    from pi0_ros.images import crop_region
    from pi0_ros.model.preprocess import resize_with_pad
    from pi0_ros.sim.env import SimEnv

    images, _, _ = render_layouts(cropped_ur5e, "pick_cube", 1, 14, 112)
    env = SimEnv(cropped_ur5e, seed=14, task="pick_cube", image_size=224)
    try:
        frame = env.render(["base_0_rgb"])["base_0_rgb"]
        crop = next(c.crop for c in env.embodiment.cameras if c.slot == "base_0_rgb")
    finally:
        env.close()
    assert crop is not None
    np.testing.assert_array_equal(images[0], resize_with_pad(crop_region(frame, crop), 112, 112))
    assert not np.array_equal(images[0], resize_with_pad(frame, 112, 112))


def test_pretrain_splits_the_layouts_across_embodiments(tmp_path) -> None:
    from pi0_ros.training.vlm_pretrain import render_layout_set, shares

    assert shares(7, 3) == [3, 2, 2] and shares(4000, 1) == [4000]
    # Training rows of each embodiment first, then the held-out rows; seeds do not overlap across them.
    images, pos, colors, half, group = render_layout_set(["trossen_bimanual", "ur5e"], "pick_cube", 3, 2, 11, 56)
    assert group.tolist() == [0, 0, 1, 0, 1]
    aloha, _, _ = render_layouts("trossen_bimanual", "pick_cube", 3, 11, 56)   # seeds 11, 12 | 13
    ur5e, _, _ = render_layouts("ur5e", "pick_cube", 2, 14, 56)                # seeds 14 | 15
    assert np.array_equal(images, np.stack([aloha[0], aloha[1], ur5e[0], aloha[2], ur5e[1]]))
    assert not np.allclose(half[0], half[2])  # each in its own workspace's scale
    out = tmp_path / "pt"
    summary = pretrain(["trossen_bimanual", "ur5e"], out=str(out), n_layouts=4, holdout=2, steps=2, batch_size=4,
                       log_every=1)
    assert summary["embodiments"] == ["trossen_bimanual", "ur5e"]
    assert set(summary["final_by_embodiment"]) == {"trossen_bimanual", "ur5e"}
    assert load_checkpoint(out, dtype=torch.float32) is not None


def test_pretrain_continues_from_an_init_checkpoint(tmp_path) -> None:
    """--init: the grounding starts from that checkpoint's weights (e.g. to add robots to an earlier
    grounding), not from the preset's random ones; its tokenizer comes along."""
    first = tmp_path / "first"
    pretrain(out=str(first), n_layouts=4, holdout=2, steps=2, batch_size=4, seed=1)
    out = tmp_path / "more"
    summary = pretrain(["trossen_bimanual", "ur5e"], out=str(out), n_layouts=4, holdout=2, steps=1, batch_size=4,
                       lr=0.0, seed=0, init=str(first))
    assert summary["init"] == str(first)
    before = load_checkpoint(first, dtype=torch.float32).state_dict()
    after = load_checkpoint(out, dtype=torch.float32).state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)   # lr 0: nothing moved off the init
    torch.manual_seed(0)
    fresh = PI0Model(get_preset("sim", dtype="float32")).state_dict()
    assert any(not torch.equal(after[k], fresh[k]) for k in fresh)  # not the seed's random weights
    assert (out / "tokenizer.model").read_bytes() == (first / "tokenizer.model").read_bytes()
