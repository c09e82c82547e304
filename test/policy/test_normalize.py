"""Tests for pi0_ros.model.normalize (openpi norm_stats.json, z-score and quantile maths)."""

import json

import numpy as np
import pytest

from pi0_ros.model.normalize import (
    NormStats,
    NormStatsError,
    Normalizer,
    load_norm_stats,
    save_norm_stats,
)


def _stats(dim, seed):
    rng = np.random.default_rng(seed)
    q01 = rng.normal(size=dim) - 2
    return NormStats(mean=rng.normal(size=dim), std=rng.uniform(0.1, 2, size=dim), q01=q01, q99=q01 + rng.uniform(1, 4, size=dim))


@pytest.fixture
def stats():
    return {"state": _stats(14, 0), "actions": _stats(14, 1)}


def test_round_trip_openpi_layout(tmp_path, stats):
    file = save_norm_stats(tmp_path / "assets" / "trossen", stats)
    assert file.name == "norm_stats.json"
    raw = json.loads(file.read_text())
    assert set(raw) == {"norm_stats"} and set(raw["norm_stats"]) == {"state", "actions"}
    assert set(raw["norm_stats"]["state"]) == {"mean", "std", "q01", "q99"}
    loaded = load_norm_stats(file.parent)
    for k in stats:
        for f in ("mean", "std", "q01", "q99"):
            np.testing.assert_array_equal(getattr(loaded[k], f), getattr(stats[k], f))


def test_zscore_matches_numpy_reference(stats):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 14))
    n = Normalizer(stats, "zscore")
    s = stats["state"]
    np.testing.assert_allclose(n.normalize(x, "state"), (x - s.mean) / (s.std + 1e-6), rtol=1e-12)
    a = stats["actions"]
    np.testing.assert_allclose(n.unnormalize(x, "actions"), x * (a.std + 1e-6) + a.mean, rtol=1e-12)
    np.testing.assert_allclose(n.unnormalize(n.normalize(x, "state"), "state"), x, atol=1e-12)


def test_quantile_matches_numpy_reference(stats):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 14))
    n = Normalizer(stats, "quantile")
    s = stats["state"]
    ref = (x - s.q01) / (s.q99 - s.q01 + 1e-6) * 2.0 - 1.0
    np.testing.assert_allclose(n.normalize(x, "state"), ref, rtol=1e-12)
    np.testing.assert_allclose(n.normalize(s.q01, "state"), -1.0, atol=1e-9)
    np.testing.assert_allclose(n.normalize(s.q99, "state"), 1.0, atol=1e-5)
    np.testing.assert_allclose(n.unnormalize(n.normalize(x, "actions"), "actions"), x, atol=1e-12)


@pytest.mark.parametrize("mode", ["zscore", "quantile"])
def test_stats_shorter_than_padded_vector(stats, mode):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 32))  # padded to the model's action dim
    n = Normalizer(stats, mode)
    full = n.normalize(x[:, :14], "state")
    out = n.normalize(x, "state")
    np.testing.assert_array_equal(out[:, :14], full)
    np.testing.assert_array_equal(out[:, 14:], x[:, 14:])  # padding dims untouched
    back = n.unnormalize(x, "actions")
    np.testing.assert_array_equal(back[:, 14:], x[:, 14:])
    np.testing.assert_array_equal(back[:, :14], n.unnormalize(x[:, :14], "actions"))


def test_stats_longer_than_vector_are_truncated(stats):
    x = np.ones(7)
    out = Normalizer(stats).normalize(x, "state")
    s = stats["state"]
    np.testing.assert_allclose(out, (1 - s.mean[:7]) / (s.std[:7] + 1e-6))


def test_inputs_not_modified_and_identity(stats):
    x = np.arange(14.0)
    before = x.copy()
    Normalizer(stats).normalize(x, "state")
    np.testing.assert_array_equal(x, before)
    ident = Normalizer.identity()
    assert ident.is_identity
    np.testing.assert_array_equal(ident.unnormalize(x), x)


def test_quantile_mode_requires_quantiles():
    s = {"state": NormStats(mean=[0.0], std=[1.0]), "actions": NormStats(mean=[0.0], std=[1.0])}
    Normalizer(s, "zscore")
    with pytest.raises(NormStatsError, match="q01/q99"):
        Normalizer(s, "quantile")
    with pytest.raises(ValueError, match="mode"):
        Normalizer(s, "minmax")


def test_missing_key_in_normalizer(stats):
    with pytest.raises(KeyError, match="velocity"):
        Normalizer(stats).normalize(np.zeros(3), "velocity")


def _write(tmp_path, payload, raw=None):
    f = tmp_path / "norm_stats.json"
    f.write_text(raw if raw is not None else json.dumps(payload))
    return f


GOOD = {"mean": [0.0, 1.0], "std": [1.0, 2.0], "q01": [-1.0, -1.0], "q99": [1.0, 3.0]}


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"stats": {}}, '"norm_stats"'),
        ({"norm_stats": {"state": GOOD}}, r'norm_stats\.actions'),
        ({"norm_stats": {"state": {"mean": [0.0], "q01": [0.0], "q99": [1.0]}, "actions": GOOD}}, r'state.*"std"'),
        ({"norm_stats": {"state": GOOD, "actions": {**GOOD, "std": [1.0]}}}, "different lengths"),
        ({"norm_stats": {"state": GOOD, "actions": {**GOOD, "mean": "abc"}}}, r"actions\.mean"),
        ({"norm_stats": {"state": GOOD, "actions": {**GOOD, "q99": None}}}, "together"),
        ({"norm_stats": {"state": GOOD, "actions": [1, 2]}}, "must be an object"),
    ],
)
def test_malformed_files(tmp_path, payload, match):
    with pytest.raises(NormStatsError, match=match):
        load_norm_stats(_write(tmp_path, payload))


def test_nan_values_rejected(tmp_path):
    raw = json.dumps({"norm_stats": {"state": GOOD, "actions": GOOD}}).replace("[1.0, 2.0]", "[1.0, NaN]")
    with pytest.raises(NormStatsError, match=r"state\.std.*index \[1\]"):
        load_norm_stats(_write(tmp_path, None, raw))


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(NormStatsError, match="not valid JSON"):
        load_norm_stats(_write(tmp_path, None, "{"))
    with pytest.raises(FileNotFoundError):
        load_norm_stats(tmp_path / "nope")


def test_quantiles_optional_in_file(tmp_path):
    f = _write(tmp_path, {"norm_stats": {"state": {"mean": [0.0], "std": [1.0], "q01": None, "q99": None},
                                         "actions": {"mean": [0.0], "std": [1.0]}}})
    s = load_norm_stats(f)
    assert not s["state"].has_quantiles
