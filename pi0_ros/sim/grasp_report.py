"""Why a pick failed: the grasp phase of an episode, watched from the simulator (ROS-free).

A success rate says how often; a failing robot needs to know how. ``GraspMonitor.update(env)``
is called as an episode runs (any sampling rate: `pi0-ros eval` samples every ~50 ms); ``report``
then names the episode's outcome and, for the first close of a gripper at the named cube, where
the cube sat relative to that gripper's pinch point:

- ``success``: the task's own success condition.
- ``wrong_cube``: a gripper touched the other cube, never the named one.
- ``never_reached``: no gripper came within touch of any cube.
- ``no_close``: a gripper reached the named cube but was never commanded closed there.
- ``closed_empty``: a gripper closed at the named cube and its fingers went (nearly) all the way
  shut: nothing between them. The offset at the close says by how much the pinch point missed.
- ``dropped``: the named cube was lifted by ``lift_height`` and then was not (a slip, or the
  gripper opened).
- ``not_completed``: it held the cube but the task's success condition was not met (not lifted
  high enough, the other cube moved, or a stack task's placement).

The offset is the named cube's centre minus the pinch point, in the pinch site's frame
(``approach``: towards the fingertips, ``closing``: the axis the fingers close along, ``across``:
the third axis), metres. A miss along ``closing`` is forgiving (the closing fingers push the cube
to the middle); a miss ``across`` more than a finger's half-width leaves the fingers beside it.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pi0_ros.sim.tasks import cube_name

if TYPE_CHECKING:  # pragma: no cover
    from pi0_ros.sim.env import SimEnv

AXES = ("approach", "closing", "across")  # the pinch frame's axes, as close offsets name them
OUTCOMES = ("success", "wrong_cube", "never_reached", "no_close", "closed_empty", "dropped", "not_completed")
CLOSE_COMMANDED = 0.5  # gripper command, model convention (0 open, 1 closed): a close from here up
# Fingers this far shut (model convention) while commanded closed hold nothing: a 4 cm cube stops
# the grippers of all three robots at about half their travel (UR5e 2F-85 measured ~0.5).
EMPTY_FRACTION = 0.9


@dataclass
class GraspReport:
    outcome: str                           # one of OUTCOMES
    close_offset: dict[str, float] | None  # {approach, closing, across} m, at the first close at the named cube
    closed_empty: bool                     # some close at the named cube shut on nothing
    max_lift: float                        # highest the named cube got above its rest (m)

    def to_dict(self) -> dict:
        return {"outcome": self.outcome, "close_offset": self.close_offset, "closed_empty": self.closed_empty,
                "max_lift": round(self.max_lift, 4)}


class GraspMonitor:
    """Watches one episode of a pick-family task (``reset`` before each)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._closing: dict[str, bool] = {}   # arm -> commanded closed at the last sample
        self.close_offset: dict[str, float] | None = None
        self._closed_at_target: set[str] = set()
        self.closed_empty = False
        self.max_lift = 0.0
        self.lifted_then_lost = False
        self.reached_target = self.reached_other = False

    def update(self, env: "SimEnv") -> None:
        task, scene, emb = env.task, env.scene, env.embodiment
        target = task.target
        cube = env.object_position(cube_name(target))
        lift = task.heights(env)[target]
        self.max_lift = max(self.max_lift, lift)
        if self.max_lift >= task.lift_height and lift < task.lift_height / 2:
            self.lifted_then_lost = True
        self.reached_target = self.reached_target or task.reached(env, target)
        self.reached_other = self.reached_other or any(task.reached(env, c) for c in task.colors if c != target)
        command = emb.to_model(env.targets)
        measured = emb.to_model(env.measured_positions())
        for arm, site in scene.ee_sites.items():
            g = scene.gripper_dim.get(arm)
            if g is None:
                continue
            closing = bool(command[g] >= CLOSE_COMMANDED)
            near = bool(np.linalg.norm(env.site_position(site) - cube) <= 0.03 + task.half_size)
            if closing and not self._closing.get(arm, False) and near:
                self._closed_at_target.add(arm)
                if self.close_offset is None:
                    d = env.site_rotation(site).T @ (cube - env.site_position(site))
                    self.close_offset = {k: round(float(v), 4) for k, v in zip(AXES, d)}
            if not closing:
                self._closed_at_target.discard(arm)
            elif arm in self._closed_at_target and measured[g] >= EMPTY_FRACTION:
                self.closed_empty = True
            self._closing[arm] = closing

    def report(self, success: bool) -> GraspReport:
        if success:
            outcome = "success"
        elif self.lifted_then_lost:
            outcome = "dropped"
        elif self.closed_empty and self.max_lift < 0.01:
            outcome = "closed_empty"
        elif not self.reached_target:
            outcome = "wrong_cube" if self.reached_other else "never_reached"
        elif self.close_offset is None:
            outcome = "no_close"
        else:
            outcome = "not_completed"
        return GraspReport(outcome, self.close_offset, self.closed_empty, self.max_lift)


def median_abs_offset(offsets: list[dict[str, float]]) -> dict[str, float] | None:
    """Median |offset| per pinch axis over close offsets (m); None for none."""
    if not offsets:
        return None
    return {a: round(statistics.median(abs(o[a]) for o in offsets), 4) for a in AXES}
