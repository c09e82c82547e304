"""`pi0-ros bench train`: the tiny preset end to end, one fresh process per batch size."""
from __future__ import annotations

import json

from pi0_ros.cli import main as cli_main


def test_bench_train_reports_memory_breakdown_and_speed(capsys):
    rc = cli_main(["bench", "train", "--preset", "tiny", "--lora", "--batch-sizes", "1", "2", "--steps", "2",
                   "--cameras", "2", "--threads", "1", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    runs = report["runs"]
    assert [r["batch_size"] for r in runs] == [1, 2]
    for r in runs:
        bd = r["breakdown_bytes"]
        assert 0 < r["trainable_parameters"] < r["parameters"] and r["lora"] and r["grad_checkpoint"]
        assert r["seconds_per_step"] > 0 and all(x == x for x in r["losses"])  # finite
        # LoRA: gradients only for the trainable parameters, AdamW keeps two fp32 moments of them.
        assert bd["gradients"] == 4 * r["trainable_parameters"]
        assert bd["optimizer_state"] >= 8 * r["trainable_parameters"]
        assert bd["weights"] > 0 and bd["activations"] >= 0
        assert r["peak_rss_bytes"] >= r["rss_before_model_bytes"] + bd["weights"]
        assert r["gpu_estimate_bytes"] >= bd["weights"] + bd["gradients"] + bd["optimizer_state"]
