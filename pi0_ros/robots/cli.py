"""`pi0-ros embodiments`: list the embodiments shipped in config/embodiments."""
from __future__ import annotations

import argparse
import json

from pi0_ros.robots.embodiment import load_all, load_embodiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="embodiment names or YAML paths (default: all shipped)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    embs = [load_embodiment(n) for n in args.names] if args.names else load_all()
    rows = [e.summary() for e in embs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20} {'dims':>4} {'rate':>6} {'exec':>4}  cameras")
    for r in rows:
        print(f"{r['name']:<20} {r['action_dims']:>4} {r['control_rate_hz']:>5.0f}Hz {r['execute_steps']:>4}  "
              + ", ".join(r["cameras"]))
    return 0
