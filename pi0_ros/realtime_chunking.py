"""Real-time chunking: make each new chunk continue the one the robot is executing (ROS-free).

A chunk is sampled from noise; two chunks inferred half a second apart can pick different
modes (grasp now / a little later), and switching between them at every re-plan makes the
robot dither. Real-time chunking (Black, Galliker, Levine, 2025, "Real-Time Execution of
Action Chunking Flow Policies") treats the next chunk as inpainting: the actions of the
previous chunk that overlap the new one in time guide its denoising. The first actions,
which will run while the new chunk is still being computed (``frozen``), are kept; the
weight of the rest of the overlap decays exponentially to 0 at its end; actions after the
overlap are free. This module keeps the last chunk and builds that guide; the sampler
(`PI0Model.sample_actions(guide=...)`) does the inpainting.

Shapes: chunks are (H, D), D = the model's padded action width, absolute robot units (what
`Policy.infer` returns); times in s; action i of a chunk stamped t is for t + i*dt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChunkGuide:
    """Actions (H, D) the next chunk should continue, with per-action weights (H,) in [0, 1]."""

    actions: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        a, w = np.asarray(self.actions, dtype=np.float64), np.asarray(self.weights, dtype=np.float64)
        if a.ndim != 2 or w.shape != (a.shape[0],):
            raise ValueError(f"guide actions must be (H, D) and weights (H,), got {a.shape} and {w.shape}")
        if not np.isfinite(a).all() or not np.isfinite(w).all() or (w < 0).any() or (w > 1).any():
            raise ValueError("guide actions must be finite and weights within [0, 1]")
        object.__setattr__(self, "actions", a)
        object.__setattr__(self, "weights", w)


def overlap_weights(horizon: int, overlap: int, frozen: int) -> np.ndarray:
    """(horizon,) weights: 1 for the first ``frozen`` actions, then RTC's exponential decay
    c (e^c - 1) / (e - 1) with c going linearly from 1 to 0 over the rest of the ``overlap``,
    0 after it."""
    overlap = max(0, min(int(overlap), int(horizon)))
    frozen = max(0, min(int(frozen), overlap))
    w = np.zeros(horizon)
    w[:frozen] = 1.0
    n = overlap - frozen
    if n > 0:
        c = (n - np.arange(n)) / (n + 1)      # in (0, 1), decreasing
        w[frozen:overlap] = c * np.expm1(c) / math.expm1(1.0)
    return w


class RealTimeChunking:
    """Remembers the last chunk; ``guide(stamp, delay)`` realigns its remaining actions to a new
    observation's time.

    Args:
        dt: s between actions (1 / control_rate_hz).
        max_gap: a previous chunk stamped more than this before the new observation is
            ignored (the robot is no longer executing it), in s; default: one chunk.
    """

    def __init__(self, dt: float, max_gap: float | None = None) -> None:
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self.dt = float(dt)
        self.max_gap = max_gap
        self._stamp: float | None = None
        self._actions: np.ndarray | None = None
        self._prompt: str | None = None

    def reset(self) -> None:
        """Forget the last chunk (new episode, robot stopped): the next one is free."""
        self._stamp, self._actions, self._prompt = None, None, None

    def remember(self, stamp: float, actions: np.ndarray, prompt: str | None = None) -> None:
        """The chunk (H, D) just handed to the robot, for observation time ``stamp`` and ``prompt``."""
        self._stamp = float(stamp)
        self._actions = np.array(actions, dtype=np.float64)
        self._prompt = prompt

    def guide(self, stamp: float, delay: float = 0.0, prompt: str | None = None) -> ChunkGuide | None:
        """Guide for a chunk at observation time ``stamp`` whose first ``delay`` s of actions will
        have passed when it reaches the robot (those are frozen); None if nothing overlaps or
        the prompt changed (a new task never continues the old one)."""
        if self._actions is None or self._stamp is None or prompt != self._prompt:
            return None
        H = self._actions.shape[0]
        gap = stamp - self._stamp
        max_gap = self.max_gap if self.max_gap is not None else H * self.dt
        if gap < 0 or gap > max_gap:
            return None
        offset = int(round(gap / self.dt))
        overlap = H - offset
        if overlap <= 0:
            return None
        actions = np.empty_like(self._actions)
        actions[:overlap] = self._actions[offset:]
        actions[overlap:] = self._actions[-1]   # weight 0 there: any finite value
        frozen = int(math.ceil(max(delay, 0.0) / self.dt - 1e-9))
        return ChunkGuide(actions, overlap_weights(H, overlap, frozen))
