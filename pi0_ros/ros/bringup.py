"""`pi0-ros bringup`: the observation, policy and executor nodes (optionally the simulator and
the viz node) in ONE process with one multi-threaded executor — the pip users' `ros2 launch`.

Node parameters are the same as in launch/pi0.launch.py and config/<embodiment>.yaml.
"""
from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
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
        # One single-threaded executor per node, each on its own thread: rclpy's
        # MultiThreadedExecutor busy-loops while a long callback of a node runs (the entity stays
        # ready), which starves every other thread of the GIL (the sim, the inference).
        self._spinners: list[tuple[SingleThreadedExecutor, threading.Thread, object]] = []
        for n in self.nodes.values():
            self.add_node(n)
        return self

    def add_node(self, node) -> None:
        """Spin one more node (e.g. a recorder) on its own executor thread."""
        kw = {"context": self.context} if self.context is not None else {}
        ex = SingleThreadedExecutor(**kw)
        ex.add_node(node)
        t = threading.Thread(target=self._spin, args=(ex,), name=f"spin_{node.get_name()}", daemon=True)
        t.start()
        self._spinners.append((ex, t, node))

    @staticmethod
    def _spin(ex: SingleThreadedExecutor) -> None:
        try:
            ex.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the thread quietly
            pass

    def spin_for(self, seconds: float, until=None) -> None:
        """Let the nodes run for `seconds` (or until `until()` is true)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and (until is None or not until()):
            time.sleep(min(0.02, max(0.0, end - time.monotonic())))

    def remove_node(self, node) -> None:
        for i, (ex, t, n) in enumerate(self._spinners):
            if n is node:
                ex.shutdown(timeout_sec=2.0)
                t.join(timeout=2.0)
                del self._spinners[i]
                return

    def stop(self) -> None:
        for ex, t, n in reversed(self._spinners):
            ex.shutdown(timeout_sec=2.0)
            t.join(timeout=2.0)
            n.destroy_node()
        self._spinners.clear()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default="trossen_bimanual", help="embodiment name (pi0-ros embodiments)")
    parser.add_argument("--checkpoint", default="", help="checkpoint directory ('' = tiny preset, RANDOM weights)")
    parser.add_argument("--prompt", default="", help="initial task prompt")
    parser.add_argument("--dry-run", action="store_true", help="compute commands but publish nothing to the robot")
    parser.add_argument("--sim", action="store_true", help="also run the MuJoCo simulator node (sim time)")
    parser.add_argument("--viz", action="store_true", help="also run the rviz helper node")
    parser.add_argument("--trigger", default="request", choices=["request", "continuous"])
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until Ctrl-C)")
    parser.add_argument("--server-uri", default="", help="policy node backend remote: this openpi-protocol server "
                        "(pi0-ros serve, or openpi's with --remote-keys)")
    parser.add_argument("--remote-keys", default="", help="key set the server expects (aloha, droid, libero)")


def run(args: argparse.Namespace) -> int:
    rclpy.init()
    extra = {"policy": {"backend": "remote", "server_uri": args.server_uri, "remote_keys": args.remote_keys}} \
        if args.server_uri else {}
    b = Bringup(args.embodiment, checkpoint=args.checkpoint, prompt=args.prompt, dry_run=args.dry_run, sim=args.sim,
                viz=args.viz, use_sim_time=args.sim, trigger=args.trigger, extra=extra).start()
    try:
        b.spin_for(args.duration if args.duration > 0 else float("inf"))
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
        rclpy.try_shutdown()
    return 0
