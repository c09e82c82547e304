"""Expert takeovers (DAgger-style data): a checkpoint drives, the scripted expert finishes (ROS-free).

`pi0-ros diagnose-grasp` showed why the single-arm picks fail: from the expert's own states the
policy aims within millimetres, but on its own trajectory it drifts into states no demonstration
visited and closes beside the cube, with no demonstration of what to do next. The remedy is
data from exactly those states (Ross et al. 2011, DAgger; Kelly et al. 2019, HG-DAgger): the
policy drives the robot (lockstep, deterministic, the checkpoint's own chunking), and at a
random tick the expert takes over *from the measured joints* (``PickCubeExpert.reset(start=)``),
re-opens the gripper if the policy closed it, goes straight to above the cube and picks it.
Only the expert's part is recorded, frame by frame at the control rate, as the observation node
would see it (each camera cut to the embodiment's view and resized with padding to 224) with
the expert's targets as actions, into a LeRobot v3.0 dataset (the bag2dataset writer).

What a takeover teaches is recovery: from a drifted approach (take over before the policy's
close) or from a close on nothing (after it). Episodes where the policy already holds the cube
at the takeover are skipped (the expert would let go and start again, which is no lesson), and
so are takeovers the expert does not finish (``success`` is recorded per episode, failures are
dropped unless ``keep_failed``).

Lockstep and ROS-free because the policy runs inside the loop: through the ROS nodes the same
episode would take real time, and the simulator core is what the ROS path drives (the recorded
frames are those bag2dataset makes from a bag of the same run). The proof of a checkpoint
trained on it is still `pi0-ros eval` through the ROS nodes.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pi0_ros.policy import Policy
    from pi0_ros.sim.env import SimEnv

HOLDING_LIFT = 0.01  # m: the policy has the cube off the table at the takeover: nothing to recover from


@dataclass
class Takeover:
    """One episode: the policy's ticks, then the expert's recorded frames."""

    seed: int
    takeover_tick: int                  # ticks the policy drove (0: a plain expert demonstration)
    skipped: str | None                 # why nothing was recorded: "policy_succeeded", "policy_holding"
    success: bool                       # the expert finished the pick
    prompt: str
    states: np.ndarray                  # (F, n) robot units, measured, at each recorded frame
    actions: np.ndarray                 # (F, n) robot units, the expert's targets for that tick
    images: dict[str, list[np.ndarray]]  # slot -> F frames (224, 224, 3) uint8, as the dataset stores them

    @property
    def frames(self) -> int:
        return int(self.states.shape[0])


def takeover_tick(rng: np.random.Generator, expert_close_tick: int, clean_share: float, after_close_s: float,
                  dt: float) -> int:
    """When the expert takes over: 0 (a clean demonstration) with probability ``clean_share``,
    else uniform from half way to the expert's nominal close until ``after_close_s`` after it
    (the policy closes about when the expert would: the window covers the drifted approach and
    the close on nothing)."""
    if rng.random() < clean_share:
        return 0
    lo = max(1, expert_close_tick // 2)
    hi = expert_close_tick + int(round(after_close_s / dt))
    return int(rng.integers(lo, hi + 1))


def run_takeover(env: "SimEnv", policy: "Policy", seed: int, tick: int, execute_steps: int,
                 record_s: float | None = None) -> Takeover:
    """Policy for ``tick`` ticks (lockstep, noise 0, one chunk per ``execute_steps``), then the
    expert re-plans from the measured joints and runs its whole plan (or ``record_s``) while the
    frames are recorded."""
    from pi0_ros.data.lerobot_writer import IMAGE_SIZE
    from pi0_ros.images import model_image
    from pi0_ros.sim.expert import make_expert
    from pi0_ros.sim.grasp_diagnosis import policy_actions
    from pi0_ros.sim.grasp_report import GraspMonitor

    emb = env.embodiment
    env.reset(seed)
    monitor = GraspMonitor()
    chunk = np.empty(0)
    for t in range(tick):
        if t % execute_steps == 0:
            chunk = policy_actions(env, policy)
        env.set_targets(chunk[t % execute_steps])
        env.step()
        monitor.update(env)
    empty = Takeover(seed, tick, None, False, env.prompt, np.zeros((0, emb.num_dims)), np.zeros((0, emb.num_dims)), {})
    if tick and env.success():
        empty.skipped = "policy_succeeded"
        return empty
    if tick and monitor.max_lift >= HOLDING_LIFT:
        empty.skipped = "policy_holding"
        return empty
    expert = make_expert(env)
    if tick:
        expert.reset(start=env.robot_state())
    crops = {c.slot: c.crop for c in emb.cameras}
    slots = emb.camera_slots()
    ticks = len(expert.plan) if record_s is None else int(round(record_s / emb.dt))
    states, actions, images = [], [], {s: [] for s in slots}
    for _ in range(ticks):
        a = expert.act()
        states.append(env.robot_state())
        frames = env.render(slots)
        for s in slots:
            images[s].append(model_image(frames[s], crops[s], IMAGE_SIZE))
        for name, vals in emb.split_outputs(a).items():
            env.set_command(name, vals)
        actions.append(a)
        env.step()
    return Takeover(seed, tick, None, bool(env.success()), env.prompt, np.array(states), np.array(actions), images)


def expert_close_tick(env: "SimEnv", seed: int) -> int:
    """The tick at which the expert's own plan (from home) first commands the gripper closed."""
    from pi0_ros.sim.expert import make_expert
    from pi0_ros.sim.grasp_report import CLOSE_COMMANDED

    env.reset(seed)
    expert = make_expert(env)
    g = env.scene.gripper_dim[expert.arm]
    closes = np.flatnonzero(env.embodiment.to_model(np.array(expert.plan))[:, g] >= CLOSE_COMMANDED)
    return int(closes[0]) if closes.size else len(expert.plan)


