"""State/action normalisation statistics in openpi's `norm_stats.json` format.

File format (openpi `shared/normalize.py`):
    {"norm_stats": {"state":   {"mean": [...], "std": [...], "q01": [...], "q99": [...]},
                    "actions": {"mean": [...], "std": [...], "q01": [...], "q99": [...]}}}
q01/q99 may be null/absent (then only z-score mode works).

Maths (openpi `transforms.Normalize` / `Unnormalize`):
    z-score   n = (x - mean) / (std + 1e-6)            x = n * (std + 1e-6) + mean
    quantile  n = (x - q01) / (q99 - q01 + 1e-6) * 2 - 1
              x = (n + 1) / 2 * (q99 - q01 + 1e-6) + q01
π0 uses z-score, π0.5 quantiles. Statistics shorter than the (padded) vector apply to its
first len(stats) dims; the remaining (padding) dims pass through unchanged. Longer statistics
are truncated to the vector.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

EPS = 1e-6  # openpi's epsilon in both modes
NORM_STATS_FILENAME = "norm_stats.json"
REQUIRED_KEYS = ("state", "actions")
NormMode = Literal["zscore", "quantile"]


class NormStatsError(ValueError):
    """A norm_stats.json file (or NormStats value) is malformed."""


def _as_vector(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise NormStatsError(f"{name}: not a list of numbers ({e})") from e
    if arr.ndim != 1 or arr.size == 0:
        raise NormStatsError(f"{name}: expected a non-empty 1-D list, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise NormStatsError(f"{name}: non-finite value(s) (NaN/inf) at index {bad.tolist()}")
    return arr


@dataclasses.dataclass(frozen=True)
class NormStats:
    """Per-dimension statistics of one feature (state or actions), float64 1-D arrays."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None  # 1st percentile
    q99: np.ndarray | None = None  # 99th percentile

    def __post_init__(self) -> None:
        for field in ("mean", "std", "q01", "q99"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _as_vector(value, field))
        if (self.q01 is None) != (self.q99 is None):
            raise NormStatsError("q01 and q99 must be given together")
        dims = {f: len(getattr(self, f)) for f in ("mean", "std", "q01", "q99") if getattr(self, f) is not None}
        if len(set(dims.values())) != 1:
            raise NormStatsError(f"statistics have different lengths: {dims}")
        if np.any(self.std < 0):
            raise NormStatsError("std has negative values")

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def has_quantiles(self) -> bool:
        return self.q01 is not None

    def to_json_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "q01": None if self.q01 is None else self.q01.tolist(),
            "q99": None if self.q99 is None else self.q99.tolist(),
        }

    @classmethod
    def identity(cls, dim: int) -> NormStats:
        """Unit statistics (mean 0, std 1, q01 -1, q99 1): normalising changes values only by ~1e-6."""
        return cls(mean=np.zeros(dim), std=np.ones(dim), q01=-np.ones(dim), q99=np.ones(dim))


def _resolve_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / NORM_STATS_FILENAME if p.is_dir() or p.suffix != ".json" else p


def parse_norm_stats(data, source: str = "norm stats", required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, NormStats]:
    """Validate the decoded JSON object and build NormStats per feature."""
    if not isinstance(data, dict) or "norm_stats" not in data:
        raise NormStatsError(f'{source}: missing top-level key "norm_stats"')
    entries = data["norm_stats"]
    if not isinstance(entries, dict):
        raise NormStatsError(f'{source}: "norm_stats" must be an object, got {type(entries).__name__}')
    for key in required:
        if key not in entries:
            raise NormStatsError(f'{source}: missing key "norm_stats.{key}" (found {sorted(entries)})')
    stats = {}
    for key, entry in entries.items():
        where = f"{source}: norm_stats.{key}"
        if not isinstance(entry, dict):
            raise NormStatsError(f"{where} must be an object")
        for field in ("mean", "std"):
            if entry.get(field) is None:
                raise NormStatsError(f'{where}: missing key "{field}"')
        try:
            stats[key] = NormStats(
                mean=_as_vector(entry["mean"], f"{where}.mean"),
                std=_as_vector(entry["std"], f"{where}.std"),
                q01=None if entry.get("q01") is None else _as_vector(entry["q01"], f"{where}.q01"),
                q99=None if entry.get("q99") is None else _as_vector(entry["q99"], f"{where}.q99"),
            )
        except NormStatsError as e:
            msg = str(e)
            raise NormStatsError(msg if msg.startswith(source) else f"{where}: {msg}") from None
    return stats


