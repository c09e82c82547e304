"""Language-conditioned tabletop tasks (ROS-free).

``pick_cube``: a red and a blue cube at random positions/yaws on the table; the prompt alone
says which one to pick up ("pick up the red cube" / "pick up the blue cube"). Success: the
target cube is lifted >= ``lift_height`` above its resting height while the other cube stays on
the table. ``pick_red_cube`` / ``pick_blue_cube`` fix the target; plain ``pick_cube`` draws it
from the episode seed. ``stack_cube`` (pi0_ros.sim.stack_task) puts one of the same cubes on the
other, on the same layouts.

A task instance is stateful per episode (target, resting heights) and is reset by the env.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pi0_ros.sim.scenes import ObjectSpec, yaw_quat

if TYPE_CHECKING:  # pragma: no cover
    from pi0_ros.sim.env import SimEnv

COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.9, 0.1, 0.1, 1.0),
    "blue": (0.1, 0.2, 0.9, 1.0),
}


def cube_name(color: str) -> str:
    return f"{color}_cube"


def pick_prompt(color: str) -> str:
    return f"pick up the {color} cube"


@dataclass
class PickCubeTask:
    """Pick up the cube whose colour the prompt names, among ``colors``."""

    name: str = "pick_cube"
    colors: tuple[str, ...] = ("red", "blue")
    fixed_target: str | None = None     # colour; None = drawn from the episode seed
    half_size: float = 0.02
    lift_height: float = 0.05           # success: target centre this much above rest
    other_tolerance: float = 0.02       # ... and every other cube within this of its rest height
    min_separation: float = 0.12        # centre distance between cubes
    yaw_range: float = math.pi / 4
    duration_s: float = 6.0             # episode length (sim seconds)
    demo_s: float = 4.6                 # recorded demonstration length: the expert's plan (4.2 s) + a hold
    target: str = field(init=False, default="")
    rest_z: dict[str, float] = field(init=False, default_factory=dict)

    @property
    def objects(self) -> tuple[ObjectSpec, ...]:
        return tuple(ObjectSpec(cube_name(c), self.half_size, COLORS[c]) for c in self.colors)

    def prompt_for(self, target: str) -> str:
        """The prompt naming ``target`` (a colour) as the cube to act on."""
        return pick_prompt(target)

    @property
    def prompt(self) -> str:
        return self.prompt_for(self.target)

    @property
    def prompts(self) -> list[str]:
        return [self.prompt_for(c) for c in self.colors]

    @property
    def target_object(self) -> str:
        return cube_name(self.target)

    def target_from_prompt(self, prompt: str) -> str:
        """Colour named in a prompt (raises ValueError if none or several)."""
        found = [c for c in self.colors if re.search(rf"\b{c}\b", prompt.lower())]
        if len(found) != 1:
            raise ValueError(f"prompt {prompt!r} names {len(found)} of the colours {self.colors}")
        return found[0]

    def seed_target(self, seed: int) -> str:
        """The colour an episode with ``seed`` names when no prompt overrides it (see reset)."""
        return self.fixed_target or self.colors[int(np.random.default_rng(seed).integers(len(self.colors)))]

    def swapped_prompt(self, seed: int) -> str:
        """A prompt naming another cube than the seed's, for the same layout (prompt-swap check)."""
        target = self.seed_target(seed)
        others = [c for c in self.colors if c != target]
        return self.prompt_for(others[seed % len(others)])

    def reset(self, env: "SimEnv", rng: np.random.Generator, target: str | None = None) -> None:
        """Choose the target and place the cubes (writes env.data.qpos; env calls mj_forward)."""
        choice = rng.integers(len(self.colors))  # always drawn: layouts do not depend on `target`
        self.target = target or self.fixed_target or self.colors[int(choice)]
        if self.target not in self.colors:
            raise ValueError(f"target {self.target!r} not in {self.colors}")
        (x0, x1), (y0, y1) = env.scene.workspace
        z = env.scene.table_height + self.half_size
        placed: list[np.ndarray] = []
        for c in self.colors:
            for _ in range(1000):
                p = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
                if all(np.linalg.norm(p - q) >= self.min_separation for q in placed):
                    break
            placed.append(p)
            yaw = rng.uniform(-self.yaw_range, self.yaw_range)
            ob = env.scene.objects[cube_name(c)]
            env.data.qpos[ob.qpos_adr:ob.qpos_adr + 3] = (p[0], p[1], z)
            env.data.qpos[ob.qpos_adr + 3:ob.qpos_adr + 7] = yaw_quat(yaw)
            self.rest_z[c] = z

    def heights(self, env: "SimEnv") -> dict[str, float]:
        """Height of each cube above its resting height (m)."""
        return {c: float(env.object_position(cube_name(c))[2] - self.rest_z[c]) for c in self.colors}

    def success(self, env: "SimEnv", target: str | None = None) -> bool:
        """Target cube lifted *in a gripper* and the others still on the table. ``target``
        overrides the prompt's. (A cube knocked into the air is not a success.)"""
        target = target or self.target
        h = self.heights(env)
        return h[target] >= self.lift_height and self.reached(env, target) and all(
            h[c] <= self.other_tolerance for c in self.colors if c != target)

    def reached(self, env: "SimEnv", target: str | None = None, radius: float = 0.03) -> bool:
        """A gripper's pinch point is within ``radius`` of the target cube's surface (touch)."""
        p = env.object_position(cube_name(target or self.target))
        d = min(np.linalg.norm(env.site_position(s) - p) for s in env.scene.ee_sites.values())
        return bool(d <= radius + self.half_size)


TASKS = ("pick_cube", "pick_red_cube", "pick_blue_cube", "stack_cube", "stack_red_cube", "stack_blue_cube")


def make_task(name: str | None = None) -> PickCubeTask:
    """Task by name: pick_cube (target from seed), pick_red_cube, pick_blue_cube; stack_cube,
    stack_red_cube, stack_blue_cube (pi0_ros.sim.stack_task; the colour is the cube moved)."""
    from pi0_ros.sim.stack_task import StackCubeTask  # it builds on PickCubeTask

    name = name or "pick_cube"
    for kind, cls in (("pick", PickCubeTask), ("stack", StackCubeTask)):
        if name == f"{kind}_cube":
            return cls()
        for c in COLORS:
            if name == f"{kind}_{c}_cube":
                return cls(name=name, fixed_target=c)
    raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
