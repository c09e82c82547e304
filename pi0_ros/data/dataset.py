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
``convention="robot"``.

Datasets read: bag2dataset's (its meta/pi0_ros.json says which dims, slots and cameras) and
LeRobot v3.0 datasets as LeRobot writes them: images embedded in the parquet (PNG/JPEG bytes)
or mp4 videos (decoded with PyAV), at any size (resize_with_pad to 224 here). A foreign
dataset needs a ``mapping`` (an embodiment name/YAML, or a small mapping YAML/dict):

    embodiment: ur5e                 # optional: dims (kind, slot, gripper open/closed) from it
    asset_id: my_robot               # norm-stats key (default: embodiment, else robot_type)
    state: observation.state         # LeRobot feature names (these are the defaults)
    action: action
    cameras:                         # LeRobot image/video key -> our camera slot
      observation.images.front: base_0_rgb
      observation.images.wrist: left_wrist_0_rgb
    dims:                            # without an embodiment (default: joints in slots 0..n-1)
      - {name: j0, kind: joint, slot: 0}
      - {name: gripper, kind: gripper, slot: 3, open: 0.0, closed: 1.0}

With an embodiment and no `cameras`, keys observation.images.<slot> map to that slot.
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

from pi0_ros.camera_views import parse_crops
from pi0_ros.model.normalize import NormStats, load_norm_stats

NUMERIC_COLUMNS = ("observation.state", "action", "episode_index", "frame_index", "index", "task_index")


class DatasetFormatError(ValueError):
    """The directory is not a dataset this reader understands; the message says what is wrong."""


def _fixed_list(col) -> np.ndarray:
    """A FixedSizeList/List column -> (N, d) float32."""
    col = col.combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), -1).astype(np.float32)


PI0_META = "pi0_ros.json"


def load_mapping(mapping: str | Path | dict | None) -> dict[str, Any] | None:
    """A mapping dict from a dict, a mapping YAML, an embodiment YAML, or an embodiment name."""
    if mapping is None or isinstance(mapping, dict):
        return mapping
    import yaml

    p = Path(mapping)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        spec = yaml.safe_load(p.read_text()) or {}
        if isinstance(spec, dict) and any(k in spec for k in ("cameras", "dims", "state", "action", "embodiment", "asset_id")) \
                and "joint_states" not in spec and "outputs" not in spec:
            if spec.get("embodiment") and not Path(str(spec["embodiment"])).is_absolute():
                cand = p.parent / str(spec["embodiment"])
                if cand.is_file():
                    spec["embodiment"] = str(cand)
            return spec
    return {"embodiment": str(mapping)}


def _mapping_meta(info: dict[str, Any], mapping: dict[str, Any], root: Path) -> dict[str, Any]:
    """Our meta (dims, cameras, state/action keys, asset_id) for a foreign dataset."""
    feats = info["features"]
    state_key, action_key = mapping.get("state", "observation.state"), mapping.get("action", "action")
    for k in (state_key, action_key):
        if k not in feats:
            raise DatasetFormatError(f"{root}: no feature {k!r}; features: {sorted(feats)}")
    n = int(feats[action_key]["shape"][0])
    cameras = dict(mapping.get("cameras") or {})
    emb_name = mapping.get("embodiment")
    if emb_name:
        from pi0_ros.robots.embodiment import load_embodiment

        emb = load_embodiment(emb_name)
        dims = [{"name": d.name, "kind": d.kind, "slot": d.slot, "open": d.open, "closed": d.closed} for d in emb.dims]
        if not cameras:
            cameras = {f"observation.images.{c}": c for c in emb.camera_slots() if f"observation.images.{c}" in feats}
        asset = mapping.get("asset_id", emb.asset_id)
    else:
        dims = mapping.get("dims") or [{"name": nm, "kind": "joint", "slot": i}
                                       for i, nm in enumerate(feats[action_key].get("names") or [f"a{i}" for i in range(n)])]
        asset = mapping.get("asset_id", info.get("robot_type") or root.name)
    dims = [{"open": None, "closed": None, **d} for d in dims]
    if len(dims) != n:
        raise DatasetFormatError(f"{root}: the mapping gives {len(dims)} dims, feature {action_key!r} has {n}")
    if int(feats[state_key]["shape"][0]) != n:
        raise DatasetFormatError(f"{root}: {state_key!r} has {feats[state_key]['shape'][0]} dims, {action_key!r} {n}")
    for k in cameras:
        if k not in feats or feats[k].get("dtype") not in ("image", "video"):
            raise DatasetFormatError(f"{root}: the mapping names camera {k!r}, not an image/video feature of the dataset")
    return {"dims": dims, "cameras": cameras, "state": state_key, "action": action_key, "asset_id": asset,
            "embodiment": emb_name or info.get("robot_type", "")}


