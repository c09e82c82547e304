"""`pi0-ros bag2dataset`: rosbag2 episodes (mcap or sqlite3) -> a LeRobotDataset v3-style dataset.

    pi0-ros bag2dataset recordings/ --embodiment ur5e --out datasets/pick [--fps 20] [--actions auto]

BAG arguments are bag directories (metadata.yaml), single .mcap/.db3 files, or directories
holding bag directories (e.g. the output of `pi0-ros record`; every episode_* inside).

Per bag:
1. Episodes: each /pi0_episode start..stop marker pair is one episode (prompt and success from
   the markers); a bag without markers is one episode, tagged from its episode.json, else from
   its /prompt messages: a /prompt whose text changes mid-episode starts a new episode there.
   An explicit --prompt labels every episode and wins over the bag's own prompts (warned).
0. Before anything is written, every bag is checked (mcap chunk CRCs, sqlite integrity, topics,
   episodes); the dataset is written into a temporary directory renamed on success and
   removed on failure, so a failed run leaves nothing behind.
2. Synchronisation (times: header stamps of sensor messages, bag receive times for
   headerless messages such as commands; --time-source bag uses receive times everywhere, and
   `auto` falls back to it when header and receive clocks disagree by more than 2 s). Frame k
   is at t0 + k/fps: joint positions and base velocities are linearly interpolated per dim
   (dims are matched BY NAME through the embodiment), each camera gives its nearest frame,
   which must lie within --image-tolerance.
3. Gaps: a topic that is silent for more than --max-gap seconds inside an episode either splits
   the episode into the pieces around the gap (--on-gap split, default; pieces shorter than
   --min-frames are dropped) or rejects the bag (--on-gap reject). Either way the CLI names
   the bag, topic and time.
4. Action labels (robot units, embodiment dim order):
   - commands: the commanded targets on the embodiment's command topics (Float64MultiArray
     data, JointTrajectory first point by joint name, Twist fields), zero-order hold: the label
     of frame k is the last command at or before t_k. Episodes start at the first frame at
     which every output has been commanded. Dims of action outputs (GripperCommand goals: no
     topic to record) take the executor's commanded targets on /pi0_executor/commanded when the
     bag has them (pi0-ros collect and the recorder record it), else the next measured state.
   - next_state: the measured state of frame k+1 (the last frame repeats its own state).
   - auto (default): commands when every command topic has messages in the episode, else
     next_state. The choice is printed, stored per episode (meta/episodes: action_source) and
     in meta/info.json (pi0_ros.action_source: commands | next_state | mixed).

Output layout: exactly what LeRobot 0.6.x writes (codebase_version v3.0), so LeRobotDataset
loads it unchanged, plus two files of ours beside it:

    meta/info.json            LeRobot's keys and types only (fps int, *_size_in_mb int, features, paths)
    meta/stats.json           per feature: min, max, mean, std, count, q01, q10, q50, q90, q99 (robot
                              units; images per channel in [0, 1], shape (3, 1, 1))
    meta/tasks.parquet        indexed by `task` (the prompt), column task_index (pandas layout)
    meta/episodes/chunk-000/file-000.parquet
                              episode_index, tasks, length, data/*, dataset_from/to_index,
                              [videos/<key>/*], stats/<feature>/<stat>, meta/episodes/*, and ours:
                              success, action_source, source_bag, source_start_ns, source_end_ns
    data/chunk-000/file-000.parquet
                              observation.images.<slot> ({bytes: PNG, path}) unless --video,
                              observation.state, action (float32 (n,) robot units), timestamp,
                              frame_index, episode_index, index, task_index
    videos/observation.images.<slot>/chunk-000/file-000.mp4   with --video: AV1 yuv420p (LeRobot's
                              default encoder), all episodes back to back
    meta/pi0_ros.json         ours: embodiment, dims (slot, gripper open/closed), camera slots,
                              action_source, sources
    norm_stats.json           openpi format {"norm_stats": {"state", "actions"}}: MODEL convention
                              (grippers in [0, 1]), one entry per slot 0..max slot, unpadded
Images are 224x224 RGB (resize_with_pad).
"""
from __future__ import annotations

import argparse
import json
import sys
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from pi0_ros.data import bagio
from pi0_ros.data.no_realtime import demote_new_realtime_threads, realtime_threads
from pi0_ros.data.record import EPISODE_JSON
from pi0_ros.data.topics import COMMANDED_TOPIC, EPISODE_TOPIC, PROMPT_TOPIC
from pi0_ros.images import decode_compressed, decode_raw
from pi0_ros.model.normalize import NormStats, save_norm_stats
from pi0_ros.robots.embodiment import BASE_KINDS, Embodiment, load_embodiment

