"""``stack_cube``: put one cube on the other, the prompt says which on which (ROS-free).

"put the red cube on the blue cube" / "put the blue cube on the red cube": the same two cubes and
the same layouts as ``pick_cube`` for the same seed (the layout is drawn by PickCubeTask.reset).
The *target* is the cube moved, the first colour named; the other one is the *base*.
``stack_red_cube`` / ``stack_blue_cube`` fix the moved cube; plain ``stack_cube`` draws it from
the episode seed (exactly as pick_cube draws its target).

Success is a state predicate, not an end-of-episode check: the ROS session checks it at every
step and stops at the first success, so it must never hold while the cube is still on its way.
The moved cube counts as stacked when its centre is one cube height (± ``stack_tolerance``) above
the base cube's and within ``half_size`` of it horizontally, it touches the base cube, the base
cube still rests on the table, no robot geom touches the moved cube (the expert holds the cube
just above that pose before it lets go: a cube in the fingers is not stacked) and the moved cube
is at rest (a cube dropped from higher up passes through the same pose on its way down, or
bounces off). ``reached`` keeps the pick's meaning (a gripper within 3 cm of a cube): while
placing, the gripper also comes that close to the base cube, so an evaluation's "reached the
other cube" is no wrong-cube signal for this task.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pi0_ros.sim.tasks import PickCubeTask, cube_name

if TYPE_CHECKING:  # pragma: no cover
    from pi0_ros.sim.env import SimEnv


def stack_prompt(moved: str, base: str) -> str:
    return f"put the {moved} cube on the {base} cube"


# "put the red cube on the blue cube", also "place ... on top of ..." / "stack ... onto ...".
_PROMPT = re.compile(r"(?:put|place|stack) the (\w+) cube (?:on|onto|on top of) the (\w+) cube")


@dataclass
class StackCubeTask(PickCubeTask):
    """Put the cube the prompt names first on the other one (two colours)."""

    name: str = "stack_cube"
    stack_tolerance: float = 0.01       # success: moved centre 2 * half_size (± this) above the base's
    rest_speed: float = 0.05            # ... and moving slower than this (m/s)
    touch_distance: float = 1e-3        # a robot geom this close to the moved cube touches it (m)
    duration_s: float = 8.0             # the expert's plan (6.8 s) and some margin
    demo_s: float = 7.2                 # recorded demonstration length: the plan + a hold

    def __post_init__(self) -> None:
        if len(self.colors) != 2:
            raise ValueError(f"stacking takes two cubes, got colours {self.colors}")

    def base_of(self, target: str) -> str:
        """The cube ``target`` goes on: the other colour."""
        return next(c for c in self.colors if c != target)

    @property
    def base(self) -> str:
        return self.base_of(self.target)

    @property
    def base_object(self) -> str:
        return cube_name(self.base)

    def prompt_for(self, target: str) -> str:
        return stack_prompt(target, self.base_of(target))

    def target_from_prompt(self, prompt: str) -> str:
        """The moved cube's colour: the first one named (raises ValueError unless the prompt says
        to put one of the colours on the other)."""
        m = _PROMPT.fullmatch(" ".join(prompt.lower().split()).rstrip("."))
        moved, base = m.groups() if m else ("", "")
        if moved not in self.colors or base != self.base_of(moved):
            raise ValueError(f"prompt {prompt!r} does not say to put one of the cubes {self.colors} on the other "
                             f"(e.g. {self.prompt_for(self.colors[0])!r})")
        return m.group(1)

    # ------------------------------------------------------------------ outcome
    def contacts(self, env: "SimEnv", color: str) -> list[int]:
        """The geoms within ``touch_distance`` of the ``color`` cube (MuJoCo's contacts)."""
        d = env.data
        cube = env.scene.objects[cube_name(color)].geom_id
        return [int(c.geom2 if c.geom1 == cube else c.geom1) for c in d.contact[:d.ncon]
                if c.dist <= self.touch_distance and cube in (c.geom1, c.geom2)]

    def touched_by_robot(self, env: "SimEnv", color: str) -> bool:
        """A robot geom (of a moving body other than the task's cubes) touches the ``color`` cube."""
        m = env.model
        cubes = {ob.body_id for ob in env.scene.objects.values()}
        welds = {int(m.body_weldid[m.geom_bodyid[g]]) for g in self.contacts(env, color)}
        return any(w != 0 and w not in cubes for w in welds)   # weld 0: fixed to the world (table)

    def stacked(self, env: "SimEnv", target: str | None = None) -> bool:
        """The pose part of :meth:`success`: ``target`` sits on the other cube (touching it), which
        sits on the table."""
        target = target or self.target
        base = self.base_of(target)
        p = env.object_position(cube_name(target))
        q = env.object_position(cube_name(base))
        on_top = abs(p[2] - q[2] - 2 * self.half_size) <= self.stack_tolerance
        centred = np.linalg.norm(p[:2] - q[:2]) <= self.half_size
        base_down = abs(q[2] - self.rest_z[base]) <= self.other_tolerance
        touching = env.scene.objects[cube_name(base)].geom_id in self.contacts(env, target)
        return bool(on_top and centred and base_down and touching)

    def success(self, env: "SimEnv", target: str | None = None) -> bool:
        """``target`` (default: the prompt's moved cube) stacked on the other cube, let go and at rest."""
        target = target or self.target
        ob = env.scene.objects[cube_name(target)]
        speed = float(np.linalg.norm(env.data.qvel[ob.dof_adr:ob.dof_adr + 3]))
        return self.stacked(env, target) and speed <= self.rest_speed and not self.touched_by_robot(env, target)
