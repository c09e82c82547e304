"""`pi0-ros bench serve`: what remote inference costs over loopback.

Starts `pi0-ros serve` in a child process on 127.0.0.1 (the tiny preset with random weights by
default: the overhead does not depend on the model), then sends `--runs` observations with
3 cameras at 224x224 uint8 (or JPEG with `--jpeg`) through `RemotePolicy`, the policy node's
client. Per request:

- total: the client's wall time for `RemotePolicy.infer` (encode, send, server, receive, decode);
- model: the server's sampler time (``policy_timing.model_ms``);
- overhead = total - model (the target: p50 <= 5 ms at 224x224 uint8), and
  transport = total - the server's whole ``Policy.infer`` (preprocessing excluded);
- bytes per request and per reply.

    pi0-ros bench serve --json
    pi0-ros bench serve --jpeg 90 --keys aloha --runs 200
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=100, help="timed requests (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests first")
    parser.add_argument("--cameras", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--image-size", type=int, default=224, help="pixels per side sent (default 224)")
    parser.add_argument("--jpeg", type=int, default=0, help="JPEG quality (0 = raw uint8, default)")
    parser.add_argument("--keys", default="", help="key set the client sends (default pi0_ros; aloha = openpi CHW)")
    parser.add_argument("--checkpoint", default="", help="served checkpoint ('' = tiny preset, random weights)")
    parser.add_argument("--server-uri", default="", help="bench an already running server instead")
    parser.add_argument("--torch-threads", type=int, default=1, help="the started server's torch threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def measure(uri: str, args: argparse.Namespace) -> dict:
    from pi0_ros.policy import PolicyInput
    from pi0_ros.serving.client import RemotePolicy

    client = RemotePolicy(uri, args.keys, image_size=args.image_size, jpeg_quality=args.jpeg, request_timeout=60.0)
    client.warmup()
    if not client.connected:
        raise RuntimeError(f"cannot connect to {uri}")
    rng = np.random.default_rng(0)
    slots = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")[: args.cameras]
    # Smooth images (like camera frames, so JPEG sizes are realistic), at the size sent.
    s = args.image_size
    yy, xx = np.mgrid[0:s, 0:s]
    images = {k: np.stack([(xx * (i + 1) + yy) % 256, (yy * 2) % 256, (xx + 3 * yy) % 256], -1).astype(np.uint8)
              for i, k in enumerate(slots)}
    state = np.zeros(client.action_dim)
    state[:14] = rng.normal(size=14) * 0.1
    inp = PolicyInput(images=images, state=state, prompt="pick up the red cube")
    rows = []
    for i in range(args.warmup + args.runs):
        out = client.infer(inp)
        if i >= args.warmup:
            t = out.timing
            rows.append((t["total"], t["model"], t["total"] - t["server"], client.bytes_sent, client.bytes_received))
    client.close()
    total, model, transport, sent, recv = (list(c) for c in zip(*rows))
    overhead = [a - b for a, b in zip(total, model)]
    return {
        "uri": uri, "server": client.metadata.get("server"), "key_set": client.key_set.name,
        "cameras": args.cameras, "image": f"{args.image_size}x{args.image_size} " + (f"jpeg q{args.jpeg}" if args.jpeg
                                                                                       else "uint8"),
        "runs": args.runs,
        "total_ms": {"p50": _pct(total, 50), "p99": _pct(total, 99)},
        "model_ms": {"p50": _pct(model, 50), "p99": _pct(model, 99)},
        "overhead_ms": {"p50": _pct(overhead, 50), "p99": _pct(overhead, 99), "mean": statistics.mean(overhead)},
        "transport_ms": {"p50": _pct(transport, 50), "p99": _pct(transport, 99)},
        "bytes_per_request": int(statistics.median(sent)), "bytes_per_reply": int(statistics.median(recv)),
        "target_overhead_p50_ms": 5.0,
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count(),
                    "loadavg_1min": __import__("os").getloadavg()[0]},
    }


def run(args: argparse.Namespace) -> int:
    if args.server_uri:
        result = measure(args.server_uri, args)
    else:
        from pi0_ros.serving.process import ServeProcess

        serve_args = ["--warmup", "1", "--torch-threads", str(args.torch_threads)]
        if args.checkpoint:
            serve_args += ["--checkpoint", args.checkpoint]
        with ServeProcess(serve_args) as server:
            t0 = time.monotonic()
            result = measure(server.uri, args)
            result["wall_s"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        o = result["overhead_ms"]
        print(f"{result['cameras']} cameras {result['image']}: overhead (total - model) p50 {o['p50']:.2f} ms, "
              f"p99 {o['p99']:.2f} ms; total p50 {result['total_ms']['p50']:.1f} ms, model p50 "
              f"{result['model_ms']['p50']:.1f} ms; {result['bytes_per_request']} bytes/request, "
              f"{result['bytes_per_reply']} bytes/reply", file=sys.stderr)
    return 0