def load_norm_stats(path: str | os.PathLike, required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, NormStats]:
    """Load `norm_stats.json` (a file path, or a directory containing it)."""
    file = _resolve_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"norm stats file not found: {file}")
    text = file.read_text()
    try:
        # NaN/Infinity literals are accepted by json; reject them with a clear message below.
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NormStatsError(f"{file}: not valid JSON ({e})") from e
    return parse_norm_stats(data, source=str(file), required=required)


def save_norm_stats(path: str | os.PathLike, stats: Mapping[str, NormStats]) -> Path:
    """Write statistics in openpi's format; `path` is a .json file or a directory. Returns the file."""
    file = _resolve_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    payload = {"norm_stats": {k: v.to_json_dict() for k, v in stats.items()}}
    file.write_text(json.dumps(payload, indent=2, allow_nan=False))
    return file


class Normalizer:
    """Normalise state / unnormalise actions with openpi's maths.

    `stats=None` gives the identity normaliser (values pass through unchanged). Arrays may
    have any leading shape; the last axis is the feature vector. Results are float64.
    Stateless after construction, so safe to share between threads.
    """

    def __init__(self, stats: Mapping[str, NormStats] | None, mode: NormMode = "zscore") -> None:
        if mode not in ("zscore", "quantile"):
            raise ValueError(f'mode must be "zscore" or "quantile", got {mode!r}')
        self.mode: NormMode = mode
        self.stats: dict[str, NormStats] | None = None if stats is None else dict(stats)
        if self.stats is not None and mode == "quantile":
            missing = [k for k, s in self.stats.items() if not s.has_quantiles]
            if missing:
                raise NormStatsError(f"quantile mode needs q01/q99, missing for {missing}")

    @classmethod
    def identity(cls) -> Normalizer:
        return cls(None)

    @property
    def is_identity(self) -> bool:
        return self.stats is None

    def _get(self, key: str) -> NormStats | None:
        if self.stats is None:
            return None
        if key not in self.stats:
            raise KeyError(f'no normalisation statistics for "{key}" (have {sorted(self.stats)})')
        return self.stats[key]

    def normalize(self, x: np.ndarray, key: str = "state") -> np.ndarray:
        x = np.array(x, dtype=np.float64)  # copy: the padding dims are returned as given
        s = self._get(key)
        if s is None:
            return x
        d = min(s.dim, x.shape[-1])
        head = x[..., :d]
        if self.mode == "zscore":
            x[..., :d] = (head - s.mean[:d]) / (s.std[:d] + EPS)
        else:
            x[..., :d] = (head - s.q01[:d]) / (s.q99[:d] - s.q01[:d] + EPS) * 2.0 - 1.0
        return x

    def unnormalize(self, x: np.ndarray, key: str = "actions") -> np.ndarray:
        x = np.array(x, dtype=np.float64)
        s = self._get(key)
        if s is None:
            return x
        d = min(s.dim, x.shape[-1])
        head = x[..., :d]
        if self.mode == "zscore":
            x[..., :d] = head * (s.std[:d] + EPS) + s.mean[:d]
        else:
            x[..., :d] = (head + 1.0) / 2.0 * (s.q99[:d] - s.q01[:d] + EPS) + s.q01[:d]
        return x

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return self.normalize(state, "state")

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return self.unnormalize(actions, "actions")

    def __repr__(self) -> str:
        if self.stats is None:
            return "Normalizer(identity)"
        dims = {k: v.dim for k, v in self.stats.items()}
        return f"Normalizer(mode={self.mode!r}, dims={dims})"