logger = logging.getLogger(__name__)

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
CLOCK_MISMATCH_S = 2.0        # header vs receive clock disagreement that switches `auto` to bag time
ACTION_SOURCES = ("auto", "commands", "next_state")
_TWIST = {"base_vx": ("linear", "x"), "base_vy": ("linear", "y"), "base_wz": ("angular", "z")}


class ConversionError(ValueError):
    """A bag cannot be converted; the message names the bag, the topic and why."""


def image_key(slot: str) -> str:
    return f"observation.images.{slot}"


# ------------------------------------------------------------------------------ reading
@dataclass
class Series:
    """Samples of one scalar over time: t (ns, sorted) and v."""

    topic: str
    t: list[int] = field(default_factory=list)
    v: list[float] = field(default_factory=list)

    def arrays(self, a: int | None = None, b: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(self.t, dtype=np.int64)
        v = np.asarray(self.v, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        if a is not None:
            keep = (t >= a) & (t <= b)
            t, v = t[keep], v[keep]
        return t, v


@dataclass
class BagContent:
    path: Path
    topics: dict[str, str]                          # topic -> msgtype
    counts: dict[str, int]
    state: dict[str, Series]                        # dim name -> series
    commands: dict[str, Series]                     # dim name -> series
    commanded: dict[str, Series]                    # dim name -> the executor's commanded targets
    cameras: dict[str, np.ndarray]                  # slot -> frame times (ns) in bag order
    prompts: list[tuple[int, str]]
    markers: list[tuple[int, dict[str, Any]]]
    episode_json: dict[str, Any] | None
    time_source: str
    start_ns: int
    end_ns: int


@dataclass
class EpisodePlan:
    bag: Path
    prompt: str
    success: bool | None
    action_source: str
    frame_times: np.ndarray                          # (F,) ns
    state: np.ndarray                                # (F, n) robot units
    action: np.ndarray                               # (F, n) robot units
    camera_frames: dict[str, np.ndarray]             # slot -> (F,) ordinal of the camera message
    note: str = ""


def find_bags(paths: list[str | Path]) -> list[Path]:
    """Expand CLI paths into bag paths (bag dirs, .mcap/.db3 files, dirs of bag dirs)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConversionError(f"{p}: no such bag or directory")
        if p.is_file() or (p / "metadata.yaml").is_file():
            out.append(p)
            continue
        if any(f.suffix in (".mcap", ".db3") for f in p.iterdir() if f.is_file()):
            raise ConversionError(f"{p}: a bag directory without metadata.yaml (the recording was interrupted?): "
                                  f"run `ros2 bag reindex {p}` to rebuild it, or pass the .mcap/.db3 file itself")
        subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "metadata.yaml").is_file())
        if not subs:
            raise ConversionError(f"{p}: not a rosbag2 directory (no metadata.yaml) and holds no bag directories")
        out.extend(subs)
    return out


def _messages(path: Path, reader: Reader, conns: list, tqdm_kw: dict | None = None):
    """reader.messages(conns), with any storage error turned into a ConversionError naming the bag."""
    it = reader.messages(conns)
    if tqdm_kw is not None:
        it = tqdm(it, **tqdm_kw)
    try:
        yield from it
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - rosbags raises ReaderError, struct.error, zstd errors, ...
        raise ConversionError(f"{path}: damaged bag: {type(e).__name__}: {e}") from e


def check_bag(path: Path) -> None:
    """Verify the bag's files (mcap chunk CRCs, sqlite integrity) before anything is written."""
    try:
        counts = bagio.verify_bag(path)
    except bagio.BagCorruptError as e:
        raise ConversionError(f"damaged bag {path}: {e}") from e
    if counts["chunks_without_crc"]:
        logger.warning("%s: %d of %d mcap chunks carry no CRC: damage inside them cannot be detected",
                       path, counts["chunks_without_crc"], counts["chunks"])


def _stamp_ns(msg: Any) -> int | None:
    h = getattr(msg, "header", None)
    if h is None:
        return None
    ns = int(h.stamp.sec) * 1_000_000_000 + int(h.stamp.nanosec)
    return ns if ns > 0 else None


def read_bag(path: Path, emb: Embodiment, time_source: str = "auto", progress: bool = True) -> BagContent:
    """Pass 1: everything but the pixels (camera messages are only timed)."""
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises several types
        raise ConversionError(f"{path}: cannot open as rosbag2: {type(e).__name__}: {e}") from e
    try:
        store = bagio.typestore(reader.connections)
        topics = {c.topic: c.msgtype for c in reader.connections}
        counts: dict[str, int] = defaultdict(int)
        for c in reader.connections:
            counts[c.topic] += c.msgcount

        def need(topic: str, types: tuple[str, ...], what: str) -> None:
            if topic not in topics or counts[topic] == 0:
                have = ", ".join(sorted(t for t in topics if counts[t])) or "none"
                raise ConversionError(f"{path}: topic {topic} ({what}) is missing or empty; topics with messages: {have}")
            if topics[topic] not in types:
                raise ConversionError(f"{path}: topic {topic} ({what}) has type {topics[topic]}, expected {' or '.join(types)}")

        for cam in emb.cameras:
            need(cam.topic, ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"), f"camera {cam.slot}")
        for src, topic in emb.joint_state_sources.items():
            need(topic, ("sensor_msgs/msg/JointState",), f"joint states '{src}'")
        if emb.odometry_topic:
            need(emb.odometry_topic, ("nav_msgs/msg/Odometry",), "base odometry")

        # Per-dim series. Joint states by (topic, joint name) -> dim names.
        state = {d.name: Series(emb.joint_state_sources[d.source] if d.source else emb.odometry_topic or "") for d in emb.dims}
        by_topic_joint: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for d in emb.dims:
            if d.source:
                by_topic_joint[emb.joint_state_sources[d.source]][d.joint].append(d.name)  # type: ignore[index]
        commands: dict[str, Series] = {}
        out_by_topic = {}
        for o in emb.outputs:
            if topics.get(o.topic) == o.type and counts[o.topic]:
                out_by_topic[o.topic] = o
                for dn in o.dims:
                    commands[dn] = Series(o.topic)
        # Dims of action outputs: the executor's commanded targets, when the bag has them.
        action_dims = {dn for o in emb.outputs if o.is_action for dn in o.dims}
        commanded = {dn: Series(COMMANDED_TOPIC) for dn in action_dims}
        use_commanded = bool(action_dims) and topics.get(COMMANDED_TOPIC) == "sensor_msgs/msg/JointState" \
            and counts[COMMANDED_TOPIC] > 0
        cam_topics = {c.topic: c.slot for c in emb.cameras}
        cam_times: dict[str, list[int]] = {c.slot: [] for c in emb.cameras}
        offsets: dict[str, list[int]] = defaultdict(list)
        prompts: list[tuple[int, str]] = []
        markers: list[tuple[int, dict[str, Any]]] = []
        wanted = set(by_topic_joint) | set(out_by_topic) | set(cam_topics) | {PROMPT_TOPIC, EPISODE_TOPIC}
        if use_commanded:
            wanted.add(COMMANDED_TOPIC)
        if emb.odometry_topic:
            wanted.add(emb.odometry_topic)
        conns = [c for c in reader.connections if c.topic in wanted]
        odom_dims = [d for d in emb.dims if d.kind in BASE_KINDS]
        kinds = {d.name: d.kind for d in emb.dims}
        total = sum(c.msgcount for c in conns)
        bag_t: dict[str, list[int]] = defaultdict(list)
        for conn, t_bag, raw in _messages(path, reader, conns, tqdm_kw=dict(total=total, desc=f"read {path.name}",
                                                                             unit="msg", disable=not progress, leave=False)):
            topic = conn.topic
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as e:  # noqa: BLE001
                raise ConversionError(f"{path}: topic {topic}: cannot deserialize {conn.msgtype}: {e}") from e
            stamp = _stamp_ns(msg)
            if stamp is not None:
                offsets[topic].append(stamp - t_bag)
            t = stamp if stamp is not None else t_bag
            bag_t[topic].append(t_bag)
            if topic in cam_topics:
                cam_times[cam_topics[topic]].append(t)
            elif topic in by_topic_joint:
                names, pos = list(msg.name), np.asarray(msg.position, dtype=np.float64)
                if len(names) != len(pos):
                    raise ConversionError(f"{path}: topic {topic}: JointState with {len(names)} names but {len(pos)} positions")
                for jn, p in zip(names, pos):
                    for dn in by_topic_joint[topic].get(jn, ()):
                        if math.isfinite(p):
                            state[dn].t.append(t)
                            state[dn].v.append(float(p))
            elif topic == emb.odometry_topic:
                for d in odom_dims:
                    part, axis = _TWIST[d.kind]
                    state[d.name].t.append(t)
                    state[d.name].v.append(float(getattr(getattr(msg.twist.twist, part), axis)))
            elif topic in out_by_topic:
                _add_command(path, out_by_topic[topic], msg, t, commands, kinds)
            elif topic == COMMANDED_TOPIC:
                for dn, p in zip(list(msg.name), msg.position):
                    if dn in commanded and math.isfinite(p):
                        commanded[dn].t.append(t)
                        commanded[dn].v.append(float(p))
            elif topic == PROMPT_TOPIC:
                prompts.append((t_bag, str(msg.data)))
            elif topic == EPISODE_TOPIC:
                try:
                    markers.append((t_bag, json.loads(msg.data)))
                except json.JSONDecodeError:
                    logger.warning("%s: %s: ignoring a marker that is not JSON: %r", path, topic, msg.data[:80])
        start_ns, end_ns = reader.start_time, reader.end_time
    finally:
        reader.close()

    for d in emb.dims:
        if not state[d.name].t:
            where = f"joint '{d.joint}' on {state[d.name].topic}" if d.source else f"base velocity on {emb.odometry_topic}"
            raise ConversionError(f"{path}: no samples for dim '{d.name}' ({where}): is the joint name right?")

    # Header clocks vs receive clock.
    if time_source == "auto":
        bad = {tp: np.median(np.abs(o)) * 1e-9 for tp, o in offsets.items() if o and np.median(np.abs(o)) * 1e-9 > CLOCK_MISMATCH_S}
        time_source = "header"
        if bad:
            tp, off = max(bad.items(), key=lambda kv: kv[1])
            logger.warning("%s: header stamps of %s are %.1f s off the receive time (sim time vs wall clock?): "
                           "using bag receive times for every topic", path, tp, off)
            time_source = "bag"
    if time_source == "bag":  # re-time everything with receive times
        cam_times = {s: list(bag_t[t]) for t, s in cam_topics.items()}
        state = _retime(state, bag_t, offsets)
        commanded = _retime(commanded, bag_t, offsets)
    ep_json = None
    if path.is_dir() and (path / EPISODE_JSON).is_file():
        ep_json = json.loads((path / EPISODE_JSON).read_text())
    return BagContent(path, topics, dict(counts), state, commands, {dn: s for dn, s in commanded.items() if s.t},
                      {s: np.asarray(v, dtype=np.int64) for s, v in cam_times.items()},
                      prompts, markers, ep_json, time_source, start_ns, end_ns)


def _retime(state: dict[str, Series], bag_t: dict[str, list[int]], offsets: dict[str, list[int]]) -> dict[str, Series]:
    """Shift stamped series onto the receive clock with each topic's median offset."""
    out = {}
    for name, s in state.items():
        off = int(np.median(offsets[s.topic])) if offsets.get(s.topic) else 0
        out[name] = Series(s.topic, [t - off for t in s.t], list(s.v))
    return out


def _add_command(path: Path, o: Any, msg: Any, t: int, commands: dict[str, Series], kinds: dict[str, str]) -> None:
    if o.type == "std_msgs/msg/Float64MultiArray":
        data = np.asarray(msg.data, dtype=np.float64)
        if data.size != len(o.dims):
            raise ConversionError(f"{path}: topic {o.topic}: Float64MultiArray has {data.size} values, "
                                  f"output '{o.name}' has {len(o.dims)} dims")
        values = dict(zip(o.dims, data))
    elif o.type == "trajectory_msgs/msg/JointTrajectory":
        if not msg.points:
            return
        names = list(msg.joint_names) or list(o.joint_names)
        stamped = _stamp_ns(msg) is not None
        # A stamped multi-point trajectory (one per chunk) labels each point at its own time,
        # stamp + time_from_start, and replaces what an older trajectory had planned from there on
        # (as joint_trajectory_controller does); unstamped: its first point, at receipt.
        points = msg.points if stamped else msg.points[:1]
        for k, pt in enumerate(points):
            pos = np.asarray(pt.positions, dtype=np.float64)
            if len(names) != pos.size:
                raise ConversionError(f"{path}: topic {o.topic}: JointTrajectory has {len(names)} joint names, {pos.size} positions")
            tk = t + (int(pt.time_from_start.sec) * 1_000_000_000 + int(pt.time_from_start.nanosec) if stamped else 0)
            by_joint = dict(zip(names, pos))
            for dn, jn in zip(o.dims, o.joint_names):
                if jn not in by_joint or not math.isfinite(by_joint[jn]):
                    continue
                s = commands[dn]
                if k == 0:
                    while s.t and s.t[-1] >= tk:  # superseded by this trajectory
                        s.t.pop()
                        s.v.pop()
                s.t.append(tk)
                s.v.append(float(by_joint[jn]))
        return
    elif o.type in ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"):
        tw = msg.twist if o.type.endswith("TwistStamped") else msg
        values = {}
        for dn in o.dims:  # dims are named freely; their kind decides the Twist field
            part, axis = _TWIST[kinds[dn]]
            values[dn] = float(getattr(getattr(tw, part), axis))
    else:
        raise ConversionError(f"{path}: topic {o.topic}: command type {o.type} is not supported for action labels")
    for dn, v in values.items():
        if math.isfinite(v):
            commands[dn].t.append(t)
            commands[dn].v.append(float(v))


# ------------------------------------------------------------------------------ planning
def _prompt_segments(bag: BagContent, a: int, b: int, first: str | None) -> list[tuple[int, int, str | None]]:
    """Split [a, b] where the /prompt text changes: [(start, stop, prompt in effect)].

    The first piece is labelled ``first`` when given (episode.json), else by the last /prompt
    at or before ``a``, else by the first /prompt inside the window.
    """
    prompts = sorted(bag.prompts, key=lambda x: x[0])
    before = [p for t, p in prompts if t <= a]
    inside = [(t, p) for t, p in prompts if a < t < b]
    current = first or (before[-1] if before else inside[0][1] if inside else None)
    segs: list[tuple[int, int, str | None]] = []
    start = a
    for t, p in inside:
        if p != current:
            segs.append((start, t, current))
            start, current = t, p
    segs.append((start, b, current))
    return segs


def _episode_windows(bag: BagContent, default_prompt: str | None) -> list[tuple[int, int, str, bool | None, bool]]:
    """[(start_ns, stop_ns, prompt, success, split_by_prompt)] of one bag.

    Episodes: /pi0_episode marker pairs, else the whole bag; either is cut where the /prompt
    text changes (unless the marker names its prompt). Prompts: the marker's, else
    episode.json's (first piece), else the /prompt in effect. An explicit ``default_prompt``
    (--prompt) labels every episode and wins over the bag's own prompts, with a warning.
    """
    wins = []
    open_: tuple[int, dict] | None = None
    for t, m in sorted(bag.markers, key=lambda x: x[0]):
        if m.get("event") == "start":
            if open_ is not None:
                wins.append((open_[0], t, open_[1].get("prompt"), None))
            open_ = (t, m)
        elif m.get("event") == "stop" and open_ is not None:
            wins.append((open_[0], t, open_[1].get("prompt"), m.get("success")))
            open_ = None
    if open_ is not None:
        wins.append((open_[0], bag.end_ns, open_[1].get("prompt"), None))
    ej = bag.episode_json or {}
    if not wins:
        wins = [(bag.start_ns, bag.end_ns, None, ej.get("success"))]
    out = []
    for a, b, prompt, success in wins:
        segs = [(a, b, prompt)] if prompt else _prompt_segments(bag, a, b, ej.get("prompt"))
        if len(segs) > 1:
            logger.warning("%s: the %s prompt changes %d time(s) inside one episode: starting a new episode at each change",
                           bag.path, PROMPT_TOPIC, len(segs) - 1)
        for k, (s0, s1, p) in enumerate(segs):
            if default_prompt:
                if p and p != default_prompt:
                    logger.warning("%s: --prompt %r overrides the bag's prompt %r (%.2f-%.2f s)", bag.path,
                                   default_prompt, p, (s0 - bag.start_ns) * 1e-9, (s1 - bag.start_ns) * 1e-9)
                p = default_prompt
            if not p:
                raise ConversionError(f"{bag.path}: no prompt for the episode at {s0 * 1e-9:.3f} s (no markers, episode.json "
                                      f"or {PROMPT_TOPIC} messages): pass --prompt")
            out.append((s0, s1, p, success if k == len(segs) - 1 else None, len(segs) > 1))
    return out


def _gaps(t: np.ndarray, max_gap_ns: int) -> list[tuple[int, int]]:
    d = np.diff(t)
    idx = np.flatnonzero(d > max_gap_ns)
    return [(int(t[i]), int(t[i + 1])) for i in idx]


def plan_episodes(bag: BagContent, emb: Embodiment, fps: float, actions: str = "auto", max_gap: float = 0.5,
                  image_tolerance: float | None = None, on_gap: str = "split", min_frames: int = 2,
                  default_prompt: str | None = None) -> list[EpisodePlan]:
    """Turn one read bag into resampled episodes (no pixels yet)."""
    if actions not in ACTION_SOURCES:
        raise ValueError(f"actions must be one of {ACTION_SOURCES}, got {actions!r}")
    max_gap_ns = int(max_gap * 1e9)
    tol_ns = int((image_tolerance if image_tolerance is not None else max_gap / 2) * 1e9)
    period_ns = 1e9 / fps
    plans: list[EpisodePlan] = []
    for ei, (a, b, prompt, success, split) in enumerate(_episode_windows(bag, default_prompt)):
        where = f"{bag.path}: episode {ei} ({(a - bag.start_ns) * 1e-9:.2f}-{(b - bag.start_ns) * 1e-9:.2f} s into the bag)"
        series: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        for d in emb.dims:
            t, v = bag.state[d.name].arrays(a, b)
            series[f"state:{d.name}"] = (bag.state[d.name].topic, t, v)
        cams = {}
        for c in emb.cameras:
            ct = bag.cameras[c.slot]
            order = np.arange(ct.size)
            keep = (ct >= a) & (ct <= b)
            cams[c.slot] = (c.topic, ct[keep], order[keep])
        # Dims of action outputs (gripper actions) have no command topic: labelled from the
        # executor's commanded targets when recorded (COMMANDED_TOPIC), else from the next state.
        topic_dims = [dn for o in emb.outputs if not o.is_action for dn in o.dims]
        have_cmds = bool(topic_dims) and all(dn in bag.commands and bag.commands[dn].arrays(a, b)[0].size
                                             for dn in topic_dims)
        source = actions
        if actions == "auto":
            source = "commands" if have_cmds else "next_state"
        elif actions == "commands" and not have_cmds:
            missing = sorted({o.topic for o in emb.outputs for dn in o.dims if not o.is_action and
                              (dn not in bag.commands or not bag.commands[dn].arrays(a, b)[0].size)})
            raise ConversionError(f"{where}: --actions commands but no commands on {', '.join(missing)}")
        cmd = {}
        if source == "commands":
            for dn in topic_dims:
                t, v = bag.commands[dn].arrays(a, b)
                cmd[dn] = (bag.commands[dn].topic, t, v)
            # Action outputs (e.g. GripperCommand): what the executor commanded, if recorded. The
            # next measured state would teach a gripper to aim at where it stalled on the object
            # (half open), i.e. to hold it with no force.
            for dn, series_ in bag.commanded.items():
                t, v = series_.arrays(a, b)
                if t.size:
                    cmd[dn] = (COMMANDED_TOPIC, t, v)

        timed = [(k, tp, t) for k, (tp, t, _) in series.items()] + [(f"camera:{s}", tp, t) for s, (tp, t, _) in cams.items()]
        timed += [(f"command:{dn}", tp, t) for dn, (tp, t, _) in cmd.items()]
        for key, topic, t in timed:
            if t.size == 0:
                raise ConversionError(f"{where}: empty episode: no messages on {topic} ({key})")
        t0 = max(int(t[0]) for _, _, t in timed)
        t1 = min(int(t[-1]) for _, _, t in timed)
        if t1 - t0 < (min_frames - 1) * period_ns:
            if split:
                logger.warning("%s: dropping a %.3f s piece between prompt changes (< %d frames)", where,
                               max(0, t1 - t0) * 1e-9, min_frames)
                continue
            raise ConversionError(f"{where}: empty episode: the topics overlap for only {max(0, t1 - t0) * 1e-9:.3f} s "
                                  f"(< {min_frames} frames at {fps:g} fps)")
        gaps = set()  # one per topic and gap, not one per joint of the topic
        for key, topic, t in timed:
            for g0, g1 in _gaps(t, max_gap_ns):
                if g1 > t0 and g0 < t1:
                    gaps.add((g0, g1, topic))
        gaps = sorted(gaps)
        if gaps and on_gap == "reject":
            g0, g1, topic = gaps[0]
            raise ConversionError(f"{where}: time gap of {(g1 - g0) * 1e-9:.2f} s on {topic} at "
                                  f"{(g0 - bag.start_ns) * 1e-9:.2f} s (> --max-gap {max_gap} s); --on-gap split keeps the pieces")
        pieces = [(t0, t1)]
        for g0, g1, topic in sorted(gaps):
            logger.warning("%s: time gap of %.2f s on %s at %.2f s: splitting the episode there",
                           where, (g1 - g0) * 1e-9, topic, (g0 - bag.start_ns) * 1e-9)
            nxt = []
            for p0, p1 in pieces:
                if g1 <= p0 or g0 >= p1:
                    nxt.append((p0, p1))
                    continue
                if g0 > p0:
                    nxt.append((p0, g0))
                if g1 < p1:
                    nxt.append((g1, p1))
            pieces = nxt
        for pi, (p0, p1) in enumerate(pieces):
            nf = int(math.floor((p1 - p0) / period_ns + 1e-9)) + 1
            if nf < min_frames:
                logger.warning("%s: dropping a %d-frame piece (< --min-frames %d)", where, nf, min_frames)
                continue
            ft = p0 + np.round(np.arange(nf) * period_ns).astype(np.int64)
            st = np.stack([np.interp(ft, series[f"state:{d.name}"][1], series[f"state:{d.name}"][2]) for d in emb.dims], axis=1)
            frames = {}
            for slot, (topic, t, ords) in cams.items():
                j = np.clip(np.searchsorted(t, ft), 1, t.size - 1) if t.size > 1 else np.zeros(nf, dtype=np.int64)
                if t.size > 1:
                    j = np.where(np.abs(t[j - 1] - ft) <= np.abs(t[j] - ft), j - 1, j)
                err = np.abs(t[j] - ft)
                if err.max() > tol_ns:
                    k = int(err.argmax())
                    raise ConversionError(f"{where}: no {topic} frame within {tol_ns * 1e-9:.3f} s of frame {k} "
                                          f"(nearest {err[k] * 1e-9:.3f} s away)")
                frames[slot] = ords[j]
            next_state = np.concatenate([st[1:], st[-1:]], axis=0)
            if source == "commands":
                cols = []
                for i, dn in enumerate(emb.dim_names):
                    if dn not in cmd:  # an action output's dim, its commanded targets not recorded
                        cols.append(next_state[:, i])
                        continue
                    _, t, v = cmd[dn]
                    j = np.searchsorted(t, ft, side="right") - 1
                    cols.append(v[np.maximum(j, 0)])
                act = np.stack(cols, axis=1)
            else:
                act = next_state
            note = f" (piece {pi + 1}/{len(pieces)} of a split episode)" if len(pieces) > 1 else ""
            plans.append(EpisodePlan(bag.path, prompt, success, source, ft, st, act, frames, note))
    return plans


# ------------------------------------------------------------------------------ writing
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


QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)   # LeRobot's DEFAULT_QUANTILES -> q01, q10, q50, q90, q99
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)


def vector_stats(x: np.ndarray) -> dict[str, Any]:
    """LeRobot's per-feature statistics over axis 0 of (N, d): min, max, mean, std, count, q01..q99."""
    x = np.asarray(x, dtype=np.float64)
    out: dict[str, Any] = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
                           "std": x.std(0).tolist(), "count": [int(x.shape[0])]}
    qs = np.quantile(x, QUANTILES, axis=0)
    for k, q in zip(QUANTILE_KEYS, qs):
        out[k] = q.tolist()
    return out


