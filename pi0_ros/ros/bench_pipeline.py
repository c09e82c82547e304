"""`pi0-ros bench pipeline`: the ROS pipeline under load, measured.

Synthetic 640x480 rgb8 cameras (30 Hz) and joint states (200 Hz) feed the observation node;
the tiny pi0 (random weights) infers continuously in the policy node; the chunk executor runs
the control loop. By default the executor runs in its own process, as on a robot where the
policy runs on a GPU box (`--executor-in-process` puts it next to the policy, sharing the GIL).
Reports control-period jitter (p50/p99/max of |period - 1/rate|), missed ticks, chunk latency
(observation stamp -> chunk published) split into model time and overhead, and chunks used/s.

    pi0-ros bench pipeline --embodiment trossen_bimanual --duration 60 --json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default="trossen_bimanual")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured (after warm-up)")
    parser.add_argument("--camera-rate", type=float, default=30.0, help="Hz per synthetic camera")
    parser.add_argument("--joint-rate", type=float, default=200.0, help="Hz of synthetic joint states")
    parser.add_argument("--executor-in-process", action="store_true",
                        help="run the executor in the policy's process (default: its own process)")
    parser.add_argument("--trigger", default="continuous", choices=["continuous", "request"])
    parser.add_argument("--torch-threads", type=int, default=1, help="threads for the policy's torch")
    parser.add_argument("--realtime-priority", type=int, default=50,
                        help="SCHED_FIFO priority of the executor's control thread (0 = normal scheduling)")
    parser.add_argument("--cpu-load", type=int, default=0, metavar="N",
                        help="N CPU-burning processes (a busy loop each) beside the pipeline, stopped at the end")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--executor-child", type=float, default=0.0, help=argparse.SUPPRESS)


def _stats(x: list[float]) -> dict[str, float]:
    if not x:
        return {}
    a = np.asarray(x)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "mean": round(float(a.mean()), 3)}


def _executor_child(args: argparse.Namespace) -> int:
    """Runs in its own process: the executor node for `executor_child` seconds, then JSON stats."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from pi0_ros.ros.executor_node import ExecutorNode

    rclpy.init()
    node = ExecutorNode(parameter_overrides=[Parameter("embodiment", value=args.embodiment),
                                             Parameter("realtime_priority", value=args.realtime_priority),
                                             Parameter("gil_switch_interval", value=0.0005)])
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    print("ready", flush=True)
    end = time.monotonic() + args.executor_child
    warm = time.monotonic() + 5.0
    reset = False
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
        if not reset and time.monotonic() > warm:  # measure after the warm-up
            node.periods.clear()
            node.missed_ticks = 0
            switched0 = node.core.scheduler.counters.switched
            t_meas = time.monotonic()
            reset = True
    js = node.jitter_stats()
    c = node.core.scheduler.counters
    out = {"jitter": js, "chunks_used_per_s": (c.switched - switched0) / max(1e-9, time.monotonic() - t_meas),
           "actions_executed": c.actions_executed, "ticks_without_action": c.ticks_without_action,
           "safety": {k: v for k, v in node.core.safety.counters.items() if v}}
    node.destroy_node()
    rclpy.shutdown()
    print(json.dumps(out), flush=True)
    return 0