class Pi0Dataset(Dataset):
    """Frames of one dataset with their action chunks (see module docstring)."""

    def __init__(self, root: str | Path, chunk_size: int = 50, *, convention: str = "model",
                 load_images: bool = True, camera_slots: list[str] | None = None,
                 mapping: str | Path | dict | None = None, image_size: int = 224) -> None:
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
        self.image_size = int(image_size)
        feats = self.info["features"]
        ours = self.root / "meta" / PI0_META
        mapping = load_mapping(mapping)
        if mapping is not None:
            meta = _mapping_meta(self.info, mapping, self.root)
        elif ours.is_file():
            meta = json.loads(ours.read_text())
        elif "pi0_ros" in self.info:  # datasets written before meta/pi0_ros.json
            meta = dict(self.info["pi0_ros"])
            meta.setdefault("cameras", {f"observation.images.{s}": s for s in meta.get("camera_slots", [])})
        else:
            meta = _mapping_meta(self.info, {}, self.root)
        self.meta = meta
        self.embodiment: str = meta.get("embodiment", self.info.get("robot_type", ""))
        self.asset_id: str = meta.get("asset_id", self.embodiment)
        self.dims: list[dict[str, Any]] = meta["dims"]
        self.state_key, self.action_key = meta.get("state", "observation.state"), meta.get("action", "action")
        cams = meta.get("cameras")
        if not cams:  # default: every image/video feature, its slot the key's last part
            cams = {k: k.removeprefix("observation.images.") for k, f in feats.items() if f.get("dtype") in ("image", "video")}
        self.camera_keys: dict[str, str] = {slot: key for key, slot in cams.items()}   # slot -> feature key
        # slot -> the region of interest it was converted with; None: not recorded (foreign datasets)
        raw_crops = meta.get("camera_crops")
        try:
            self.camera_crops = None if raw_crops is None else parse_crops(raw_crops, f"{self.root}/meta/{PI0_META}")
        except ValueError as e:
            raise DatasetFormatError(str(e)) from None
        self.slots_available = list(self.camera_keys)
        self.camera_slots = list(camera_slots) if camera_slots is not None else self.slots_available
        unknown = sorted(set(self.camera_slots) - set(self.slots_available))
        if unknown:
            raise DatasetFormatError(f"{self.root}: no camera slot(s) {unknown}; the dataset has {self.slots_available}")
        self.fps = float(self.info["fps"])
        self.video_keys = {s for s in self.camera_slots if feats[self.camera_keys[s]].get("dtype") == "video"}

        files = sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetFormatError(f"{self.root}: no data/chunk-*/file-*.parquet")
        img_cols = [self.camera_keys[s] for s in self.camera_slots if s not in self.video_keys]
        cols = [self.state_key, self.action_key, "episode_index", "frame_index", "index", "task_index", "timestamp"]
        tables = [pq.read_table(f, columns=cols + (img_cols if load_images else [])) for f in files]
        state = np.concatenate([_fixed_list(t[self.state_key]) for t in tables])
        action = np.concatenate([_fixed_list(t[self.action_key]) for t in tables])
        self.episode_index = np.concatenate([t["episode_index"].to_numpy() for t in tables]).astype(np.int64)
        self.frame_index = np.concatenate([t["frame_index"].to_numpy() for t in tables]).astype(np.int64)
        self.index = np.concatenate([t["index"].to_numpy() for t in tables]).astype(np.int64)
        self.task_index = np.concatenate([t["task_index"].to_numpy() for t in tables]).astype(np.int64)
        self.timestamp = np.concatenate([t["timestamp"].to_numpy() for t in tables]).astype(np.float64)
        order = np.argsort(self.index, kind="stable")
        if not np.array_equal(self.index[order], np.arange(len(order))):
            raise DatasetFormatError(f"{self.root}: frame 'index' column is not 0..N-1")
        state, action = state[order], action[order]
        self.episode_index, self.frame_index, self.task_index, self.timestamp = (
            self.episode_index[order], self.frame_index[order], self.task_index[order], self.timestamp[order])
        self._images: dict[str, list[dict[str, Any]]] = {}
        if load_images:
            for s in self.camera_slots:
                if s in self.video_keys:
                    continue
                rows = pa_concat(tables, self.camera_keys[s])
                self._images[s] = [rows[i] for i in order]
        self.image_paths = {s: [r.get("path") for r in v] for s, v in self._images.items()}
        self.state_robot, self.action_robot = state, action
        self.state = self._convert(state)
        self.action = self._convert(action)
        tasks = pq.read_table(self.root / "meta" / "tasks.parquet").to_pydict()
        if "task" not in tasks:
            raise DatasetFormatError(f"{self.root}: meta/tasks.parquet has no 'task' index/column")
        self.tasks = dict(zip(tasks["task_index"], tasks["task"]))
        # Episode end (exclusive) for every frame.
        ends = {}
        for e in np.unique(self.episode_index):
            idx = np.flatnonzero(self.episode_index == e)
            if not np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)):
                raise DatasetFormatError(f"{self.root}: episode {e} is not contiguous")
            ends[int(e)] = int(idx[-1]) + 1
        self.episode_end = np.array([ends[int(e)] for e in self.episode_index], dtype=np.int64)
        self._video_from: dict[tuple[str, int], tuple[Path, float]] = {}
        if self.video_keys and load_images:
            self._load_video_index()
        self._video_readers: dict[Path, Any] = {}

    def _load_video_index(self) -> None:
        """(slot, episode) -> (mp4 path, from_timestamp) from meta/episodes."""
        vpath = self.info.get("video_path")
        if not vpath:
            raise DatasetFormatError(f"{self.root}: video features but no video_path in meta/info.json")
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        eps = [r for f in files for r in pq.read_table(f).to_pylist()]
        for s in self.video_keys:
            key = self.camera_keys[s]
            for e in eps:
                p = self.root / vpath.format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                             file_index=e[f"videos/{key}/file_index"])
                self._video_from[(s, int(e["episode_index"]))] = (p, float(e[f"videos/{key}/from_timestamp"]))

    def episodes(self) -> list[int]:
        return [int(e) for e in np.unique(self.episode_index)]

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
        return load_norm_stats(self.root / self.meta.get("norm_stats", "norm_stats.json"))

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
        """uint8 (image_size, image_size, 3) RGB of frame i (embedded bytes, a file, or a video frame)."""
        if slot in self.video_keys:
            rgb = self._video_frame(slot, i)
        else:
            cell = self._images[slot][i] or {}
            data = cell.get("bytes")
            if data is not None:
                bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
                where = f"embedded image of frame {i}, slot {slot}"
            else:
                p = self.root / str(cell.get("path"))
                bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
                where = f"image {p} (frame {i}, slot {slot})"
            if bgr is None:
                raise FileNotFoundError(f"{self.root}: cannot read {where}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if rgb.shape[:2] != (self.image_size, self.image_size):
            from pi0_ros.model.preprocess import resize_with_pad

            rgb = resize_with_pad(rgb, self.image_size, self.image_size)
        return rgb

    def _video_frame(self, slot: str, i: int) -> np.ndarray:
        """The frame at from_timestamp + timestamp of the episode's mp4 (PyAV; nearest within 1/fps)."""
        import av

        path, t0 = self._video_from[(slot, int(self.episode_index[i]))]
        t = t0 + float(self.timestamp[i])
        container = self._video_readers.get(path)
        if container is None:
            container = self._video_readers[path] = av.open(str(path))
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        container.seek(max(0, int((t - 1.0 / self.fps) / tb)), stream=stream, backward=True, any_frame=False)
        best = None
        for frame in container.decode(stream):
            ft = float(frame.pts * tb)
            if best is None or abs(ft - t) < best[0]:
                best = (abs(ft - t), frame)
            if ft >= t - 1e-6:
                break
        if best is None or best[0] > 1.0 / self.fps:
            raise FileNotFoundError(f"{path}: no frame within 1/fps of {t:.4f} s (frame {i}, slot {slot})")
        return best[1].to_ndarray(format="rgb24")

    def __getstate__(self) -> dict[str, Any]:  # data loader workers open their own video readers
        state = dict(self.__dict__)
        state["_video_readers"] = {}
        return state

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
