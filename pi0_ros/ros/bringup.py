"""`pi0-ros bringup`: the observation, policy and executor nodes (optionally the simulator and
the viz node) in ONE process with one multi-threaded executor — the pip users' `ros2 launch`.

Node parameters are the same as in launch/pi0.launch.py and config/params/<embodiment>.yaml
(`--params-file`). Safe by default, as the launch file: dry run unless `--dry-run false`.
"""
from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from pi0_ros.ros.common import join_thread
from pi0_ros.signals import StopSignals


# role -> the node names a parameters file may use for it (the sim is 'pi0_sim' in sim.launch.py).
NODE_NAMES: dict[str, tuple[str, ...]] = {"observation": ("pi0_observation",), "policy": ("pi0_policy",),
                                          "executor": ("pi0_executor",), "viz": ("pi0_viz",), "sim": ("sim", "pi0_sim")}
ALL_NODES = "/**"  # ROS 2 parameters-file wildcard: every node


def overrides(params: dict[str, Any]) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in params.items()]


def load_params_file(path: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """A ROS 2 parameters YAML (node name -> ros__parameters, as config/params/*.yaml) as
    role -> parameters, plus the node names in it that bringup does not run."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of node names to 'ros__parameters'")
    by_name: dict[str, dict[str, Any]] = {}
    for name, body in data.items():
        params = (body or {}).get("ros__parameters") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise ValueError(f"{path}: node '{name}' has no 'ros__parameters' mapping")
        by_name[str(name) if str(name) == ALL_NODES else str(name).lstrip("/")] = params
    known = {n for names in NODE_NAMES.values() for n in names} | {ALL_NODES}
    roles = {role: {**by_name.get(ALL_NODES, {}), **{k: v for n in names for k, v in by_name.get(n, {}).items()}}
             for role, names in NODE_NAMES.items()}
    return {r: p for r, p in roles.items() if p}, sorted(set(by_name) - known)


@dataclass
class Bringup:
    """Builds and spins the nodes in one process; `nodes` keyed by role."""

    embodiment: str
    checkpoint: str = ""
    prompt: str = ""
    dry_run: bool = True                    # safe by default: commands computed, nothing published
    sim: bool = False
    viz: bool = False
    use_sim_time: bool = False
    trigger: str = "request"
    policy: Any = None                      # an already-built Policy (tests, demo)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> extra parameters
    # role -> parameters of a --params-file: the lowest precedence (this object's fields and
    # `extra` win, as the launch file's arguments win over config/params/*.yaml).
    file_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    context: Any = None
    nodes: dict[str, Any] = field(default_factory=dict)
    _spinners: list[tuple[SingleThreadedExecutor, threading.Thread, Any]] = field(default_factory=list, init=False,
                                                                                 repr=False)
    _destroyed: list[Any] = field(default_factory=list, init=False, repr=False)

    def start(self) -> "Bringup":
        from pi0_ros.ros.executor_node import ExecutorNode
        from pi0_ros.ros.observation_node import ObservationNode
        from pi0_ros.ros.policy_node import PolicyNode

        common = {"embodiment": self.embodiment, "use_sim_time": self.use_sim_time}
        kw = {"context": self.context} if self.context is not None else {}

        def params(role: str, p: dict[str, Any]) -> list[Parameter]:
            return overrides({**self.file_params.get(role, {}), **common, **p, **self.extra.get(role, {})})

        if self.sim:
            from pi0_ros.ros.sim_node import SimNode

            self.nodes["sim"] = SimNode(parameter_overrides=params("sim", {}), **kw)
        self.nodes["observation"] = ObservationNode(parameter_overrides=params("observation", {"prompt": self.prompt}), **kw)
        self.nodes["policy"] = PolicyNode(policy=self.policy, parameter_overrides=params(
            "policy", {"checkpoint": self.checkpoint, "trigger": self.trigger}), **kw)
        # The executor reads the checkpoint's inference.json for execute_steps (nothing else).
        self.nodes["executor"] = ExecutorNode(parameter_overrides=params(
            "executor", {"dry_run": self.dry_run, "checkpoint": self.checkpoint}), **kw)
        if self.viz:
            from pi0_ros.ros.viz_node import VizNode

            self.nodes["viz"] = VizNode(parameter_overrides=params("viz", {}), **kw)
        # One single-threaded executor per node, each on its own thread: rclpy's
        # MultiThreadedExecutor busy-loops while a long callback of a node runs (the entity stays
        # ready), which starves every other thread of the GIL (the sim, the inference).
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
        """Let the nodes run for `seconds` (or until `until()` is true, or the context is shut down)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and (until is None or not until()) and self.ok():
            time.sleep(min(0.02, max(0.0, end - time.monotonic())))

    def ok(self) -> bool:
        """False once the context is shut down (e.g. rclpy's own signal handler): nothing to spin."""
        return self.context.ok() if self.context is not None else rclpy.ok()

    @staticmethod
    def _stop_spinner(ex: SingleThreadedExecutor, t: threading.Thread) -> None:
        """Shut a node's executor down and wait for its thread to end: a node is never destroyed,
        nor the context shut down, while a thread still spins it (see join_thread)."""
        ex.shutdown(timeout_sec=2.0)
        # The thread's name, not node.get_name(): the node's handle is gone once the context is.
        join_thread(t, get_logger("pi0_bringup"), f"{t.name.removeprefix('spin_')}'s callback to return")

    def remove_node(self, node) -> None:
        for i, (ex, t, n) in enumerate(self._spinners):
            if n is node:
                self._stop_spinner(ex, t)
                del self._spinners[i]
                return

    def stop(self) -> None:
        """Stop every node, in reverse start order (the executor before the policy and the sensors);
        safe after a partial start() and when called twice. Each node's executor stops before the
        node is destroyed; a node's own thread (control loop, inference, simulator) ends before
        its destroy_node returns, so nothing runs on once the context is shut down."""
        done = {id(n) for n in self._destroyed}
        for ex, t, n in reversed(self._spinners):
            self._stop_spinner(ex, t)
            n.destroy_node()
            done.add(id(n))
        self._spinners.clear()
        for n in reversed(list(self.nodes.values())):
            if id(n) not in done:  # built, never spun (start() failed half-way)
                n.destroy_node()
        self._destroyed = list(self.nodes.values())


DEFAULTS = {"embodiment": "trossen_bimanual", "checkpoint": "", "prompt": "", "trigger": "request"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults None: an option given on the command line wins over --params-file, the file over
    # the built-in default (DEFAULTS).
    parser.add_argument("--embodiment", default=None, help="embodiment name (pi0-ros embodiments; default: the "
                        "params file's, else trossen_bimanual)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory ('' = tiny preset, RANDOM weights)")
    parser.add_argument("--prompt", default=None, help="initial task prompt")
    parser.add_argument("--dry-run", choices=["true", "false"], default="true",
                        help="true (default): compute and log commands, publish nothing to the robot; "
                             "false: LIVE, commands go to the robot")
    parser.add_argument("--params-file", default=None, metavar="FILE",
                        help="ROS 2 parameters YAML keyed by node name (ros__parameters), e.g. "
                             "config/params/ur5e.yaml; the options above win over it")
    parser.add_argument("--sim", action="store_true", help="also run the MuJoCo simulator node (sim time)")
    parser.add_argument("--viz", action="store_true", help="also run the rviz helper node")
    parser.add_argument("--trigger", default=None, choices=["request", "continuous"])
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until Ctrl-C)")
    parser.add_argument("--server-uri", default="", help="policy node backend remote: this openpi-protocol server "
                        "(pi0-ros serve, or openpi's with --remote-keys)")
    parser.add_argument("--remote-keys", default="", help="key set the server expects (aloha, droid, libero)")


def resolve(args: argparse.Namespace, file_params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Bringup's fields from the options, the params file and DEFAULTS (in that order)."""
    where = {"checkpoint": "policy", "prompt": "observation", "trigger": "policy"}
    out = {k: getattr(args, k) if getattr(args, k) is not None else file_params.get(where[k], {}).get(k, DEFAULTS[k])
           for k in where}
    named = {p["embodiment"] for p in file_params.values() if "embodiment" in p}
    if args.embodiment is None and len(named) > 1:
        raise SystemExit(f"--params-file names several embodiments {sorted(named)}: give --embodiment")
    out["embodiment"] = args.embodiment or (named.pop() if named else DEFAULTS["embodiment"])
    out["dry_run"] = args.dry_run != "false"
    return out


def _check_params_file(b: Bringup, unknown_nodes: list[str], log) -> None:
    """ROS ignores what it does not know: say so, once, for what the params file sets."""
    if unknown_nodes:
        log.warning(f"params file: no such node in bringup: {unknown_nodes} (known: "
                    f"{sorted(n for names in NODE_NAMES.values() for n in names)})")
    for role, params in b.file_params.items():
        node = b.nodes.get(role)
        if node is not None:
            undeclared = sorted(k for k in params if not node.has_parameter(k))
            if undeclared:
                log.warning(f"params file: {node.get_name()} has no parameters {undeclared} (ignored)")
    if b.file_params.get("executor", {}).get("dry_run") is False and b.dry_run:
        log.warning("params file sets dry_run: false - ignored, as in the launch file: LIVE needs --dry-run false")


def run(args: argparse.Namespace) -> int:
    # Ctrl-C / SIGTERM only ask to stop: the nodes stop first (control loop, simulator, inference),
    # the context goes last. rclpy's handlers would shut the context down under the running node
    # threads, and end the main loop only through a KeyboardInterrupt that never comes when SIGINT
    # was ignored at start (`pi0-ros bringup &` in a script): see pi0_ros.signals.
    with StopSignals() as signals:
        file_params, unknown_nodes = load_params_file(args.params_file) if args.params_file else ({}, [])
        r = resolve(args, file_params)
        extra = {"policy": {"backend": "remote", "server_uri": args.server_uri, "remote_keys": args.remote_keys}} \
            if args.server_uri else {}
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        log = get_logger("pi0_bringup")
        b = Bringup(r["embodiment"], checkpoint=r["checkpoint"], prompt=r["prompt"], dry_run=r["dry_run"],
                    sim=args.sim, viz=args.viz, use_sim_time=args.sim, trigger=r["trigger"], file_params=file_params,
                    extra=extra)
        try:
            b.start()
            _check_params_file(b, unknown_nodes, log)
            if b.dry_run:
                log.info("DRY RUN (default): commands are computed and logged, nothing is published to the "
                         + ("simulated robot, so it will not move" if args.sim else "robot")
                         + "; --dry-run false to drive it")
            else:
                log.warning("!!! LIVE: --dry-run false - the executor PUBLISHES COMMANDS TO THE ROBOT "
                            f"({r['embodiment']}). Ctrl-C stops. !!!")
            b.spin_for(args.duration if args.duration > 0 else float("inf"), until=signals.stop.is_set)
        finally:
            b.stop()
            rclpy.try_shutdown()
    return 0
