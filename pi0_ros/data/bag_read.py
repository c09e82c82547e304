"""Pass 0 and 1 of bag2dataset: check a bag's integrity and read it into time series.

Everything but the pixels: joint/base state and commanded targets per dim, camera frame times,
prompts and episode markers. Any problem with a bag becomes a ConversionError naming the bag,
the topic and why.
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from pi0_ros.data import bagio
from pi0_ros.data.record import EPISODE_JSON
from pi0_ros.data.topics import COMMANDED_TOPIC, EPISODE_TOPIC, PROMPT_TOPIC
from pi0_ros.robots.embodiment import BASE_KINDS, Embodiment

logger = logging.getLogger(__name__)

CLOCK_MISMATCH_S = 2.0        # header vs receive clock disagreement that switches `auto` to bag time
_TWIST = {"base_vx": ("linear", "x"), "base_vy": ("linear", "y"), "base_wz": ("angular", "z")}


class ConversionError(ValueError):
    """A bag cannot be converted; the message names the bag, the topic and why."""


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


def bag_messages(path: Path, reader: Reader, conns: list, tqdm_kw: dict | None = None):
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
        for conn, t_bag, raw in bag_messages(path, reader, conns, tqdm_kw=dict(total=total, desc=f"read {path.name}",
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
