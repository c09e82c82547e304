"""Read a bag2dataset (LeRobot v3-style) dataset back as π0 training samples.

Sample i (frame i of its episode e) is a dict:
    images        {slot: uint8 (224, 224, 3) RGB tensor}   (resize_with_pad done at conversion)
    image_mask    {slot: bool tensor ()}                   False only for a missing file (never here)
    state         float32 (n,)       at frame i
    actions       float32 (H, n)     the FUTURE actions i .. i+H-1; past the episode end the
                                     last action is repeated
    action_is_pad bool (H,)          True where the action was repeated padding
    prompt        str                the episode's task
    index, episode_index, frame_index  int
State/actions are in the MODEL convention (grippers in [0, 1]) by default, in robot units with
``convention="robot"``; the gripper conversion uses the dims stored in meta/info.json, so no
embodiment YAML is needed to read a dataset.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from pi0_ros.model.normalize import NormStats, load_norm_stats

NUMERIC_COLUMNS = ("observation.state", "action", "episode_index", "frame_index", "index", "task_index")


class DatasetFormatError(ValueError):
    """The directory is not a dataset this reader understands; the message says what is wrong."""


def _fixed_list(col) -> np.ndarray:
    """A FixedSizeList/List column -> (N, d) float32."""
    col = col.combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), -1).astype(np.float32)


class Pi0Dataset(Dataset):
    """Frames of one dataset with their action chunks (see module docstring)."""

    def __init__(self, root: str | Path, chunk_size: int = 50, *, convention: str = "model",
                 load_images: bool = True, camera_slots: list[str] | None = None) -> None:
        self.root = Path(root)
        info_file = self.root / "meta" / "info.json"
        if not info_file.is_file():
            raise DatasetFormatError(f"{self.root}: no meta/info.json (not a bag2dataset/LeRobot v3 dataset)")
        self.info: dict[str, Any] = json.loads(info_file.read_text())
        if not str(self.info.get("codebase_version", "")).startswith("v3"):
            raise DatasetFormatError(f"{info_file}: codebase_version {self.info.get('codebase_version')!r}, expected v3.x")
        if convention not in ("model", "robot"):
            raise ValueError(f"convention must be 'model' or 'robot', got {convention!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.convention = convention
        self.load_images = load_images
        meta = self.info.get("pi0_ros", {})
        self.embodiment: str = meta.get("embodiment", self.info.get("robot_type", ""))
        self.asset_id: str = meta.get("asset_id", self.embodiment)
        self.dims: list[dict[str, Any]] = meta.get("dims") or [
            {"name": n, "kind": "joint", "slot": i, "open": None, "closed": None}
            for i, n in enumerate(self.info["features"]["action"]["names"])]
        self.slots_available = [k.removeprefix("observation.images.") for k, f in self.info["features"].items()
                                if k.startswith("observation.images.") and f.get("dtype") in ("image", "video")]
        self.camera_slots = list(camera_slots) if camera_slots is not None else self.slots_available
        unknown = sorted(set(self.camera_slots) - set(self.slots_available))
        if unknown:
            raise DatasetFormatError(f"{self.root}: no camera slot(s) {unknown}; the dataset has {self.slots_available}")
        self.fps = float(self.info["fps"])

        files = sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetFormatError(f"{self.root}: no data/chunk-*/file-*.parquet")
        cols = list(NUMERIC_COLUMNS) + [f"observation.images.{s}" for s in self.camera_slots]
        tables = [pq.read_table(f, columns=cols) for f in files]
        state = np.concatenate([_fixed_list(t["observation.state"]) for t in tables])
        action = np.concatenate([_fixed_list(t["action"]) for t in tables])
        self.episode_index = np.concatenate([t["episode_index"].to_numpy() for t in tables]).astype(np.int64)
        self.frame_index = np.concatenate([t["frame_index"].to_numpy() for t in tables]).astype(np.int64)
        self.index = np.concatenate([t["index"].to_numpy() for t in tables]).astype(np.int64)
        self.task_index = np.concatenate([t["task_index"].to_numpy() for t in tables]).astype(np.int64)
        order = np.argsort(self.index, kind="stable")
        if not np.array_equal(self.index[order], np.arange(len(order))):
            raise DatasetFormatError(f"{self.root}: frame 'index' column is not 0..N-1")
        state, action = state[order], action[order]
        self.episode_index, self.frame_index, self.task_index = (
            self.episode_index[order], self.frame_index[order], self.task_index[order])
        self.image_paths = {s: [r["path"] for r in pa_concat(tables, f"observation.images.{s}")] for s in self.camera_slots}
        for s in self.camera_slots:
            self.image_paths[s] = [self.image_paths[s][i] for i in order]
        self.state_robot, self.action_robot = state, action
        self.state = self._convert(state)
        self.action = self._convert(action)
        tasks = pq.read_table(self.root / "meta" / "tasks.parquet").to_pydict()
        self.tasks = dict(zip(tasks["task_index"], tasks["task"]))
        # Episode end (exclusive) for every frame.
        ends = {}
        for e in np.unique(self.episode_index):
            idx = np.flatnonzero(self.episode_index == e)
            if not np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)):
                raise DatasetFormatError(f"{self.root}: episode {e} is not contiguous")
            ends[int(e)] = int(idx[-1]) + 1
        self.episode_end = np.array([ends[int(e)] for e in self.episode_index], dtype=np.int64)

    # ------------------------------------------------------------------ conventions
    def _convert(self, x: np.ndarray) -> np.ndarray:
        if self.convention == "robot":
            return x.astype(np.float32)
        out = x.astype(np.float64)
        for i, d in enumerate(self.dims):
            if d["kind"] == "gripper":
                out[:, i] = (out[:, i] - d["open"]) / (d["closed"] - d["open"])
        return out.astype(np.float32)

    @property
    def num_dims(self) -> int:
        return self.state.shape[1]

    @property
    def slots(self) -> np.ndarray:
        """Index in the padded model vector of each dim."""
        return np.array([d["slot"] for d in self.dims], dtype=np.int64)

    def norm_stats(self) -> dict[str, NormStats]:
        """The dataset's norm_stats.json (model convention, slot layout)."""
        return load_norm_stats(self.root / self.info.get("pi0_ros", {}).get("norm_stats", "norm_stats.json"))

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.state)

    def action_chunk(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(actions (H, n), is_pad (H,)) for frame i."""
        idx = i + np.arange(self.chunk_size)
        end = self.episode_end[i]
        is_pad = idx >= end
        return self.action[np.minimum(idx, end - 1)], is_pad

    def read_image(self, slot: str, i: int) -> np.ndarray:
        p = self.root / self.image_paths[slot][i]
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{self.root}: cannot read image {p} (frame {i}, slot {slot})")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        actions, is_pad = self.action_chunk(i)
        sample: dict[str, Any] = {
            "state": torch.from_numpy(self.state[i].copy()),
            "actions": torch.from_numpy(np.ascontiguousarray(actions)),
            "action_is_pad": torch.from_numpy(is_pad),
            "prompt": self.tasks[int(self.task_index[i])],
            "index": i,
            "episode_index": int(self.episode_index[i]),
            "frame_index": int(self.frame_index[i]),
        }
        if self.load_images:
            sample["images"] = {s: torch.from_numpy(self.read_image(s, i)) for s in self.camera_slots}
            sample["image_mask"] = {s: torch.tensor(True) for s in self.camera_slots}
        return sample


def pa_concat(tables: list, column: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in tables:
        out.extend(t[column].to_pylist())
    return out
