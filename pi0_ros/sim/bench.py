"""Simulation speed: control ticks per second of SimEnv (ROS-free).

``python -m pi0_ros.sim.bench`` prints ALOHA (trossen_bimanual, 50 Hz control, 10 physics
substeps per tick) with all 3 cameras rendered at 224x224 every tick, and without rendering.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pi0_ros.sim.env import SimEnv


def sim_steps_per_second(embodiment: str = "trossen_bimanual", render: bool = True, image_size: int = 224,
                         ticks: int = 200, seed: int = 0, warmup: int = 5) -> float:
    """Control ticks per second (each = n_substeps physics steps [+ one render of every camera]).

    The arms follow a slow sinusoidal joint command so contacts and dynamics are exercised.
    """
    env = SimEnv(embodiment, seed=seed, render=render, image_size=image_size)
    try:
        home = env.scene.home.copy()
        joints = [i for i, k in enumerate(env.embodiment.kinds) if k == "joint"]

        def tick(k: int) -> None:
            a = home.copy()
            a[joints] += 0.2 * np.sin(2 * np.pi * 0.5 * k * env.embodiment.dt)
            env.set_targets(a)
            env.step()
            if render:
                env.render()

        for k in range(warmup):
            tick(k)
        t0 = time.perf_counter()
        for k in range(ticks):
            tick(k)
        return ticks / (time.perf_counter() - t0)
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--embodiment", default="trossen_bimanual")
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=224)
    a = ap.parse_args(argv)
    r = sim_steps_per_second(a.embodiment, True, a.image_size, a.ticks)
    n = sim_steps_per_second(a.embodiment, False, a.image_size, a.ticks * 5)
    print(f"{a.embodiment}: {r:.1f} ticks/s with all cameras at {a.image_size}^2 every tick, "
          f"{n:.1f} ticks/s without rendering")


if __name__ == "__main__":
    main()
