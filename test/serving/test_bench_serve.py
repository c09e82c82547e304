"""`pi0-ros bench serve`: one JSON object with overhead percentiles and bytes per request."""
import argparse
import json

from pi0_ros.bench import serve as bench


def test_bench_serve_json_against_a_child_server(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args(["--runs", "5", "--warmup", "1", "--json"])) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["server"] == "pi0_ros" and r["cameras"] == 3 and r["image"] == "224x224 uint8" and r["runs"] == 5
    assert r["bytes_per_request"] > 3 * 224 * 224 * 3           # three raw uint8 cameras + state + prompt
    assert r["bytes_per_reply"] > 50 * 32 * 8                    # the float64 chunk
    assert r["total_ms"]["p50"] > r["model_ms"]["p50"] > 0
    assert 0 < r["overhead_ms"]["p50"] <= r["overhead_ms"]["p99"]
    assert r["transport_ms"]["p50"] <= r["overhead_ms"]["p50"]   # overhead also counts server preprocessing


def test_jpeg_requests_are_smaller(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args(["--runs", "3", "--warmup", "1", "--jpeg", "90", "--keys", "aloha",
                                        "--json"])) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["key_set"] == "aloha" and r["image"] == "224x224 jpeg q90"
    assert r["bytes_per_request"] < 3 * 224 * 224 * 3 / 4