class _ImageStats:
    """Per-channel image statistics in [0, 1], shape (3, 1, 1), as LeRobot stores them.

    Like LeRobot, pixels are taken from a downsampled copy (every 4th pixel per axis) and the
    quantiles from a bounded sample of them.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.n = 0
        self.s = np.zeros(3)
        self.s2 = np.zeros(3)
        self.lo = np.full(3, np.inf)
        self.hi = np.full(3, -np.inf)
        self.samples: list[np.ndarray] = []

    def add(self, rgb: np.ndarray) -> None:
        flat = np.ascontiguousarray(rgb[::4, ::4]).reshape(-1, 3).astype(np.float64) / 255.0
        self.frames += 1
        self.n += flat.shape[0]
        self.s += flat.sum(0)
        self.s2 += (flat ** 2).sum(0)
        self.lo = np.minimum(self.lo, flat.min(0))
        self.hi = np.maximum(self.hi, flat.max(0))
        if len(self.samples) < 200:
            self.samples.append(flat[::7])

    def merge(self, other: "_ImageStats") -> None:
        self.frames += other.frames
        self.n += other.n
        self.s += other.s
        self.s2 += other.s2
        self.lo = np.minimum(self.lo, other.lo)
        self.hi = np.maximum(self.hi, other.hi)
        self.samples += other.samples

    def result(self) -> dict[str, Any]:
        mean = self.s / max(self.n, 1)
        std = np.sqrt(np.maximum(self.s2 / max(self.n, 1) - mean**2, 0.0))
        sub = np.concatenate(self.samples) if self.samples else np.zeros((1, 3))
        qs = np.quantile(sub, QUANTILES, axis=0)

        def c(v: np.ndarray) -> list:
            return [[[float(x)]] for x in v]
        out = {"min": c(self.lo), "max": c(self.hi), "mean": c(mean), "std": c(std), "count": [self.frames]}
        for k, q in zip(QUANTILE_KEYS, qs):
            out[k] = c(q)
        return out


def model_norm_stats(emb: Embodiment, state: np.ndarray, action: np.ndarray) -> dict[str, NormStats]:
    """openpi norm stats in MODEL convention over slots 0..max slot (unused slots: mean 0, std 1)."""
    width = emb.min_action_dim
    out = {}
    for key, x in (("state", state), ("actions", action)):
        m = emb.to_model(np.asarray(x, dtype=np.float64))
        s = vector_stats(m)
        vec = {}
        for k, fill in (("mean", 0.0), ("std", 1.0), ("q01", -1.0), ("q99", 1.0)):
            v = np.full(width, fill)
            v[emb.slots] = s[k]
            vec[k] = v
        out[key] = NormStats(**vec)
    return out


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
        self.img_stats: dict[tuple[int, str], _ImageStats] = defaultdict(_ImageStats)
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
            agg = _ImageStats()
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
        for conn, _, raw in _messages(bag_path, reader, conns):
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


def convert(bags: list[str | Path], embodiment: str | Embodiment, out: str | Path, *, fps: float | None = None,
            actions: str = "auto", max_gap: float = 0.5, image_tolerance: float | None = None, on_gap: str = "split",
            min_frames: int = 2, prompt: str | None = None, time_source: str = "auto",
            success_only: bool = False, overwrite: bool = False, progress: bool = True, video: bool = False) -> dict[str, Any]:
    """Convert bags into one dataset at ``out``; returns a summary (also in meta/info.json)."""
    emb = load_embodiment(embodiment) if isinstance(embodiment, (str, Path)) else embodiment
    fps = float(fps or emb.control_rate_hz)
    if abs(fps - round(fps)) > 1e-9:
        raise ConversionError(f"--fps {fps:g}: LeRobot datasets need an integer frame rate")
    root = Path(out)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ConversionError(f"{root} exists and is not empty (use --overwrite)")
    paths = find_bags(bags)
    t_start = time.perf_counter()
    # Pass 0 + 1 over EVERY bag before anything is written: integrity, topics, episodes.
    planned: list[tuple[Path, list[EpisodePlan]]] = []
    skipped = []
    for path in tqdm(paths, desc="check", unit="bag", disable=not progress or len(paths) < 2):
        check_bag(path)
        content = read_bag(path, emb, time_source, progress)
        plans = plan_episodes(content, emb, fps, actions, max_gap, image_tolerance, on_gap, min_frames, prompt)
        if success_only:
            skipped += [str(p.bag) for p in plans if p.success is False]
            plans = [p for p in plans if p.success is not False]
        planned.append((path, plans))
    if not any(plans for _, plans in planned):
        raise ConversionError("no episodes to write")
    # Pass 2 into a temporary directory next to the output, renamed on success.
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        writer = DatasetWriter(tmp, emb, fps, video=video)
        for path, plans in tqdm(planned, desc="bags", unit="bag", disable=not progress or len(paths) < 2):
            indexed = [(writer.new_episode_index() + i, p) for i, p in enumerate(plans)]
            write_episode_images(writer, path, indexed, emb, progress)
            for _, p in indexed:
                writer.add_episode(p)
                logger.info("%s -> episode %d: %d frames, actions from %s, prompt %r%s",
                            p.bag, writer.episodes[-1]["episode_index"], p.state.shape[0], p.action_source, p.prompt, p.note)
        info = writer.finish({"source_bags": [str(p) for p in paths], "time_source": time_source,
                              "max_gap_s": max_gap, "on_gap": on_gap, "actions_requested": actions})
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - t_start
    return {"out": str(root), "episodes": info["total_episodes"], "frames": info["total_frames"], "fps": fps,
            "action_source": info["pi0_ros"]["action_source"],
            "episode_action_sources": {e["episode_index"]: e["action_source"] for e in writer.episodes},
            "skipped_failed": skipped, "seconds": round(elapsed, 3),
            "frames_per_second": round(info["total_frames"] / elapsed, 1) if elapsed > 0 else None}


# ---------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directories/files, or directories of them")
    parser.add_argument("--embodiment", required=True, help="embodiment name or YAML path")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--fps", type=float, default=None, help="frame rate (default: the embodiment's control rate)")
    parser.add_argument("--actions", choices=ACTION_SOURCES, default="auto",
                        help="action labels: recorded commands, the next state, or auto (commands when recorded)")
    parser.add_argument("--prompt", default=None,
                        help="prompt of every episode: needed for bags that carry none, and wins (with a warning) "
                             "over a bag's own markers, episode.json and /prompt")
    parser.add_argument("--max-gap", type=float, default=0.5, help="s of silence on a topic that counts as a gap")
    parser.add_argument("--on-gap", choices=("split", "reject"), default="split", help="split episodes at gaps, or reject the bag")
    parser.add_argument("--image-tolerance", type=float, default=None, help="max s between a frame and its camera image (default max-gap/2)")
    parser.add_argument("--min-frames", type=int, default=2, help="drop episodes (pieces) shorter than this")
    parser.add_argument("--time-source", choices=("auto", "header", "bag"), default="auto",
                        help="header stamps or bag receive times (auto: header unless the clocks disagree)")
    parser.add_argument("--video", action="store_true",
                        help="store cameras as AV1 mp4 videos (LeRobot video features; needs PyAV) instead of PNG bytes in the parquet")
    parser.add_argument("--success-only", action="store_true", help="skip episodes tagged success=false")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = convert(args.bags, args.embodiment, args.out, fps=args.fps, actions=args.actions, max_gap=args.max_gap,
                          image_tolerance=args.image_tolerance, on_gap=args.on_gap, min_frames=args.min_frames,
                          prompt=args.prompt, time_source=args.time_source, video=args.video,
                          success_only=args.success_only, overwrite=args.overwrite, progress=not args.quiet)
    except ConversionError as e:
        print(f"bag2dataset: error: {e}", file=sys.stderr)
        return 1
    print(f"action labels: {summary['action_source']}"
          + (" (the recorded command topics)" if summary["action_source"] == "commands" else
             " (the next measured state: no commands were recorded)" if summary["action_source"] == "next_state" else
             " (per episode, see meta/episodes)"), file=sys.stderr)
    print(json.dumps(summary, indent=2))  # stdout: machine-readable summary only
    return 0