def collect(env: "SimEnv", policy: "Policy", out: Path, seeds: range, execute_steps: int, *, clean_share: float,
            after_close_s: float, rng_seed: int, keep_failed: bool = False, video: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Takeover episodes over ``seeds`` into a dataset at ``out`` (written to a temporary folder
    next to it and renamed at the end: an interrupted run leaves no half dataset)."""
    import os
    import shutil

    from tqdm import tqdm

    from pi0_ros.data.episodes import EpisodePlan
    from pi0_ros.data.lerobot_writer import DatasetWriter

    emb = env.embodiment
    rng = np.random.default_rng(rng_seed)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        writer = DatasetWriter(tmp, emb, emb.control_rate_hz, video=video)
        for seed in tqdm(seeds, desc=f"takeovers {emb.name}", unit="episode", disable=not progress):
            tick = takeover_tick(rng, expert_close_tick(env, seed), clean_share, after_close_s, emb.dt)
            ep = run_takeover(env, policy, seed, tick, execute_steps)
            rows.append({"seed": seed, "takeover_tick": tick, "skipped": ep.skipped, "success": ep.success,
                         "frames": ep.frames})
            if ep.skipped or (not ep.success and not keep_failed) or ep.frames < 2:
                continue
            k = writer.new_episode_index()
            for s, frames in ep.images.items():
                for i, rgb in enumerate(frames):
                    writer.add_image(s, k, i, rgb)
            t_ns = np.round(np.arange(ep.frames) * emb.dt * 1e9).astype(np.int64)
            writer.add_episode(EpisodePlan(Path(f"sim:{emb.name}:seed{seed}:takeover{tick}"), ep.prompt, ep.success,
                                           "expert_takeover" if tick else "expert", t_ns, ep.states, ep.actions, {}))
        if not writer.episodes:
            raise SystemExit("no episode recorded (every takeover skipped or failed)")
        writer.finish({"collected_by": "pi0-ros collect-takeover", "execute_steps": execute_steps,
                       "clean_share": clean_share, "after_close_s": after_close_s, "rng_seed": rng_seed,
                       "seeds": f"{seeds.start}-{seeds.stop - 1}"})
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summarise(rows, time.perf_counter() - t0)


def summarise(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    taken = [r for r in rows if r["takeover_tick"] and not r["skipped"]]
    return {"episodes": len(rows), "recorded": sum(1 for r in rows if not r["skipped"] and r["success"]),
            "clean": sum(1 for r in rows if r["takeover_tick"] == 0),
            "takeovers": len(taken), "takeovers_finished": sum(r["success"] for r in taken),
            "skipped": {k: sum(r["skipped"] == k for r in rows) for k in ("policy_succeeded", "policy_holding")},
            "frames": sum(r["frames"] for r in rows if not r["skipped"] and r["success"]),
            "seconds": round(seconds, 1), "per_episode": rows}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="the pi0 checkpoint that drives before the takeover")
    parser.add_argument("--embodiment", default="trossen_bimanual")
    parser.add_argument("--task", default="pick_cube", help="pick_cube, pick_red_cube, pick_blue_cube")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=10000,
                        help="seed of the first episode (+1 each); keep clear of the evaluation seeds")
    parser.add_argument("--out", required=True, help="dataset directory (LeRobot v3.0, as bag2dataset writes)")
    parser.add_argument("--clean-share", type=float, default=0.25,
                        help="share of episodes the expert drives from the start (plain demonstrations)")
    parser.add_argument("--after-close", type=float, default=1.5,
                        help="s after the expert's nominal close up to which a takeover may happen")
    parser.add_argument("--execute-steps", type=int, default=0,
                        help="actions executed per chunk while the policy drives (0 = the embodiment's)")
    parser.add_argument("--keep-failed", action="store_true", help="also record takeovers the expert did not finish")
    parser.add_argument("--video", action="store_true", help="AV1 mp4 per camera instead of PNGs in the parquet")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from pi0_ros.policy import Policy
    from pi0_ros.robots.embodiment import load_embodiment
    from pi0_ros.sim.env import SimEnv

    if args.episodes < 1 or not 0 <= args.clean_share <= 1 or args.after_close < 0:
        raise SystemExit("--episodes >= 1, --clean-share within [0, 1], --after-close >= 0")
    emb = load_embodiment(args.embodiment)
    policy = Policy.from_checkpoint(args.checkpoint, asset_id=emb.asset_id, noise_scale=0.0)
    execute = args.execute_steps or emb.execute_steps
    if not 1 <= execute <= policy.chunk_size:
        raise SystemExit(f"--execute-steps must be within 1..{policy.chunk_size}")
    env = SimEnv(args.embodiment, task=args.task, seed=args.seed, render=True)
    try:
        summary = collect(env, policy, Path(args.out), range(args.seed, args.seed + args.episodes), execute,
                          clean_share=args.clean_share, after_close_s=args.after_close, rng_seed=args.seed,
                          keep_failed=args.keep_failed, video=args.video, progress=not args.json)
    finally:
        env.close()
    summary = {"embodiment": emb.name, "checkpoint": args.checkpoint, "out": args.out, **summary}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['recorded']}/{summary['episodes']} episodes recorded ({summary['clean']} clean, "
              f"{summary['takeovers_finished']}/{summary['takeovers']} takeovers finished, skipped "
              f"{summary['skipped']}), {summary['frames']} frames in {summary['seconds']} s -> {args.out}")
    return 0
