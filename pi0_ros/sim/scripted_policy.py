"""The scripted expert dressed as a policy, so it runs through the same ROS path as pi0
(observation -> policy node -> ActionChunk -> executor -> command topics -> simulator).

It uses privileged simulator state (the expert's plan made at reset), so it only works in the
same process as the simulator. Actions are the plan's ticks from the observation time on.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from pi0_ros.policy import PolicyInput, PolicyOutput
from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.expert import PickCubeExpert, make_expert


class ScriptedPolicy:
    random_weights = False

    def __init__(self, env: SimEnv, episode_start: Callable[[], float], action_dim: int = 32, chunk_size: int = 50) -> None:
        """episode_start(): the ROS stamp (s) of the current episode's tick 0."""
        self.env, self.episode_start = env, episode_start
        self.action_dim, self.chunk_size = action_dim, chunk_size
        self.expert: PickCubeExpert | None = None
        self._episode_key: object = None
        self._plan_start: float | None = None
        self._lock = threading.Lock()

    def on_reset(self) -> None:
        """Plan the new episode. Call it on the thread that steps the simulator, right after the
        reset: planning from another thread could read a half-reset scene."""
        with self._lock:
            self._new_episode()

    def _new_episode(self) -> None:  # caller holds self._lock
        self.expert = make_expert(self.env)  # the task's expert
        self._episode_key = self.episode_start()
        self._plan_start = None

    def plan_for_episode(self, stamp: float) -> tuple[PickCubeExpert, float]:
        """(the episode's expert, the stamp its plan starts at).

        The plan starts at the episode's first observation, not at the reset: a plan clocked
        from the reset would already be under way when the first chunk arrives, and the
        executor's step limit would have to drag the arm after it."""
        with self._lock:
            if self.expert is None or self._episode_key != self.episode_start():
                self._new_episode()  # no on_reset hook (e.g. used without a SimNode): plan lazily
            if self._plan_start is None and stamp >= self.episode_start():
                self._plan_start = stamp  # an observation from before the reset does not start it
            return self.expert, self.episode_start() if self._plan_start is None else self._plan_start

    def warmup(self, n: int = 0) -> list[dict[str, float]]:
        return []

    def infer(self, inp: PolicyInput, noise=None) -> PolicyOutput:
        t0 = time.perf_counter()
        emb = self.env.embodiment
        stamp = inp.stamp if getattr(inp, "stamp", None) is not None else self.episode_start() + self.env.time
        expert, plan_start = self.plan_for_episode(stamp)
        k0 = int(round((stamp - plan_start) / emb.dt))
        robot = np.stack([expert.act(max(0, k0 + i)) for i in range(self.chunk_size)])  # (H, n) robot units
        padded = emb.pad(emb.to_model(robot), self.action_dim)
        ms = (time.perf_counter() - t0) * 1e3
        return PolicyOutput(actions=padded, timing={"model": ms, "total": ms})

    def __repr__(self) -> str:
        return f"ScriptedPolicy({self.env.embodiment.name}, privileged sim state)"
