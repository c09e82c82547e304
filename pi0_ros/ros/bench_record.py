"""`pi0-ros bench record`: is anything lost when recording under load?

A separate process publishes an embodiment's sensors (3 cameras 640x480 rgb8 at 30 Hz,
joint states at 500 Hz per source, reliable QoS so that DDS itself drops nothing); this
process records them with the recorder node (mcap) and compares published vs written counts.

    pi0-ros bench record --embodiment trossen_bimanual --duration 60 --json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default="trossen_bimanual")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--camera-rate", type=float, default=30.0)
    parser.add_argument("--joint-rate", type=float, default=500.0)
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    parser.add_argument("--out", default=None, help="bag folder (default: a temporary one, deleted)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--publisher-child", action="store_true", help=argparse.SUPPRESS)


def _publisher(args: argparse.Namespace) -> int:
    import numpy as np
    import rclpy
    from rclpy.duration import Duration
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState

    from pi0_ros.robots.embodiment import load_embodiment

    emb = load_embodiment(args.embodiment)
    rclpy.init()
    node = Node("bench_record_publisher")
    # A careful driver: reliable + KEEP_ALL, so DDS blocks rather than overwrites unacked samples.
    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=100, reliability=ReliabilityPolicy.RELIABLE)
    cams = {c.topic: node.create_publisher(Image, c.topic, qos) for c in emb.cameras}
    joints = {t: node.create_publisher(JointState, t, qos) for t in emb.joint_state_sources.values()}
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8).tobytes()
    counts = {t: 0 for t in [*cams, *joints]}
    print("ready", flush=True)
    sys.stdin.readline()  # the recorder has created its subscriptions ...
    end = time.monotonic() + 10
    while time.monotonic() < end and not all(p.get_subscription_count() for p in [*cams.values(), *joints.values()]):
        time.sleep(0.01)  # ... and DDS has matched them with our publishers
    t0 = time.monotonic()
    next_cam, next_js = t0, t0
    while (now := time.monotonic()) < t0 + args.duration:
        if now >= next_js:
            stamp = node.get_clock().now().to_msg()
            for t, p in joints.items():
                m = JointState(name=[f"j{i}" for i in range(7)], position=[0.1] * 7)
                m.header.stamp = stamp
                p.publish(m)
                counts[t] += 1
            next_js += 1.0 / args.joint_rate
        if now >= next_cam:
            stamp = node.get_clock().now().to_msg()
            for t, p in cams.items():
                m = Image(height=480, width=640, encoding="rgb8", step=1920, data=frame)
                m.header.stamp = stamp
                p.publish(m)
                counts[t] += 1
            next_cam += 1.0 / args.camera_rate
        time.sleep(max(0.0, min(next_js, next_cam) - time.monotonic()))
    seconds = time.monotonic() - t0
    # A reliable publisher that goes away takes its unacknowledged samples with it: stay until
    # the recorder has acknowledged every sample (it may be behind by a few seconds of data).
    acked = all(p.wait_for_all_acked(Duration(seconds=60)) for p in [*cams.values(), *joints.values()])
    print(json.dumps({"published": counts, "seconds": seconds, "all_acked": acked}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run(args: argparse.Namespace) -> int:
    if args.publisher_child:
        return _publisher(args)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from pi0_ros.ros.recorder_node import RecorderNode

    out = args.out or tempfile.mkdtemp(prefix="pi0_bench_record_")
    child = subprocess.Popen([sys.executable, "-m", "pi0_ros.cli", "bench", "record", "--publisher-child",
                              "--embodiment", args.embodiment, "--duration", str(args.duration),
                              "--camera-rate", str(args.camera_rate), "--joint-rate", str(args.joint_rate)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert child.stdout.readline().strip() == "ready"
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    rec = RecorderNode(context=ctx, parameter_overrides=[
        Parameter("embodiment", value=args.embodiment), Parameter("output_dir", value=out),
        Parameter("storage", value=args.storage), Parameter("record_action_chunks", value=False)])
    # Single-threaded, as in `pi0-ros record`: the recorder's callbacks share one mutually
    # exclusive group anyway, and rclpy's MultiThreadedExecutor busy-polls and starves the
    # bag-writer thread of the GIL.
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(rec)
    deadline = time.monotonic() + 20
    sensor_topics = None
    while time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.05)
        sensor_topics = [t for t in rec.subscribed if t.startswith(("/cam", "/follower", "/camera", "/arx", "/joint"))]
        if len(sensor_topics) >= 5:
            break
    rec.start_episode("bench record load")
    t_start = time.monotonic()
    child.stdin.write("go\n")
    child.stdin.flush()
    result_line = []

    def read_child() -> None:
        result_line.append(child.stdout.readline())

    import threading

    reader = threading.Thread(target=read_child, daemon=True)
    reader.start()
    while reader.is_alive():  # the child answers once every sample is acknowledged
        ex.spin_once(timeout_sec=0.01)
    tail = time.monotonic() + 1.0
    while time.monotonic() < tail:  # take what the reader cache still holds
        ex.spin_once(timeout_sec=0.01)
    summary = rec.finish(True)
    wall = time.monotonic() - t_start
    ex.remove_node(rec)
    rec.destroy_node()
    rclpy.try_shutdown(context=ctx)
    child.wait(timeout=30)
    published = json.loads(result_line[0])["published"]
    topics = summary["topics"]
    rows = {t: {"published": n, "received": topics.get(t, {}).get("received", 0),
                "written": topics.get(t, {}).get("written", 0)} for t, n in published.items()}
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    res = {"embodiment": args.embodiment, "storage": args.storage, "duration_s": args.duration,
           "cameras": f"640x480 rgb8 @ {args.camera_rate:g} Hz", "joint_rate_hz": args.joint_rate,
           "published": sum(published.values()), "written": sum(r["written"] for r in rows.values()),
           "publish_seconds": round(json.loads(result_line[0])["seconds"], 2),
           "all_acked": json.loads(result_line[0])["all_acked"],
           "lost": sum(r["published"] - r["written"] for r in rows.values()), "per_topic": rows,
           "bag_mb": round(size / 2**20, 1), "write_mb_per_s": round(size / 2**20 / wall, 1), "out": out}
    if args.out is None:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(res, indent=None if args.json else 2))
    return 0 if res["lost"] == 0 else 1
