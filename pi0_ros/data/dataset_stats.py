"""Dataset statistics: LeRobot's per-feature stats (meta/stats.json and per episode) and the
openpi norm stats in model convention (norm_stats.json)."""
from __future__ import annotations

from typing import Any

import numpy as np

from pi0_ros.model.normalize import NormStats
from pi0_ros.robots.embodiment import Embodiment


QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)   # LeRobot's DEFAULT_QUANTILES -> q01, q10, q50, q90, q99
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)


def vector_stats(x: np.ndarray) -> dict[str, Any]:
    """LeRobot's per-feature statistics over axis 0 of (N, d): min, max, mean, std, count, q01..q99."""
    x = np.asarray(x, dtype=np.float64)
    out: dict[str, Any] = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
                           "std": x.std(0).tolist(), "count": [int(x.shape[0])]}
    qs = np.quantile(x, QUANTILES, axis=0)
    for k, q in zip(QUANTILE_KEYS, qs):
        out[k] = q.tolist()
    return out


class ImageStats:
    """Per-channel image statistics in [0, 1], shape (3, 1, 1), as LeRobot stores them.

    Like LeRobot, pixels are taken from a downsampled copy (every 4th pixel per axis) and the
    quantiles from a bounded sample of them.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.n = 0
        self.s = np.zeros(3)
        self.s2 = np.zeros(3)
        self.lo = np.full(3, np.inf)
        self.hi = np.full(3, -np.inf)
        self.samples: list[np.ndarray] = []

    def add(self, rgb: np.ndarray) -> None:
        flat = np.ascontiguousarray(rgb[::4, ::4]).reshape(-1, 3).astype(np.float64) / 255.0
        self.frames += 1
        self.n += flat.shape[0]
        self.s += flat.sum(0)
        self.s2 += (flat ** 2).sum(0)
        self.lo = np.minimum(self.lo, flat.min(0))
        self.hi = np.maximum(self.hi, flat.max(0))
        if len(self.samples) < 200:
            self.samples.append(flat[::7])

    def merge(self, other: "ImageStats") -> None:
        self.frames += other.frames
        self.n += other.n
        self.s += other.s
        self.s2 += other.s2
        self.lo = np.minimum(self.lo, other.lo)
        self.hi = np.maximum(self.hi, other.hi)
        self.samples += other.samples

    def result(self) -> dict[str, Any]:
        mean = self.s / max(self.n, 1)
        std = np.sqrt(np.maximum(self.s2 / max(self.n, 1) - mean**2, 0.0))
        sub = np.concatenate(self.samples) if self.samples else np.zeros((1, 3))
        qs = np.quantile(sub, QUANTILES, axis=0)

        def c(v: np.ndarray) -> list:
            return [[[float(x)]] for x in v]
        out = {"min": c(self.lo), "max": c(self.hi), "mean": c(mean), "std": c(std), "count": [self.frames]}
        for k, q in zip(QUANTILE_KEYS, qs):
            out[k] = c(q)
        return out


def model_norm_stats(emb: Embodiment, state: np.ndarray, action: np.ndarray) -> dict[str, NormStats]:
    """openpi norm stats in MODEL convention over slots 0..max slot (unused slots: mean 0, std 1)."""
    width = emb.min_action_dim
    out = {}
    for key, x in (("state", state), ("actions", action)):
        m = emb.to_model(np.asarray(x, dtype=np.float64))
        s = vector_stats(m)
        vec = {}
        for k, fill in (("mean", 0.0), ("std", 1.0), ("q01", -1.0), ("q99", 1.0)):
            v = np.full(width, fill)
            v[emb.slots] = s[k]
            vec[k] = v
        out[key] = NormStats(**vec)
    return out
