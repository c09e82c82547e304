"""Smooth random disturbances of the simulated joint controllers, for collecting demonstrations.

A policy trained only on a scripted expert's exact trajectories has never seen a state off
those trajectories, so its first small error compounds (covariate shift). DART (Laskey et al.,
2017, "DART: Noise Injection for Robust Imitation Learning") injects noise while the expert
demonstrates, and labels every visited state with the expert's own, clean action; the learner
then sees how to get back on course.

Here the noise acts inside the simulator, between the command and the joint controller, like
a push or a tracking error on a real arm: the arms track ``command + offset`` while the command
topics (the action labels in the recorded bags) carry the expert's clean targets. The offset
of each arm joint is an Ornstein-Uhlenbeck process (stationary std ``std``, correlation time
``tau``) that starts at 0 at every reset. Grippers and base velocities are left alone.
ROS-free; seeded per episode so a (seed, std) pair always gives the same episode.
"""
from __future__ import annotations

import math

import numpy as np


class JointDisturbance:
    """Ornstein-Uhlenbeck offsets (n,) on the dims in ``mask``, one ``step`` per control tick.

    Args:
        mask: (n,) bool, dims that are disturbed (arm joints).
        std: stationary standard deviation of each offset (robot units, rad for joints); 0 = off.
        tau: correlation time (s): how long a push lasts.
        dt: control period (s).
    """

    def __init__(self, mask: np.ndarray, std: float, tau: float = 0.5, dt: float = 0.02) -> None:
        if std < 0 or not math.isfinite(std):
            raise ValueError(f"disturbance std must be finite and >= 0, got {std}")
        if tau <= 0 or dt <= 0:
            raise ValueError(f"tau and dt must be > 0, got tau={tau}, dt={dt}")
        self.mask = np.asarray(mask, dtype=bool).copy()
        self.std = float(std)
        self.tau = float(tau)
        self.dt = float(dt)
        # Exact discretisation of dx = -x/tau dt + std*sqrt(2/tau) dW over one tick.
        self._decay = math.exp(-self.dt / self.tau)
        self._kick = self.std * math.sqrt(1.0 - self._decay ** 2)
        self.offset = np.zeros(self.mask.size)
        self._rng = np.random.default_rng(0)

    @property
    def enabled(self) -> bool:
        return self.std > 0

    def reset(self, seed: int) -> None:
        """New episode: offsets back to 0, noise drawn from ``seed`` (independent of the layout's)."""
        self.offset = np.zeros(self.mask.size)
        self._rng = np.random.default_rng([int(seed), 0xD157])

    def step(self) -> np.ndarray:
        """Advance one control tick; returns the offsets (n,) to add to the targets."""
        if self.enabled:
            noise = self._rng.standard_normal(self.mask.size)
            self.offset = np.where(self.mask, self._decay * self.offset + self._kick * noise, 0.0)
        return self.offset
