"""`pi0-ros bringup`: the observation, policy and executor nodes (optionally the simulator and
the viz node) in ONE process with one multi-threaded executor — the pip users' `ros2 launch`.

Node parameters are the same as in launch/pi0.launch.py and config/<embodiment>.yaml.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter


def overrides(params: dict[str, Any]) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in params.items()]


@dataclass
class Bringup:
    """Builds and spins the nodes in one process; `nodes` keyed by role."""

    embodiment: str
    checkpoint: str = ""
    prompt: str = ""
    dry_run: bool = False
    sim: bool = False
    viz: bool = False
    use_sim_time: bool = False
    trigger: str = "request"
    policy: Any = None                      # an already-built Policy (tests, demo)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> extra parameters
    context: Any = None
    nodes: dict[str, Any] = field(default_factory=dict)

    def start(self) -> "Bringup":
        from pi0_ros.ros.executor_node import ExecutorNode
        from pi0_ros.ros.observation_node import ObservationNode
        from pi0_ros.ros.policy_node import PolicyNode

        common = {"embodiment": self.embodiment, "use_sim_time": self.use_sim_time}
        kw = {"context": self.context} if self.context is not None else {}

        def params(role: str, p: dict[str, Any]) -> list[Parameter]:
            return overrides({**common, **p, **self.extra.get(role, {})})

        if self.sim:
            from pi0_ros.ros.sim_node import SimNode

            self.nodes["sim"] = SimNode(parameter_overrides=params("sim", {}), **kw)
        self.nodes["observation"] = ObservationNode(parameter_overrides=params("observation", {"prompt": self.prompt}), **kw)
        self.nodes["policy"] = PolicyNode(policy=self.policy, parameter_overrides=params(
            "policy", {"checkpoint": self.checkpoint, "trigger": self.trigger}), **kw)
        self.nodes["executor"] = ExecutorNode(parameter_overrides=params("executor", {"dry_run": self.dry_run}), **kw)
        if self.viz:
            from pi0_ros.ros.viz_node import VizNode

            self.nodes["viz"] = VizNode(parameter_overrides=params("viz", {}), **kw)
        self.executor = MultiThreadedExecutor(num_threads=4, **kw)
        for n in self.nodes.values():
            self.executor.add_node(n)
        return self

    def spin_for(self, seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and (until is None or not until()):
            self.executor.spin_once(timeout_sec=0.05)

    def stop(self) -> None:
        for n in reversed(list(self.nodes.values())):
            self.executor.remove_node(n)
            n.destroy_node()
        self.executor.shutdown()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default="trossen_bimanual", help="embodiment name (pi0-ros embodiments)")
    parser.add_argument("--checkpoint", default="", help="checkpoint directory ('' = tiny preset, RANDOM weights)")
    parser.add_argument("--prompt", default="", help="initial task prompt")
    parser.add_argument("--dry-run", action="store_true", help="compute commands but publish nothing to the robot")
    parser.add_argument("--sim", action="store_true", help="also run the MuJoCo simulator node (sim time)")
    parser.add_argument("--viz", action="store_true", help="also run the rviz helper node")
    parser.add_argument("--trigger", default="request", choices=["request", "continuous"])
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until Ctrl-C)")


def run(args: argparse.Namespace) -> int:
    rclpy.init()
    b = Bringup(args.embodiment, checkpoint=args.checkpoint, prompt=args.prompt, dry_run=args.dry_run, sim=args.sim,
                viz=args.viz, use_sim_time=args.sim, trigger=args.trigger).start()
    try:
        if args.duration > 0:
            b.spin_for(args.duration)
        else:
            b.executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
        rclpy.try_shutdown()
    return 0
