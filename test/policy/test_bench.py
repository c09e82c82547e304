"""Tests for pi0_ros.bench.model (`pi0-ros bench model`)."""

import argparse
import json

import pytest

from pi0_ros.bench import model as bench


def _run(capsys, *argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    code = bench.run(parser.parse_args(list(argv)))
    return code, capsys.readouterr()


def test_tiny_json(capsys):
    code, out = _run(capsys, "--preset", "tiny", "--cameras", "2", "--runs", "2", "--warmup", "1", "--threads", "2", "--json")
    assert code == 0
    r = json.loads(out.out)  # stdout holds exactly one JSON object
    assert r["preset"] == "tiny" and r["cameras"] == 2 and r["threads"] == 2 and r["runs"] == 2
    assert r["device"] == "cpu" and r["dtype"] == "float32" and r["num_steps"] == 10
    assert 100_000 < r["params"] < 5_000_000
    assert r["split_method"] == "hooks" and r["split_verified"] is True
    for key in ("prefix_ms", "step_ms", "model_total_ms", "total_ms", "preprocess_ms", "peak_rss_mb"):
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["model_total_ms"] == pytest.approx(r["prefix_ms"] + 10 * r["step_ms"], rel=0.5)
    assert len(r["samples_ms"]["model_total"]) == 2
    assert r["transformers"] is None


def test_compare_transformers_same_size(capsys):
    code, out = _run(capsys, "--preset", "tiny", "--cameras", "2", "--runs", "1", "--warmup", "0", "--steps", "2",
                     "--threads", "2", "--json", "--compare-transformers")
    assert code == 0
    r = json.loads(out.out)
    hf = r["transformers"]
    assert hf["model_total_ms"] > 0 and hf["ratio_ours_over_theirs"] > 0
    assert hf["ratio_ours_over_theirs"] == pytest.approx(r["model_total_ms"] / hf["model_total_ms"])
    # same network: transformers' action expert only adds an unused token embedding (vocab x width)
    from pi0_ros.model.config import get_preset

    cfg = get_preset("tiny")
    assert hf["params"] - cfg.vocab_size * cfg.expert.width == r["params"]


def test_human_readable(capsys):
    code, out = _run(capsys, "--runs", "1", "--warmup", "0", "--steps", "2", "--model-only")
    assert code == 0
    assert "prefix" in out.out and "per step" in out.out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.out)


@pytest.mark.parametrize("argv", [["--preset", "huge"], ["--cameras", "4"], ["--runs", "0"]])
def test_bad_arguments(capsys, argv):
    code, out = _run(capsys, *argv)
    assert code == 2 and "bench model" in out.err


def test_pi05_family(capsys):
    code, out = _run(capsys, "--preset", "tiny", "--family", "pi05", "--cameras", "2", "--runs", "2", "--warmup", "1",
                     "--threads", "2", "--json")
    assert code == 0
    r = json.loads(out.out)
    assert r["family"] == "pi05" and r["split_method"] == "hooks" and r["split_verified"] is True
    assert 40 < r["prompt_tokens"] <= 200  # the state is prompt text
    assert r["model_total_ms"] == pytest.approx(r["prefix_ms"] + 10 * r["step_ms"], rel=0.5)
    code, out = _run(capsys, "--preset", "pi05_tiny", "--runs", "1", "--warmup", "0", "--steps", "2", "--model-only")
    assert code == 0 and out.out.startswith("pi05 pi05_tiny")
    code, out = _run(capsys, "--preset", "tiny", "--family", "pi05", "--compare-transformers")
    assert code == 2 and "no π0.5" in out.err
