"""Datasets written by LeRobot 0.6.1 itself (committed fixtures) read by Pi0Dataset and trained on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pi0_ros.data.dataset import DatasetFormatError, Pi0Dataset

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot_v30"
MAPPING = FIX / "mapping.yaml"


def _expected_state(ep: int, k: int) -> np.ndarray:
    """write_with_lerobot.py's state of frame k of episode ep."""
    t = k / 10
    return np.array([np.sin(t + ep), np.cos(t), 0.1 * k, 0.5 + 0.4 * np.sin(2 * t)], np.float32)


@pytest.mark.parametrize("kind", ["images", "video"])
def test_reads_lerobot_written_dataset(kind):
    pytest.importorskip("av") if kind == "video" else None
    ds = Pi0Dataset(FIX / kind, chunk_size=5, mapping=MAPPING, convention="robot")
    assert len(ds) == 21 and ds.asset_id == "tiny_lerobot" and ds.camera_slots == ["base_0_rgb", "left_wrist_0_rgb"]
    assert ds.slots.tolist() == [0, 1, 2, 3]
    s = ds[13]  # episode 1, frame 1
    assert s["prompt"] == "open the drawer" and ds[0]["prompt"] == "pick up the red cube"
    np.testing.assert_allclose(s["state"].numpy(), _expected_state(1, 1), atol=1e-6)
    np.testing.assert_allclose(s["actions"][0].numpy(), _expected_state(1, 1) + 0.05, atol=1e-6)
    img = s["images"]["base_0_rgb"].numpy()
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    # The wrist image is a flat grey 30*ep + 5*k (resize_with_pad adds black bars above/below? no: square).
    wrist = ds[13]["images"]["left_wrist_0_rgb"].numpy().astype(float)
    assert abs(wrist[100:124, 100:124].mean() - 35) < (4 if kind == "video" else 0.5)
    front = ds[4]["images"]["base_0_rgb"].numpy().astype(float)  # red channel 20*k of episode 0
    assert abs(front[150:200, 150:200, 0].mean() - 80) < (6 if kind == "video" else 0.5)


def test_default_mapping_and_errors():
    ds = Pi0Dataset(FIX / "images", chunk_size=2, load_images=False)
    assert ds.camera_slots == ["front", "wrist"] and [d["kind"] for d in ds.dims] == ["joint"] * 4
    with pytest.raises(DatasetFormatError, match="gives 2 dims"):
        Pi0Dataset(FIX / "images", mapping={"dims": [{"name": "a", "kind": "joint", "slot": 0}] * 2})
    with pytest.raises(DatasetFormatError, match="observation.images.top"):
        Pi0Dataset(FIX / "images", mapping={"cameras": {"observation.images.top": "base_0_rgb"}})


def test_fixture_is_what_lerobot_writes():
    info = json.loads((FIX / "images" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["video_files_size_in_mb"] == 200
    t = pq.read_table(FIX / "images" / "meta" / "tasks.parquet")
    assert json.loads(t.schema.metadata[b"pandas"])["index_columns"] == ["task"]


def test_trains_two_steps_on_the_lerobot_fixture(tmp_path):
    from pi0_ros.cli import main as cli_main

    rc = cli_main(["train", "--dataset", str(FIX / "images"), "--dataset-map", str(MAPPING), "--preset", "tiny",
                   "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--device", "cpu",
                   "--chunk-size", "4", "--warmup", "1"])
    assert rc == 0
    ckpt = tmp_path / "run" / "checkpoints"
    assert list(ckpt.rglob("model.safetensors")) and list(ckpt.rglob("tiny_lerobot/norm_stats.json"))
