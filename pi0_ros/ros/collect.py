"""`pi0-ros collect`: record scripted-expert demonstrations through the ROS pipeline.

The scripted expert runs as the policy (ActionChunks -> executor -> command topics ->
simulator) while the recorder node writes every embodiment topic into one rosbag2 (mcap) per
episode, tagged with its prompt and success flag — the same bags a robot run produces.

    pi0-ros collect --episodes 60 --out recordings/aloha_pick_cube
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default="trossen_bimanual")
    parser.add_argument("--task", default="pick_cube", help="pick_cube, stack_cube, ... (pi0_ros.sim.tasks.TASKS)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (+1 each)")
    parser.add_argument("--out", required=True, help="output folder (one bag directory per episode)")
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    parser.add_argument("--episode-time", type=float, default=None,
                        help="s of sim time recorded per episode (default: the task's demo_s, e.g. pick_cube 4.6, "
                             "stack_cube 7.2: the expert's plan and a short hold)")
    parser.add_argument("--disturbance", type=float, default=0.0,
                        help="std (rad) of smooth random offsets on the simulated arm joint controllers while "
                             "the expert demonstrates (DART-style; the commands stay the expert's); 0 = off")
    parser.add_argument("--disturbance-tau", type=float, default=0.5, help="correlation time (s) of those offsets")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from rclpy.parameter import Parameter

    from pi0_ros.ros.recorder_node import RecorderNode
    from pi0_ros.ros.sim_session import SimSession
    from pi0_ros.sim.tasks import make_task

    if args.disturbance < 0 or args.disturbance_tau <= 0:
        raise SystemExit("--disturbance must be >= 0 and --disturbance-tau > 0")
    episode_time = args.episode_time if args.episode_time is not None else make_task(args.task).demo_s
    session = SimSession(args.embodiment, args.task, scripted=True, seed=args.seed,
                         extra={"sim": {"disturbance_std": args.disturbance, "disturbance_tau": args.disturbance_tau}})
    rec = RecorderNode(context=session.context, parameter_overrides=[
        Parameter("embodiment", value=args.embodiment), Parameter("output_dir", value=args.out),
        Parameter("storage", value=args.storage), Parameter("use_sim_time", value=True)])
    session.bringup.add_node(rec)
    results = []
    t0 = time.monotonic()
    try:
        session.wait_ready()
        session.spin(5.0, lambda: not rec.pending_topics)  # every topic discovered before recording
        if rec.pending_topics:
            raise RuntimeError(f"no publisher for {rec.pending_topics}")
        for i in range(args.episodes):
            seed = args.seed + i
            started = []

            def on_step(s, started=started) -> None:
                if not started:  # first spin after the reset: the new scene is being published
                    started.append(rec.start_episode(s.sim.env.prompt))

            r = session.run_episode(seed, max_time=episode_time, stop_on_success=False, on_step=on_step)
            rec.stop_episode(r.success)
            results.append(r)
            print(f"episode {i + 1}/{args.episodes} seed {seed} '{r.prompt}': "
                  f"{'success' if r.success else 'FAILED'}", file=sys.stderr, flush=True)
        summary = rec.finish()
    finally:
        session.bringup.remove_node(rec)
        rec.destroy_node()
        session.close()
    out = {"episodes": len(results), "successes": sum(r.success for r in results), "out": args.out,
           "disturbance": {"std": args.disturbance, "tau": args.disturbance_tau},
           "wall_s": round(time.monotonic() - t0, 1), "recording": summary}
    print(json.dumps(out, indent=None if args.json else 2))
    return 0
