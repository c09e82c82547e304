"""Which view of each camera a checkpoint was trained on, and the check that the robot gives it that
view (ROS-free).

A camera's region of interest (`cameras.<slot>.crop` in the embodiment YAML) is applied before the
model ever sees an image: by bag2dataset when the dataset is written, by the observation node at run
time. Change it after training and the policy sees a view it never saw, silently. So bag2dataset
records each slot's crop in the dataset's meta/pi0_ros.json (`camera_crops`), training writes them per
asset to `assets/<asset_id>/camera_views.json`, and the policy node refuses an embodiment whose crops
differ from the ones its checkpoint was trained on.

Format of camera_views.json: {"camera_crops": {slot: [top, left, height, width] | null}} (null = the
whole frame). A checkpoint without the file (trained on datasets that did not record their crops,
e.g. foreign LeRobot datasets) is not checked.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pi0_ros.images import Crop, check_crop

FILENAME = "camera_views.json"
ASSETS_DIRNAME = "assets"  # = pi0_ros.policy.ASSETS_DIRNAME (that module imports torch; the node checks before)
CameraCrops = dict[str, "Crop | None"]  # camera slot -> region of interest, None = the whole frame


class CameraViewMismatch(ValueError):
    """The embodiment crops a camera differently from the data the checkpoint was trained on."""


def parse_crops(raw: object, where: str) -> CameraCrops:
    """{slot: [top, left, height, width] | None} from JSON; ValueError naming `where` when malformed."""
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise ValueError(f"{where}: camera_crops must be a mapping {{camera slot: [top, left, height, width] | null}}")
    return {slot: None if c is None else check_crop(c, f"{where}: camera_crops.{slot}") for slot, c in raw.items()}


def crops_by_asset(datasets: Iterable[Any]) -> dict[str, CameraCrops]:
    """asset_id -> the camera crops its datasets were converted with (datasets with `asset_id`,
    `root` and `camera_crops`, None when unrecorded: those are left out). Two datasets of one asset
    that crop a slot differently are an error: one model input slot cannot have two views."""
    out: dict[str, CameraCrops] = {}
    first: dict[tuple[str, str], Any] = {}
    for d in datasets:
        if d.camera_crops is None:
            continue
        have = out.setdefault(d.asset_id, {})
        for slot, crop in d.camera_crops.items():
            if slot in have and have[slot] != crop:
                raise CameraViewMismatch(
                    f"asset {d.asset_id!r}: camera {slot} is cropped to {_show(have[slot])} in {first[(d.asset_id, slot)]} "
                    f"but to {_show(crop)} in {d.root}; convert both with the same cameras.{slot}.crop")
            have[slot] = crop
            first.setdefault((d.asset_id, slot), d.root)
    return out


def save(asset_dir: str | os.PathLike, crops: CameraCrops) -> Path:
    d = Path(asset_dir)
    d.mkdir(parents=True, exist_ok=True)
    f = d / FILENAME
    f.write_text(json.dumps({"camera_crops": {s: None if c is None else list(c) for s, c in sorted(crops.items())}},
                            indent=2) + "\n")
    return f


def load(asset_dir: str | os.PathLike) -> CameraCrops | None:
    """The crops a checkpoint's asset was trained on; None when the checkpoint does not record them."""
    f = Path(asset_dir) / FILENAME
    if not f.is_file():
        return None
    try:
        raw = json.loads(f.read_text())["camera_crops"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: expected {{\"camera_crops\": {{slot: [top, left, height, width] | null}}}}: {e}") from e
    return parse_crops(raw, str(f))


def load_for(checkpoint: str | os.PathLike, asset_id: str) -> CameraCrops | None:
    """load() of <checkpoint>/assets/<asset_id>."""
    return load(Path(checkpoint) / ASSETS_DIRNAME / asset_id)


def check(trained: CameraCrops | None, embodiment: Any, checkpoint: str = "the checkpoint",
          slots: Iterable[str] | None = None) -> None:
    """Raise CameraViewMismatch when the embodiment (its `cameras`, each with `slot` and `crop`) crops
    a camera the checkpoint was trained on differently. `slots`: only these (the model's) slots."""
    if trained is None:
        return
    wanted = set(slots) if slots is not None else None
    bad = []
    for cam in embodiment.cameras:
        if cam.slot not in trained or (wanted is not None and cam.slot not in wanted):
            continue
        if _close(trained[cam.slot], cam.crop):
            continue
        bad.append(f"{cam.slot}: trained on {_show(trained[cam.slot])}, the embodiment gives {_show(cam.crop)}")
    if bad:
        raise CameraViewMismatch(
            f"{checkpoint} was trained on other camera views than embodiment {embodiment.name!r} gives it "
            f"({'; '.join(bad)}). Set cameras.<slot>.crop in the embodiment YAML back to what it was trained on, "
            "or fine-tune on data converted with the new crop.")


def _close(a: Crop | None, b: Crop | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(abs(x - y) < 1e-6 for x, y in zip(a, b))


def _show(crop: Crop | None) -> str:
    return "the whole frame" if crop is None else "crop [" + ", ".join(f"{v:g}" for v in crop) + "]"