def _synthetic_sensors(node, emb, camera_rate: float, joint_rate: float) -> None:
    """Publishers of 640x480 rgb8 frames and joint states (mid-range positions)."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8).tobytes()
    cams = [node.create_publisher(Image, c.topic, qos_profile_sensor_data) for c in emb.cameras]
    joints = {s: node.create_publisher(JointState, t, qos_profile_sensor_data) for s, t in emb.joint_state_sources.items()}
    mid = (emb.lower + emb.upper) / 2

    def pub_cams() -> None:
        stamp = node.get_clock().now().to_msg()
        for p in cams:
            m = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=frame)
            m.header.stamp = stamp
            p.publish(m)

    def pub_joints() -> None:
        stamp = node.get_clock().now().to_msg()
        for s, p in joints.items():
            dims = [(i, d) for i, d in enumerate(emb.dims) if d.source == s]
            m = JointState(name=[d.joint for _, d in dims], position=[float(mid[i]) for i, _ in dims])
            m.header.stamp = stamp
            p.publish(m)

    node.create_timer(1.0 / camera_rate, pub_cams)
    node.create_timer(1.0 / joint_rate, pub_joints)


def run(args: argparse.Namespace) -> int:
    if args.executor_child:
        return _executor_child(args)
    from pi0_ros.bench.cpu_load import CpuLoad

    with CpuLoad(args.cpu_load) as load:  # started before the pipeline, always stopped
        result = _measure(args)
    result["cpu_load"] = load.describe()
    print(json.dumps(result, indent=2 if not args.json else None))
    return 0


def _measure(args: argparse.Namespace) -> dict:
    import rclpy
    import torch
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from pi0_ros.policy import Policy
    from pi0_ros.robots.embodiment import load_embodiment
    from pi0_ros.ros.bringup import overrides
    from pi0_ros.ros.executor_node import ExecutorNode
    from pi0_ros.ros.observation_node import ObservationNode
    from pi0_ros.ros.policy_node import PolicyNode

    emb = load_embodiment(args.embodiment)
    torch.set_num_threads(args.torch_threads)
    warmup = 5.0
    child = None
    if not args.executor_in_process:
        child = subprocess.Popen([sys.executable, "-m", "pi0_ros.cli", "bench", "pipeline", "--embodiment",
                                  args.embodiment, "--executor-child", str(args.duration + warmup),
                                  "--realtime-priority", str(args.realtime_priority)],
                                 stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        assert child.stdout.readline().strip() == "ready"
    rclpy.init()
    sensors = Node("bench_sensors")
    _synthetic_sensors(sensors, emb, args.camera_rate, args.joint_rate)
    common = {"embodiment": emb.name}
    nodes = [sensors, ObservationNode(parameter_overrides=overrides({**common, "prompt": "pick up the red cube"})),
             PolicyNode(policy=Policy.tiny_random(seed=0), parameter_overrides=overrides(
                 {**common, "trigger": args.trigger, "warmup_runs": 2}))]
    executor_node = None
    if args.executor_in_process:
        executor_node = ExecutorNode(parameter_overrides=overrides({**common, "realtime_priority": args.realtime_priority}))
        nodes.append(executor_node)
    # One executor thread per node, as in `pi0-ros bringup` (see pi0_ros.ros.bringup).
    executors = []
    for n in nodes:
        e = SingleThreadedExecutor()
        e.add_node(n)
        threading.Thread(target=e.spin, daemon=True).start()
        executors.append(e)
    time.sleep(warmup)
    pol = nodes[2]
    pol.model_ms.clear(), pol.latency_ms.clear(), pol.overhead_ms.clear(), pol.wait_ms.clear()
    chunks0 = pol.sequence
    if executor_node is not None:
        executor_node.periods.clear()
        executor_node.missed_ticks = 0
        sw0 = executor_node.core.scheduler.counters.switched
    time.sleep(args.duration)
    model, lat, over, wait = list(pol.model_ms), list(pol.latency_ms), list(pol.overhead_ms), list(pol.wait_ms)
    produced = pol.sequence - chunks0
    if executor_node is not None:
        ex_stats = {"jitter": executor_node.jitter_stats(),
                    "chunks_used_per_s": (executor_node.core.scheduler.counters.switched - sw0) / args.duration,
                    "safety": {k: v for k, v in executor_node.core.safety.counters.items() if v}}
    for e in executors:
        e.shutdown(timeout_sec=2.0)
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown()
    if child is not None:
        ex_stats = json.loads(child.stdout.read().strip().splitlines()[-1])
        child.wait(timeout=30)
    result = {
        "embodiment": emb.name, "control_rate_hz": emb.control_rate_hz, "duration_s": args.duration,
        "executor": "in-process" if args.executor_in_process else "own process",
        "realtime_priority": args.realtime_priority,
        "cameras": f"{len(emb.cameras)} x 640x480 rgb8 @ {args.camera_rate:g} Hz", "joint_rate_hz": args.joint_rate,
        "policy": "tiny preset, random weights, trigger=" + args.trigger, "torch_threads": args.torch_threads,
        "control_jitter_ms": {k: round(v, 3) for k, v in ex_stats["jitter"].items() if k.startswith("jitter")},
        "ticks": ex_stats["jitter"].get("ticks"), "missed_ticks": ex_stats["jitter"].get("missed_ticks"),
        "chunk_latency_ms": _stats(lat), "model_ms": _stats(model),
        "overhead_ms": _stats([l - m for l, m in zip(lat, model)]),
        # overhead = wait (t_obs -> inference start: camera -> observation node -> policy, incl. waiting for
        # the previous inference to finish) + processing (decode, preprocess, publish besides the model).
        "overhead_wait_ms": _stats(wait), "overhead_processing_ms": _stats([l - m - w for l, m, w in zip(lat, model, wait)]),
        "policy_node_overhead_ms": _stats(over), "chunks_produced_per_s": round(produced / args.duration, 2),
        "chunks_used_per_s": round(ex_stats["chunks_used_per_s"], 2), "safety_interventions": ex_stats["safety"],
        # The executor node's default: commands are built every tick but never published, so a
        # bench on a robot computer cannot move the robot.
        "dry_run": True,
    }
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
