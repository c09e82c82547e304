"""`pi0-ros bench pipeline` runs the real nodes and prints the figures it promises."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_bench_pipeline_prints_json():
    out = subprocess.run([sys.executable, "-m", "pi0_ros.cli", "bench", "pipeline", "--duration", "4", "--json"],
                         capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-3000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("jitter_p50_ms", "jitter_p99_ms", "jitter_max_ms"):
        assert d["control_jitter_ms"][key] >= 0
    assert d["ticks"] > 150 and d["missed_ticks"] >= 0  # ~4 s at 50 Hz
    assert d["chunks_produced_per_s"] > 0 and d["chunks_used_per_s"] > 0
    assert d["model_ms"]["p50"] > 0 and d["chunk_latency_ms"]["p50"] >= d["model_ms"]["p50"]
    assert "non_finite" not in d["safety_interventions"]
