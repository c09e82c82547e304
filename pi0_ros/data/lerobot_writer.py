"""Writing the LeRobot v3.0 layout (data parquet or AV1 videos, meta/, our pi0_ros.json).

Also pass 2 of bag2dataset, `write_episode_images`: decode the camera messages the plans chose
and hand them to the writer.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from pi0_ros.data import bagio
from pi0_ros.data.bag_read import ConversionError, bag_messages
from pi0_ros.data.dataset_stats import ImageStats, model_norm_stats, vector_stats
from pi0_ros.data.episodes import EpisodePlan
from pi0_ros.data.no_realtime import demote_new_realtime_threads, realtime_threads
from pi0_ros.images import decode_compressed, decode_raw
from pi0_ros.model.normalize import save_norm_stats
from pi0_ros.robots.embodiment import Embodiment

CODEBASE_VERSION = "v3.0"
IMAGE_SIZE = 224
CHUNKS_SIZE = 1000            # files per chunk directory (LeRobot default)
DATA_FILE_SIZE_MB = 100       # roll data files over at about this size (LeRobot default)
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
VIDEO_FILE_SIZE_MB = 200      # LeRobot default (one file per camera here)
PI0_META = "pi0_ros.json"     # our provenance, beside LeRobot's meta files (LeRobot warns on extra info.json keys)
NORM_STATS_FILE = "norm_stats.json"


def image_key(slot: str) -> str:
    return f"observation.images.{slot}"


def _decode(store: Any, msgtype: str, raw: bytes) -> np.ndarray:
    msg = store.deserialize_cdr(raw, msgtype)
    if msgtype.endswith("CompressedImage"):
        return decode_compressed(msg.data)
    return decode_raw(int(msg.height), int(msg.width), str(msg.encoding), int(msg.step), bool(msg.is_bigendian), msg.data)


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ConversionError("cannot encode a png image")
    return buf.tobytes()


# LeRobot 0.6.x's default RGB video encoder (lerobot/configs/video.py): AV1 in yuv420p, GOP 2.
VIDEO_CODEC = "libsvtav1"
VIDEO_PIX_FMT = "yuv420p"
VIDEO_OPTIONS = {"g": "2", "crf": "30", "preset": "12"}


class _VideoSink:
    """One mp4 per camera (all episodes back to back, frame k at pts k, time base 1/fps), via PyAV."""

    def __init__(self, path: Path, fps: int, size: int) -> None:
        try:
            import av  # optional dependency: only --video needs it
        except ImportError as e:
            raise ConversionError(f"--video needs PyAV (requirements/lock.txt pins av): {e}") from e

        path.parent.mkdir(parents=True, exist_ok=True)
        self.av = av
        self.path = path
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(VIDEO_CODEC, rate=fps, options=dict(VIDEO_OPTIONS))
        self.stream.pix_fmt = VIDEO_PIX_FMT
        self.stream.width = self.stream.height = size
        self.frames = 0
        # The encoder opens at the first frame; SVT-AV1 may make its threads real-time then.
        self._normal_threads = realtime_threads()

    def add(self, rgb: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        if self.frames == 0:
            demote_new_realtime_threads(self._normal_threads)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        demote_new_realtime_threads(self._normal_threads)


class DatasetWriter:
    """Streams episodes into the LeRobot v3.0 layout; `finish` writes meta/ and the statistics.

    Images are embedded in the data parquet as PNG bytes (LeRobot's image features), or with
    ``video=True`` encoded into one AV1 mp4 per camera (LeRobot's video features).
    """

    def __init__(self, root: Path, emb: Embodiment, fps: float, data_file_size_mb: int = DATA_FILE_SIZE_MB,
                 video: bool = False) -> None:
        if abs(fps - round(fps)) > 1e-9 or fps <= 0:
            raise ConversionError(f"fps must be a positive integer for a LeRobot dataset, got {fps:g}")
        self.root, self.emb, self.fps = root, emb, int(round(fps))
        self.video = video
        self.data_file_size_mb = int(data_file_size_mb)
        self.max_file_bytes = self.data_file_size_mb * 2**20
        n = emb.num_dims
        self.slots = emb.camera_slots()
        fields = [pa.field("observation.state", pa.list_(pa.float32(), n)), pa.field("action", pa.list_(pa.float32(), n))]
        img_t = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
        if not video:
            fields += [pa.field(image_key(s), img_t) for s in self.slots]
        fields += [pa.field("timestamp", pa.float32()), pa.field("frame_index", pa.int64()),
                   pa.field("episode_index", pa.int64()), pa.field("index", pa.int64()), pa.field("task_index", pa.int64())]
        self.schema = pa.schema(fields).with_metadata({"huggingface": json.dumps({"info": {"features": self._hf_features()}})})
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.img_stats: dict[tuple[int, str], ImageStats] = defaultdict(ImageStats)
        self.pngs: dict[tuple[int, str], dict[int, bytes]] = defaultdict(dict)
        self.videos: dict[str, _VideoSink] = {}
        self.video_next: dict[tuple[int, str], int] = defaultdict(int)
        self.total = 0
        self._file = (0, 0)
        self._writer: pq.ParquetWriter | None = None
        self._file_bytes = 0

    def _hf_features(self) -> dict[str, Any]:
        """The `huggingface` schema metadata LeRobot's parquet files carry (datasets.Features)."""
        n = self.emb.num_dims
        vec = {"feature": {"dtype": "float32", "_type": "Value"}, "length": n, "_type": "List"}
        f: dict[str, Any] = {}
        if not self.video:
            f.update({image_key(s): {"_type": "Image"} for s in self.slots})
        f["observation.state"] = vec
        f["action"] = vec
        f["timestamp"] = {"dtype": "float32", "_type": "Value"}
        for k in ("frame_index", "episode_index", "index", "task_index"):
            f[k] = {"dtype": "int64", "_type": "Value"}
        return f

    # -- data files
    def _data_path(self) -> Path:
        c, f = self._file
        return self.root / DATA_PATH.format(chunk_index=c, file_index=f)

    def _write_rows(self, table: pa.Table) -> tuple[int, int]:
        if self._writer is not None and self._file_bytes >= self.max_file_bytes:
            self._writer.close()
            c, f = self._file
            f += 1
            if f >= CHUNKS_SIZE:
                c, f = c + 1, 0
            self._file, self._writer, self._file_bytes = (c, f), None, 0
        if self._writer is None:
            p = self._data_path()
            p.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(p, self.schema)
        self._writer.write_table(table)
        self._file_bytes += table.nbytes
        return self._file

    def new_episode_index(self) -> int:
        return len(self.episodes)

    def add_image(self, slot: str, episode: int, frame: int, rgb224: np.ndarray, png: bytes | None = None) -> bytes | None:
        """Frame ``frame`` of ``episode`` for camera ``slot`` (frames of a camera arrive in order)."""
        self.img_stats[(episode, slot)].add(rgb224)
        if self.video:
            if frame != self.video_next[(episode, slot)]:
                raise ConversionError(f"internal: camera {slot} frame {frame} of episode {episode} out of order")
            if slot not in self.videos:
                self.videos[slot] = _VideoSink(self.root / VIDEO_PATH.format(video_key=image_key(slot), chunk_index=0,
                                                                             file_index=0), self.fps, IMAGE_SIZE)
            self.videos[slot].add(rgb224)
            self.video_next[(episode, slot)] += 1
            return None
        png = png if png is not None else _encode_png(rgb224)
        self.pngs[(episode, slot)][frame] = png
        return png

    def add_episode(self, plan: EpisodePlan) -> int:
        """Rows of one episode (its images must already be added by the caller)."""
        ep = len(self.episodes)
        F = plan.state.shape[0]
        task = self.tasks.setdefault(plan.prompt, len(self.tasks))
        cols: dict[str, Any] = {
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(plan.state.astype(np.float32).ravel()), self.emb.num_dims),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(plan.action.astype(np.float32).ravel()), self.emb.num_dims),
        }
        if not self.video:
            for s in self.slots:
                pngs = self.pngs.pop((ep, s), {})
                if len(pngs) != F:
                    raise ConversionError(f"internal: episode {ep} camera {s}: {len(pngs)} of {F} images")
                cols[image_key(s)] = [{"bytes": pngs[k], "path": f"frame-{k:06d}.png"} for k in range(F)]
        ts = (np.arange(F) / self.fps).astype(np.float32)
        cols["timestamp"] = pa.array(ts)
        cols["frame_index"] = pa.array(np.arange(F, dtype=np.int64))
        cols["episode_index"] = pa.array(np.full(F, ep, dtype=np.int64))
        cols["index"] = pa.array(np.arange(self.total, self.total + F, dtype=np.int64))
        cols["task_index"] = pa.array(np.full(F, task, dtype=np.int64))
        table = pa.table({f.name: pa.array(cols[f.name], type=f.type) if isinstance(cols[f.name], list) else cols[f.name]
                          for f in self.schema}, schema=self.schema)
        chunk, file = self._write_rows(table)
        row: dict[str, Any] = {
            "episode_index": ep, "tasks": [plan.prompt], "length": F,
            "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": self.total, "dataset_to_index": self.total + F,
        }
        if self.video:
            for s in self.slots:
                k = image_key(s)
                if self.video_next[(ep, s)] != F:
                    raise ConversionError(f"internal: episode {ep} camera {s}: {self.video_next[(ep, s)]} of {F} video frames")
                start = self.videos[s].frames - F
                row.update({f"videos/{k}/chunk_index": 0, f"videos/{k}/file_index": 0,
                            f"videos/{k}/from_timestamp": start / self.fps, f"videos/{k}/to_timestamp": (start + F) / self.fps})
        ep_stats = self._frame_stats(plan.state, plan.action, ts, np.arange(F), np.full(F, ep), np.arange(self.total, self.total + F),
                                     np.full(F, task))
        for s in self.slots:
            st = self.img_stats[(ep, s)]
            ep_stats[image_key(s)] = st.result()
            # Keep a few pixel samples per episode for the dataset's quantiles (bounded memory).
            st.samples = [x[::4].astype(np.float32) for x in st.samples[:: max(1, len(st.samples) // 4)][:4]]
        for feat, st in ep_stats.items():
            for k, v in st.items():
                row[f"stats/{feat}/{k}"] = v
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        # pi0_ros provenance (LeRobot ignores extra episode columns).
        row.update({"success": plan.success, "action_source": plan.action_source, "source_bag": str(plan.bag),
                    "source_start_ns": int(plan.frame_times[0]), "source_end_ns": int(plan.frame_times[-1])})
        self.episodes.append(row)
        self.states.append(plan.state)
        self.actions.append(plan.action)
        self.total += F
        return ep

    def _frame_stats(self, state, action, ts, frame_idx, ep_idx, index, task_idx) -> dict[str, Any]:
        return {"observation.state": vector_stats(state), "action": vector_stats(action),
                "timestamp": vector_stats(np.asarray(ts, dtype=np.float64)[:, None]),
                "frame_index": vector_stats(np.asarray(frame_idx)[:, None]),
                "episode_index": vector_stats(np.asarray(ep_idx)[:, None]),
                "index": vector_stats(np.asarray(index)[:, None]),
                "task_index": vector_stats(np.asarray(task_idx)[:, None])}

    def features(self) -> dict[str, Any]:
        """meta/info.json features, in LeRobot's order (the dataset's own, then the defaults)."""
        n = self.emb.num_dims
        features: dict[str, Any] = {}
        for s in self.slots:
            f: dict[str, Any] = {"dtype": "video" if self.video else "image", "shape": [IMAGE_SIZE, IMAGE_SIZE, 3],
                                 "names": ["height", "width", "channels"]}
            if self.video:
                f["info"] = {"video.height": IMAGE_SIZE, "video.width": IMAGE_SIZE, "video.codec": "av1",
                             "video.pix_fmt": VIDEO_PIX_FMT, "video.is_depth_map": False, "video.fps": self.fps,
                             "video.channels": 3, "has_audio": False}
            features[image_key(s)] = f
        features["observation.state"] = {"dtype": "float32", "shape": [n], "names": self.emb.dim_names}
        features["action"] = {"dtype": "float32", "shape": [n], "names": self.emb.dim_names}
        for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
                      ("task_index", "int64")):
            features[k] = {"dtype": dt, "shape": [1], "names": None}
        return features

    def finish(self, extra_info: dict[str, Any]) -> dict[str, Any]:
        if self._writer is not None:
            self._writer.close()
        for sink in self.videos.values():
            sink.close()
        if not self.episodes:
            raise ConversionError("no episodes to write")
        meta = self.root / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        eps = pa.Table.from_pylist(self.episodes)
        eps = eps.set_column(eps.schema.get_field_index("success"), "success", pa.array([e["success"] for e in self.episodes], pa.bool_()))
        pq.write_table(eps, self.root / EPISODES_PATH.format(chunk_index=0, file_index=0))
        write_tasks(meta / "tasks.parquet", sorted(self.tasks, key=self.tasks.__getitem__))
        state = np.concatenate(self.states)
        action = np.concatenate(self.actions)
        ep_idx = np.concatenate([np.full(e["length"], e["episode_index"]) for e in self.episodes])
        frame_idx = np.concatenate([np.arange(e["length"]) for e in self.episodes])
        task_idx = np.concatenate([np.full(e["length"], self.tasks[e["tasks"][0]]) for e in self.episodes])
        stats = {}
        for s in self.slots:
            agg = ImageStats()
            for e in self.episodes:
                agg.merge(self.img_stats[(e["episode_index"], s)])
            stats[image_key(s)] = agg.result()
        stats.update(self._frame_stats(state, action, (frame_idx / self.fps).astype(np.float32), frame_idx, ep_idx,
                                       np.arange(self.total), task_idx))
        (meta / "stats.json").write_text(json.dumps(stats, indent=4))
        save_norm_stats(self.root / NORM_STATS_FILE, model_norm_stats(self.emb, state, action))
        info = {  # exactly the keys and types LeRobot 0.6.x writes (lerobot.datasets.utils.DatasetInfo)
            "codebase_version": CODEBASE_VERSION,
            "fps": self.fps,
            "features": self.features(),
            "total_episodes": len(self.episodes),
            "total_frames": self.total,
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": self.data_file_size_mb,
            "video_files_size_in_mb": VIDEO_FILE_SIZE_MB,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video else None,
            "robot_type": self.emb.name,
            "splits": {"train": f"0:{len(self.episodes)}"},
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4))
        sources = sorted({e["action_source"] for e in self.episodes})
        ours = {
            "embodiment": self.emb.name,
            "asset_id": self.emb.asset_id,
            "action_source": sources[0] if len(sources) == 1 else "mixed",
            "units": "robot (joints rad, grippers driver units, base m/s rad/s); norm_stats.json is in model convention",
            "dims": [{"name": d.name, "kind": d.kind, "slot": d.slot, "open": d.open, "closed": d.closed} for d in self.emb.dims],
            "cameras": {image_key(s): s for s in self.slots},
            # The view each camera was converted with (pi0_ros.camera_views): the policy node checks
            # the checkpoint trained on these against the embodiment's cameras.<slot>.crop.
            "camera_crops": {c.slot: None if c.crop is None else list(c.crop) for c in self.emb.cameras},
            "state": "observation.state",
            "action": "action",
            "image_size": IMAGE_SIZE,
            "norm_stats": NORM_STATS_FILE,
            **extra_info,
        }
        (meta / PI0_META).write_text(json.dumps(ours, indent=2))
        return {**info, "pi0_ros": ours}


def write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as LeRobot writes it: a pandas frame indexed by `task` with a task_index column."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.3.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


def write_episode_images(writer: DatasetWriter, bag_path: Path, plans_with_index: list[tuple[int, EpisodePlan]],
                         emb: Embodiment, progress: bool = True) -> None:
    """Pass 2: decode the chosen camera messages once, crop each to its camera's region of interest
    (the embodiment's cameras.<slot>.crop) and resize it with padding to 224, exactly as the
    observation node does (pi0_ros.images.model_image), write the files."""
    from pi0_ros.images import model_image

    targets: dict[str, dict[int, list[tuple[int, int]]]] = {c.slot: defaultdict(list) for c in emb.cameras}
    for ep, plan in plans_with_index:
        for slot, ords in plan.camera_frames.items():
            for k, o in enumerate(ords):
                targets[slot][int(o)].append((ep, k))
    topic_slot = {c.topic: c.slot for c in emb.cameras}
    crops = {c.slot: c.crop for c in emb.cameras}
    total = sum(len(v) for v in targets.values())
    with Reader(bag_path) as reader:
        store = bagio.typestore(reader.connections)
        conns = [c for c in reader.connections if c.topic in topic_slot]
        ordinal = defaultdict(int)
        bar = tqdm(total=total, desc=f"images {bag_path.name}", unit="frame", disable=not progress, leave=False)
        for conn, _, raw in bag_messages(bag_path, reader, conns):
            slot = topic_slot[conn.topic]
            o = ordinal[slot]
            ordinal[slot] += 1
            dests = targets[slot].get(o)
            if not dests:
                continue
            try:
                rgb = _decode(store, conn.msgtype, raw)
            except Exception as e:  # noqa: BLE001
                raise ConversionError(f"{bag_path}: topic {conn.topic}: message {o}: cannot decode image: {e}") from e
            small = model_image(rgb, crops[slot], IMAGE_SIZE)
            enc = None
            for ep, k in sorted(dests):
                enc = writer.add_image(slot, ep, k, small, enc)
            bar.update(len(dests))
        bar.close()
