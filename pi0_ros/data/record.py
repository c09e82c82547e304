"""`pi0-ros record`: record an embodiment's topics as rosbag2 episodes (mcap by default).

Layout: one bag directory per episode, with its tags next to the bag files:

    OUT/episode_000000/            rosbag2 directory (metadata.yaml + episode_000000.mcap)
    OUT/episode_000000/episode.json  {"episode_index", "prompt", "success", "embodiment",
                                      "start_ns", "stop_ns", "received", "written", ...}

The same tags are in the bag's metadata custom_data (pi0_ros.prompt, pi0_ros.success, ...),
and the episode's first/last messages are start/stop markers on /pi0_episode (std_msgs/String
with JSON), so a bag stays self-describing when copied without episode.json.

Episodes are started/stopped by the recorder node's service ``~/episode``
(pi0_ros/srv/Episode: start, prompt, success), or with ``--start`` at launch. Messages that
arrive while no episode is open are counted (``idle``) and dropped.

Messages are stored as the serialized CDR bytes the subscription received (raw
subscriptions): nothing is deserialized or re-encoded. Callbacks only append to a queue; a
writer thread per episode owns the rosbags Writer, so disk stalls never block the executor.
Per topic the recorder counts messages received (during an episode), written and dropped
(only when the queue exceeds ``max_queue_mb``).

This module is ROS-free except for ``run`` (the CLI), which starts the rclpy node in
pi0_ros/ros/recorder_node.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import queue
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from pi0_ros.data import bagio
from pi0_ros.data.topics import EPISODE_TOPIC, PROMPT_TOPIC, STRING, RecordTopic

logger = logging.getLogger(__name__)

EPISODE_JSON = "episode.json"
EPISODE_DIR_RE = re.compile(r"^episode_(\d{6})$")
_STOP = object()


def episode_dirname(index: int) -> str:
    return f"episode_{index:06d}"


def next_episode_index(out_dir: Path) -> int:
    """1 + the highest episode_NNNNNN in ``out_dir`` (0 when there is none)."""
    idx = [int(m.group(1)) for p in out_dir.glob("episode_*") if (m := EPISODE_DIR_RE.match(p.name))]
    return max(idx) + 1 if idx else 0


def marker_payload(event: str, episode_index: int, **fields: Any) -> str:
    """The JSON text of a /pi0_episode marker."""
    return json.dumps({"event": event, "episode_index": episode_index, **fields}, sort_keys=True)


@dataclass
class EpisodeInfo:
    episode_index: int
    path: Path
    prompt: str
    embodiment: str
    storage: str
    start_ns: int
    stop_ns: int | None = None
    success: bool | None = None
    received: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "episode_index": self.episode_index,
            "bag": self.path.name,
            "prompt": self.prompt,
            "success": self.success,
            "embodiment": self.embodiment,
            "storage": self.storage,
            "start_ns": self.start_ns,
            "stop_ns": self.stop_ns,
            "duration_s": None if self.stop_ns is None else (self.stop_ns - self.start_ns) * 1e-9,
            "received": dict(self.received),
            "written": dict(self.written),
            "dropped": dict(self.dropped),
            "error": self.error,
        }


class EpisodeWriter:
    """One episode's bag: a queue filled by callbacks and a thread that writes it to disk."""

    def __init__(self, info: EpisodeInfo, topics: list[RecordTopic], max_queue_bytes: int,
                 offered_qos: dict[str, list] | None = None) -> None:
        self.info = info
        self.topics = topics
        self.offered_qos = offered_qos if offered_qos is not None else {}
        self.max_queue_bytes = max_queue_bytes
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._closed = False
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bag-writer-{info.episode_index}", daemon=True)
        self._thread.start()
        self._opened.wait(10.0)
        if info.error:
            raise RuntimeError(f"cannot open bag {info.path}: {info.error}")

    def put(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Queue one serialized message; False if the episode is already closed.

        Counted as received; beyond max_queue_bytes it is counted as dropped instead of queued.
        """
        n = len(data)
        with self._lock:
            if self._closed:
                return False
            self.info.received[topic] += 1
            if self._queued_bytes + n > self.max_queue_bytes:
                self.info.dropped[topic] += 1
                return True
            self._queued_bytes += n
        self._queue.put((topic, timestamp_ns, data))
        return True

    def close(self, stop_ns: int, success: bool | None) -> None:
        """Stop accepting messages; the thread drains the queue, closes the bag, writes episode.json."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.info.stop_ns = stop_ns
            self.info.success = success
        self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _run(self) -> None:
        info = self.info
        try:
            store = bagio.typestore()
            writer = bagio.open_writer(info.path, info.storage)  # chunk CRCs, type hashes, ros_distro (rosbag2's)
            writer.open()
            types = {t.topic: t.msgtype for t in self.topics}
            types.setdefault(EPISODE_TOPIC, STRING)
            conns: dict[str, Any] = {}

            def conn(topic: str) -> Any:
                """Topics enter the bag with their first message, with the QoS their publishers offer (as rosbag2)."""
                c = conns.get(topic)
                if c is None:
                    c = conns[topic] = writer.add_connection(topic, types[topic], typestore=store,
                                                             offered_qos_profiles=list(self.offered_qos.get(topic, ())))
                return c
            string_cls = store.types[STRING]
        except Exception as e:  # noqa: BLE001 - reported to the caller through info.error
            info.error = f"{type(e).__name__}: {e}"
            self._opened.set()
            return
        self._opened.set()

        def marker(event: str, t_ns: int, **kw: Any) -> None:
            raw = store.serialize_cdr(string_cls(data=marker_payload(event, info.episode_index, **kw)), STRING)
            writer.write(conn(EPISODE_TOPIC), t_ns, bytes(raw))

        try:
            marker("start", info.start_ns, prompt=info.prompt)
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                topic, t_ns, data = item
                writer.write(conn(topic), t_ns, data)
                with self._lock:
                    self._queued_bytes -= len(data)
                info.written[topic] += 1
            if info.prompt and PROMPT_TOPIC in types and not info.written.get(PROMPT_TOPIC):
                # Nobody published /prompt during the episode: record the episode's prompt there, at its start.
                raw = store.serialize_cdr(string_cls(data=info.prompt), STRING)
                writer.write(conn(PROMPT_TOPIC), info.start_ns, bytes(raw))
            marker("stop", max(info.stop_ns or 0, info.start_ns), success=info.success)
            for key, value in (("prompt", info.prompt), ("success", json.dumps(info.success)),
                               ("embodiment", info.embodiment), ("episode_index", str(info.episode_index))):
                writer.set_custom_data(f"pi0_ros.{key}", value)
        except Exception as e:  # noqa: BLE001
            info.error = f"{type(e).__name__}: {e}"
            logger.error("episode %d: writing %s failed: %s", info.episode_index, info.path, info.error)
        finally:
            try:
                writer.close()
            except Exception as e:  # noqa: BLE001
                info.error = info.error or f"close: {type(e).__name__}: {e}"
            (info.path / EPISODE_JSON).write_text(json.dumps(info.to_json(), indent=2) + "\n")


class EpisodeRecorder:
    """Routes serialized messages into the open episode's writer (ROS-free, thread-safe)."""

    def __init__(self, out_dir: str | Path, topics: list[RecordTopic], embodiment: str,
                 storage: str = "mcap", max_queue_mb: float = 2048.0) -> None:
        bagio.storage_plugin(storage)  # validate early
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.topics = [t for t in topics if t.topic != EPISODE_TOPIC]
        self.embodiment = embodiment
        self.storage = storage
        self.max_queue_bytes = int(max_queue_mb * 2**20)
        self._lock = threading.Lock()
        self._current: EpisodeWriter | None = None
        self._writers: list[EpisodeWriter] = []
        self.idle: dict[str, int] = defaultdict(int)
        self._next_index = next_episode_index(self.out_dir)
        self.offered_qos: dict[str, list] = {}  # topic -> rosbags Qos of its publishers (metadata.yaml)

    def set_offered_qos(self, topic: str, profiles: list) -> None:
        """The QoS profiles the publishers of ``topic`` offer (rosbags ``Qos``), as rosbag2 records them."""
        self.offered_qos[topic] = list(profiles)

    @property
    def recording(self) -> bool:
        return self._current is not None

    @property
    def current_index(self) -> int | None:
        cur = self._current
        return None if cur is None else cur.info.episode_index

    def start(self, prompt: str, t_ns: int | None = None) -> EpisodeInfo:
        """Open a new episode (an open one is stopped first, success unknown)."""
        t_ns = time.time_ns() if t_ns is None else t_ns
        with self._lock:
            if self._current is not None:
                logger.warning("episode %d still open: stopping it (success unknown)", self._current.info.episode_index)
                self._current.close(t_ns, None)
                self._current = None
            index = self._next_index
            path = self.out_dir / episode_dirname(index)
            info = EpisodeInfo(index, path, prompt, self.embodiment, self.storage, t_ns)
            writer = EpisodeWriter(info, self.topics, self.max_queue_bytes, self.offered_qos)
            self._next_index += 1
            self._current = writer
            self._writers.append(writer)
        logger.info("episode %d started: %s (prompt %r)", index, path, prompt)
        return info

    def stop(self, success: bool | None, t_ns: int | None = None) -> EpisodeInfo | None:
        """Close the open episode; returns its info (None if none was open). Does not block."""
        t_ns = time.time_ns() if t_ns is None else t_ns
        with self._lock:
            cur, self._current = self._current, None
        if cur is None:
            return None
        cur.close(t_ns, success)
        logger.info("episode %d stopped (success=%s)", cur.info.episode_index, success)
        return cur.info

    def on_message(self, topic: str, t_ns: int, data: bytes) -> None:
        """A subscription callback: queue the bytes for the open episode."""
        cur = self._current
        if cur is None or not cur.put(topic, t_ns, data):
            self.idle[topic] += 1

    def close(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Stop the open episode, wait for every writer, return the episodes' summaries."""
        self.stop(None)
        for w in self._writers:
            if not w.join(timeout):
                logger.error("episode %d: writer still busy after %.0f s", w.info.episode_index, timeout)
        return [w.info.to_json() for w in self._writers]

    def summary(self) -> dict[str, Any]:
        """Totals per topic over all episodes: received, written, dropped, idle."""
        tot: dict[str, dict[str, int]] = {}
        for t in self.topics:
            tot[t.topic] = {
                "received": sum(w.info.received.get(t.topic, 0) for w in self._writers),
                "written": sum(w.info.written.get(t.topic, 0) for w in self._writers),
                "dropped": sum(w.info.dropped.get(t.topic, 0) for w in self._writers),
                "idle": self.idle.get(t.topic, 0),
            }
        return {"out_dir": str(self.out_dir), "episodes": [w.info.to_json() for w in self._writers], "topics": tot}


# ---------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", required=True, help="embodiment name (config/embodiments/<name>.yaml) or YAML path")
    parser.add_argument("--out", required=True, help="output directory; one bag directory per episode")
    parser.add_argument("--storage", default="mcap", choices=sorted(bagio.STORAGE_PLUGINS), help="rosbag2 storage (default mcap)")
    parser.add_argument("--start", action="store_true", help="start an episode at once (else wait for the ~/episode service)")
    parser.add_argument("--prompt", default="", help="prompt of the episode started with --start")
    parser.add_argument("--success", choices=("true", "false", "unknown"), default="unknown",
                        help="success tag of an episode still open at exit")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    parser.add_argument("--no-action-chunks", action="store_true", help="do not record /action_chunk")
    parser.add_argument("--max-queue-mb", type=float, default=2048.0, help="drop messages beyond this much queued data")
    parser.add_argument("--node-name", default="pi0_recorder", help="ROS node name")


def run(args: argparse.Namespace) -> int:
    from pi0_ros.ros.recorder_node import run_recorder

    success = {"true": True, "false": False, "unknown": None}[args.success]
    summary = run_recorder(
        embodiment=args.embodiment, out_dir=args.out, storage=args.storage, start=args.start, prompt=args.prompt,
        duration=args.duration, final_success=success, record_action_chunks=not args.no_action_chunks,
        max_queue_mb=args.max_queue_mb, node_name=args.node_name,
    )
    print(json.dumps(summary, indent=2))
    bad = [t for t, c in summary["topics"].items() if c["written"] != c["received"]]
    return 1 if bad else 0
