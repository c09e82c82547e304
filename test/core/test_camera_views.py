"""A checkpoint remembers the camera views (regions of interest) it was trained on, and a robot whose
embodiment crops a camera otherwise is refused with a message that says which camera and how."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from pi0_ros import camera_views
from pi0_ros.camera_views import CameraViewMismatch
from pi0_ros.robots.embodiment import load_embodiment


def _ds(asset, root, crops):
    return SimpleNamespace(asset_id=asset, root=Path(root), camera_crops=crops)


def test_round_trip_and_unrecorded(tmp_path):
    crops = {"base_0_rgb": (0.2, 0.25, 0.5, 0.5), "left_wrist_0_rgb": None}
    f = camera_views.save(tmp_path / "assets" / "ur5e", crops)
    assert json.loads(f.read_text()) == {"camera_crops": {"base_0_rgb": [0.2, 0.25, 0.5, 0.5], "left_wrist_0_rgb": None}}
    assert camera_views.load_for(tmp_path, "ur5e") == crops
    assert camera_views.load_for(tmp_path, "franka") is None        # not recorded: nothing to check
    (tmp_path / "assets" / "bad").mkdir()
    (tmp_path / "assets" / "bad" / camera_views.FILENAME).write_text('{"camera_crops": {"base_0_rgb": [0, 0, 2, 1]}}')
    with pytest.raises(ValueError, match="top \\+ height <= 1"):
        camera_views.load_for(tmp_path, "bad")


def test_embodiment_that_matches_its_training_passes():
    emb = load_embodiment("ur5e")
    camera_views.check({c.slot: c.crop for c in emb.cameras}, emb)
    camera_views.check(None, emb)  # an old checkpoint: unknown, not checked


def test_changed_crop_is_refused_naming_camera_and_both_views(cropped_ur5e):
    emb = load_embodiment(cropped_ur5e)
    trained = {c.slot: c.crop for c in emb.cameras}
    moved = replace(emb, cameras=[replace(c, crop=None) if c.slot == "base_0_rgb" else c for c in emb.cameras])
    with pytest.raises(CameraViewMismatch, match="ckpt X") as err:
        camera_views.check(trained, moved, "ckpt X")
    msg = str(err.value)
    assert "base_0_rgb: trained on crop [0.2, 0.25, 0.5, 0.5], the embodiment gives the whole frame" in msg
    assert "left_wrist" not in msg and "cameras.<slot>.crop" in msg
    # Only the model's slots matter: a camera the model does not read may change.
    camera_views.check(trained, moved, slots=["left_wrist_0_rgb"])


def test_datasets_of_one_asset_must_agree():
    a = _ds("ur5e", "/d/a", {"base_0_rgb": (0.2, 0.25, 0.5, 0.5)})
    b = _ds("ur5e", "/d/b", {"base_0_rgb": None})
    other = _ds("franka", "/d/c", {"base_0_rgb": None})
    foreign = _ds("ur5e", "/d/lerobot", None)
    assert camera_views.crops_by_asset([a, other, foreign]) == {"ur5e": {"base_0_rgb": (0.2, 0.25, 0.5, 0.5)},
                                                               "franka": {"base_0_rgb": None}}
    with pytest.raises(CameraViewMismatch, match="/d/a but to the whole frame in /d/b"):
        camera_views.crops_by_asset([a, b])
