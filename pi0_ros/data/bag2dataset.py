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
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pi0_ros.data.bag_read import (CLOCK_MISMATCH_S, BagContent, ConversionError, Series, check_bag,
                                   find_bags, read_bag)
from pi0_ros.data.dataset_stats import QUANTILE_KEYS, QUANTILES, model_norm_stats, vector_stats
from pi0_ros.data.episodes import ACTION_SOURCES, EpisodePlan, plan_episodes
from pi0_ros.data.lerobot_writer import (CHUNKS_SIZE, CODEBASE_VERSION, DATA_FILE_SIZE_MB, DATA_PATH, EPISODES_PATH,
                                         IMAGE_SIZE, NORM_STATS_FILE, PI0_META, VIDEO_CODEC, VIDEO_FILE_SIZE_MB,
                                         VIDEO_OPTIONS, VIDEO_PATH, VIDEO_PIX_FMT,
                                         DatasetWriter, image_key, write_episode_images, write_tasks)
from pi0_ros.robots.embodiment import Embodiment, load_embodiment

# The stages live in bag_read, episodes, lerobot_writer and dataset_stats; their names are
# re-exported here so that `from pi0_ros.data.bag2dataset import ...` keeps working.
__all__ = [
    "ACTION_SOURCES", "CHUNKS_SIZE", "CODEBASE_VERSION", "DATA_FILE_SIZE_MB", "DATA_PATH", "EPISODES_PATH",
    "IMAGE_SIZE", "NORM_STATS_FILE", "PI0_META", "QUANTILES", "QUANTILE_KEYS", "VIDEO_FILE_SIZE_MB", "VIDEO_PATH",
    "CLOCK_MISMATCH_S", "VIDEO_CODEC", "VIDEO_OPTIONS", "VIDEO_PIX_FMT",
    "BagContent", "ConversionError", "DatasetWriter", "EpisodePlan", "Series",
    "add_arguments", "check_bag", "convert", "find_bags", "image_key", "model_norm_stats", "plan_episodes",
    "read_bag", "run", "vector_stats", "write_episode_images", "write_tasks",
]

logger = logging.getLogger(__name__)


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
