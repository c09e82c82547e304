"""`pi0-ros`: the command-line entry point. Subcommands live in their own modules, imported
only when used (so `pi0-ros embodiments` never imports torch or rclpy).

Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# name -> (module, one-line help). Nested groups are dicts.
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "embodiments": ("pi0_ros.robots.cli", "list the robot embodiments (action dims, cameras, rates)"),
    "demo": ("pi0_ros.ros.demo", "run the whole pipeline on a simulated robot (ALOHA by default) and write a report"),
    "bringup": ("pi0_ros.ros.bringup", "run the observation, policy and executor nodes in one process"),
    "eval": ("pi0_ros.evaluation", "closed-loop episodes in the simulator through the ROS nodes"),
    "record": ("pi0_ros.data.record", "record rosbag2 (mcap) episodes of an embodiment's topics"),
    "collect": ("pi0_ros.ros.collect", "record scripted-expert demonstrations in the simulator into rosbags"),
    "collect-takeover": ("pi0_ros.sim.takeover", "sim, no ROS: a checkpoint drives, the scripted expert takes over and is recorded (DAgger data)"),
    "bag2dataset": ("pi0_ros.data.bag2dataset", "convert rosbag2 episodes into a LeRobot v3.0 dataset"),
    "train": ("pi0_ros.training.train", "fine-tune pi0 on datasets (flow-matching loss; LoRA, DDP, FSDP2)"),
    "merge-lora": ("pi0_ros.training.merge_lora", "merge a LoRA adapter into its base: a plain checkpoint"),
    "serve": ("pi0_ros.serving.server", "serve a pi0 checkpoint to openpi-protocol clients (websocket + msgpack)"),
    "eval-dataset": ("pi0_ros.eval_dataset", "open-loop: predicted vs recorded action chunks on held-out episodes"),
    "diagnose-grasp": ("pi0_ros.sim.grasp_diagnosis", "sim, no ROS: a checkpoint's grasp aim from the expert's states vs in its own closed loop"),
    "pretrain-vlm": ("pi0_ros.training.vlm_pretrain", "sim: teach a from-scratch VLM where the named object is"),
    "bench": {
        "model": ("pi0_ros.bench.model", "time the pi0 model: prefix, per-step and per-chunk ms"),
        "pipeline": ("pi0_ros.ros.bench_pipeline", "time the ROS pipeline: control jitter, chunk latency"),
        "record": ("pi0_ros.ros.bench_record", "record under load: published vs written messages"),
        "serve": ("pi0_ros.bench.serve", "remote inference over loopback: round-trip overhead, bytes per request"),
        "train": ("pi0_ros.bench.train", "training steps: peak memory, s/step, trainable params, memory breakdown"),
    },
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # parent package not there (an optional part not installed)
        return False


def _add(sub: argparse._SubParsersAction, name: str, spec: tuple[str, str]) -> None:
    module, help_ = spec
    if not _available(module):
        return
    p = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(_module=module)
    importlib.import_module(module).add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pi0-ros", description="Run the pi0 VLA policy on ROS 2 robots.")
    parser.add_argument("--version", action="version", version=f"pi0_ros {__import__('pi0_ros').__version__}")
    sub = parser.add_subparsers(title="subcommands", metavar="COMMAND")
    for name, spec in COMMANDS.items():
        if isinstance(spec, dict):
            grp = sub.add_parser(name, help=f"{name}: " + ", ".join(spec), description=f"pi0-ros {name}")
            gsub = grp.add_subparsers(title=f"{name} subcommands", metavar="WHAT")
            for n, s in spec.items():
                _add(gsub, n, s)
            grp.set_defaults(_group=grp)
        else:
            _add(sub, name, spec)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_module"):
        (getattr(args, "_group", None) or parser).print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
