"""`pi0-ros eval`: closed-loop episodes in the simulator through the ROS nodes.

    pi0-ros eval --embodiment trossen_bimanual --task pick_cube --episodes 50 --checkpoint DIR --json
    pi0-ros eval --policy scripted --episodes 50      # the scripted expert through the same path
    pi0-ros eval --checkpoint DIR --lockstep          # the sim pauses while the policy infers
    pi0-ros eval --checkpoint DIR --cpu-load 4        # ... on a busy computer (4 busy processes)
    pi0-ros eval --checkpoint DIR --remote             # the policy behind pi0-ros serve (openpi protocol)
    pi0-ros eval --checkpoint DIR --no-realtime-chunking --noise-scale 1   # not the checkpoint's settings

Real-time chunking, noise scale, Euler steps and execute_steps not given as options come from the
checkpoint's inference.json (pi0_ros.inference_settings), else the defaults; the JSON summary
says which value each came from.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from pi0_ros import inference_settings as isettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default="trossen_bimanual")
    parser.add_argument("--task", default="pick_cube",
                        help="pick_cube (target from seed), pick_red_cube, pick_blue_cube, stack_cube, stack_red_cube, "
                             "stack_blue_cube")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode (then +1 each)")
    parser.add_argument("--policy", choices=["pi0", "scripted"], default="pi0")
    parser.add_argument("--checkpoint", default="", help="pi0 checkpoint directory ('' = tiny RANDOM weights)")
    parser.add_argument("--prompt", default=None, help="override the prompt (the target follows the prompt)")
    parser.add_argument("--swap-prompt", action="store_true",
                        help="prompt-swap check: each seed's layout with the prompt naming the OTHER cube")
    # Not given: the checkpoint's inference.json (the settings it was validated with), else the defaults.
    isettings.add_arguments(parser)
    parser.add_argument("--max-time", type=float, default=None, help="s of sim time per episode (default: task's)")
    parser.add_argument("--lockstep", action="store_true",
                        help="the simulator pauses while the policy infers: the success rate measures the policy, "
                             "not this computer's speed (default: real time, inference latency included)")
    parser.add_argument("--cpu-load", type=int, default=0, metavar="N",
                        help="N CPU-burning processes (a busy loop each) beside the pipeline, stopped at the end")
    parser.add_argument("--remote", action="store_true",
                        help="run the checkpoint in `pi0-ros serve` (a child process on 127.0.0.1); the policy node "
                             "is its client over the openpi websocket protocol (backend remote)")
    parser.add_argument("--server-uri", default="", help="use this openpi-protocol server instead (implies --remote)")
    parser.add_argument("--remote-keys", default="",
                        help="key set the server expects (aloha, droid, libero; default: pi0_ros for pi0-ros serve)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary")


def _offset_medians(results: list) -> dict[str, dict[str, float]]:
    """Median |offset| per pinch axis at the first close, for the successes and the failures
    apart: where a failing grasp puts its fingers against where a good one does."""
    from pi0_ros.sim.grasp_report import median_abs_offset

    out = {}
    for name, group in (("success", [r for r in results if r.success]), ("failure", [r for r in results if not r.success])):
        offsets = [r.close_offset for r in group if r.close_offset]
        if offsets:
            out[name] = median_abs_offset(offsets) | {"n": len(offsets)}
    return out


def summarise(results: list, wall_s: float) -> dict:
    from pi0_ros.sim.grasp_report import OUTCOMES  # the simulator's (mujoco): only once episodes ran

    n = len(results)
    succ = [r for r in results if r.success]
    interventions: dict[str, int] = {}
    for r in results:
        for k, v in r.interventions.items():
            interventions[k] = interventions.get(k, 0) + v
    return {
        "episodes": n,
        "successes": len(succ),
        "success_rate": len(succ) / n if n else 0.0,
        "mean_time_to_success_s": statistics.mean(r.time_to_success for r in succ) if succ else None,
        # Language grounding, independent of grasping: did a gripper touch the named cube / the other?
        "reached_target_rate": sum(r.reached_target for r in results) / n if n else 0.0,
        "reached_other_rate": sum(r.reached_other for r in results) / n if n else 0.0,
        # How the episodes ended (pi0_ros.sim.grasp_report): e.g. closed_empty = a grasp that missed.
        "outcomes": {o: k for o in OUTCOMES if (k := sum(r.outcome == o for r in results))},
        "close_offset_median_m": _offset_medians(results),
        "safety_interventions": interventions,
        "rejected_chunks": sum(r.rejected_chunks for r in results),
        "wall_s": round(wall_s, 1),
        "per_episode": [r.to_dict() for r in results],
    }


def run(args: argparse.Namespace) -> int:
    from pi0_ros.bench.cpu_load import CpuLoad

    if args.swap_prompt and args.prompt:
        raise SystemExit("--swap-prompt and --prompt exclude each other")
    t0 = time.monotonic()
    given = isettings.given_from_args(args)  # checked before anything starts
    with CpuLoad(args.cpu_load) as load:  # started before the nodes, always stopped
        results, settings = _episodes(args, given)
    summary = {"embodiment": args.embodiment, "task": args.task, "policy": args.policy, "swap_prompt": args.swap_prompt,
               **{k: s.value for k, s in settings.items()},
               "inference_sources": {k: s.source for k, s in settings.items()},
               "lockstep": args.lockstep, "cpu_load": load.describe(),
               "remote": getattr(args, "resolved_server_uri", None) if _remote(args) else None,
               "checkpoint": args.checkpoint or ("tiny-random" if args.policy == "pi0" else None),
               **summarise(results, time.monotonic() - t0)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"success rate {summary['success_rate']:.0%} ({summary['successes']}/{summary['episodes']}), "
              f"mean time to success {summary['mean_time_to_success_s']}, touched the named cube "
              f"{summary['reached_target_rate']:.0%}, the other cube {summary['reached_other_rate']:.0%}, "
              f"outcomes {summary['outcomes']}, "
              f"safety interventions {summary['safety_interventions']}")
    return 0


def _episodes(args: argparse.Namespace, given: dict) -> tuple[list, dict]:
    """The episodes' results, and the inference settings the nodes used (name -> Setting)."""
    from pi0_ros.ros.sim_session import SimSession

    # Only what was given becomes a node parameter: the nodes take the rest from the checkpoint.
    extra = isettings.node_params(given)
    server = None
    if _remote(args):
        from pi0_ros.serving.process import remote_policy_params

        if args.policy == "scripted":
            raise SystemExit("--remote serves pi0 checkpoints, not the scripted expert")
        params, server = remote_policy_params(args.checkpoint, given.get("noise_scale"), args.server_uri,
                                              args.remote_keys, num_steps=given.get("num_steps"))
        extra["policy"].update(params)
        args.resolved_server_uri = params.get("server_uri")
    try:
        session = SimSession(args.embodiment, args.task, checkpoint=args.checkpoint, scripted=args.policy == "scripted",
                             seed=args.seed, extra=extra, lockstep=args.lockstep)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    settings = isettings.as_given({**session.policy_node.inference, "execute_steps": session.executor_node.execute_steps},
                                  given, "option")
    results = []
    try:
        session.wait_ready()
        task = session.sim.env.task
        for i in range(args.episodes):
            seed = args.seed + i
            prompt = task.swapped_prompt(seed) if args.swap_prompt else args.prompt
            r = session.run_episode(seed, prompt=prompt, max_time=args.max_time)
            results.append(r)
            if not args.json:
                print(f"episode {i + 1}/{args.episodes} seed {r.seed} '{r.prompt}': "
                      f"{'SUCCESS' if r.success else 'fail'}"
                      + (f" in {r.time_to_success:.2f} s" if r.success else "")
                      + f", {r.chunks} chunks, touched {'the ' + r.target + ' cube' if r.reached_target else 'not the target'}"
                      + (" and the OTHER cube" if r.reached_other else ""), file=sys.stderr, flush=True)
    finally:
        session.close()
        if server is not None:
            server.stop()
    return results, settings


def _remote(args: argparse.Namespace) -> bool:
    return bool(args.remote or args.server_uri)
