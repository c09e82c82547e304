"""Scripted expert for ``stack_cube`` (pi0_ros.sim.stack_task), ROS-free.

:class:`StackCubeExpert` is :class:`~pi0_ros.sim.expert.PickCubeExpert`'s planner (arm choice,
pre-grasp IK, grasp orientation, rate limit) with other phases after the grasp: lift the moved
cube straight up to the carry height, carry it at that height to above the base cube, lower it
until its lowest point is ``place_clearance`` above the base cube's top, open the gripper and
rise. While carried the gripper turns to the orientation a pick of the base cube would use.
Bimanual robots use the arm closer to the moved cube, as for the pick, wherever the base cube
is; where that arm cannot reach the base cube top-down (an ALOHA arm across the workspace), the
gripper leans out as little as it must (see :meth:`StackCubeExpert.place_pose`). Robots differ
by data only: the scene's PickGeometry (heights) and the timeline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.expert import ArmIK, Grasp, Phase, PickCubeExpert, PickTimeline

UP = np.array([0.0, 0.0, 1.0])


@dataclass
class StackTimeline(PickTimeline):
    """Phase end times (s) of the scripted stack (reach .. settle as the pick's)."""

    lift: float = 3.3       # grasp -> carry height (Cartesian)
    carry: float = 4.5      # -> above the base cube, turning (Cartesian, level)
    place: float = 5.3      # -> release pose (straight down)
    open: float = 5.6       # gripper opens
    release: float = 5.8    # hold: the cube settles
    retreat: float = 6.4    # open gripper rises (Cartesian)
    end: float = 6.8        # hold


class StackCubeExpert(PickCubeExpert):
    """Scripted pick of the prompt's first cube and place on the other. ``act()`` -> robot vector (n,)."""

    timeline_class: type = StackTimeline

    def __init__(self, env: SimEnv, timeline: StackTimeline | None = None, place_clearance: float | None = None,
                 carry_height: float | None = None, retreat_height: float | None = None,
                 tilts: tuple[float, ...] = tuple(math.radians(a) for a in range(0, 40, 5)),
                 limit_margin: float = 0.05, **pick) -> None:
        """Heights default to the scene's :class:`~pi0_ros.sim.scenes.PickGeometry`; ``tilts``
        (rad, ascending): how far the gripper may lean out to reach the base cube;
        ``limit_margin`` (rad or m): a grasp with a joint closer than this to a limit is avoided; ``pick``:
        PickCubeExpert's keyword arguments (``lift_height`` is not used: the cube is lifted to
        the carry height)."""
        geo = env.scene.pick
        self.place_clearance = geo.place_clearance if place_clearance is None else place_clearance
        self.carry_height = geo.carry_height if carry_height is None else carry_height
        self.retreat_height = geo.retreat_height if retreat_height is None else retreat_height
        self.tilts = tilts
        self.limit_margin = limit_margin
        self.tilt = 0.0   # rad, the plan's lean at the release
        super().__init__(env, timeline, **pick)   # plans

    def grasp_key(self, q: np.ndarray, err: float, q_home: np.ndarray, vmax: np.ndarray, ik: ArmIK) -> tuple:
        """The pick's, but a grasp with a joint at its limit comes after those without: the carry
        turns the wrist further, and with the wrist at its stop the IK turns the hand with the
        other joints, swinging them (a Franka's joints 1 and 3) faster than the rate limit lets
        the arm follow; the cube then slides in the fingers."""
        margin = float(np.min(np.minimum(q - ik.lower, ik.upper - q)))
        pick = super().grasp_key(q, err, q_home, vmax, ik)
        return (pick[0], margin < self.limit_margin) + pick[1:]

    def place_pose(self, g: Grasp, tilt: float) -> tuple[np.ndarray, np.ndarray]:
        """(pinch site (3,), orientation (3, 3)) at the release with the gripper leaning ``tilt``
        (rad) about its closing axis, the fingertips away from the arm.

        Upright: the fingers across the arm's reach direction at the base cube (or along its
        faces where the grasp follows faces), of the two wrist turns the one closer to the
        grasp's. Leaning: the held cube (square to the fingers) leans with it, its lowest edge
        ``place_clearance`` above the base cube's top; let go, it falls flat about that edge and
        its centre moves out by half_size * (1 - cos + sin): placed that much short."""
        env = self.env
        task = env.task
        base = env.object_position(task.base_object)
        base_quat = env.object_quat(task.base_object)
        R = min((self._grasp_rotation(base, base_quat, g.anchor, turn) for turn in (0.0, math.pi)),
                key=lambda Rt: -float(np.trace(Rt.T @ g.R)))
        x, y = R[:, 0], R[:, 1]
        out = base[:2] - g.anchor[:2]
        out = np.append(out, 0.0) - (np.append(out, 0.0) @ y) * y   # reach direction across the fingers
        out /= np.linalg.norm(out) + 1e-12
        x = math.cos(tilt) * x + math.sin(tilt) * out
        R = np.stack([x, y, np.cross(x, y)], axis=1)
        hs = env.scene.objects[task.target_object].half_size
        drop = hs * (math.cos(tilt) + math.sin(tilt))                 # centre above the lowest edge
        centre = (base + (env.scene.objects[task.base_object].half_size + drop + self.place_clearance) * UP
                  - hs * (1 - math.cos(tilt) + math.sin(tilt)) * out)
        # The pinch site sits grasp_offset behind the cube's centre along the approach axis.
        return centre - self.grasp_offset * x, R

    def phases(self, g: Grasp) -> list[Phase]:
        """The pick, then lift to the carry height, carry (turning to the release orientation),
        lower, let go and rise; the gripper leans (``self.tilt``) only as far as the arm needs."""
        tl = self.timeline
        # The least lean with which the arm reaches the release pose and the poses above it.
        best = None
        for tilt in self.tilts:
            place, R = self.place_pose(g, tilt)
            q, err = g.ik.solve(place + self.carry_height * UP, R, g.q_pre, iters=200)
            err = max(err, g.ik.solve(place, R, q, iters=200)[1],
                      g.ik.solve(place + self.retreat_height * UP, R, q, iters=200)[1])
            if best is None or err < best[0] - 1e-4:
                best = (err, tilt, place, R)
            if err < 1e-3:
                break
        _, self.tilt, place, R_place = best
        above = place + self.carry_height * UP
        lifted = np.array([g.grasp[0], g.grasp[1], above[2]])
        closed, opened = (g.g_close, g.g_close), (g.g_open, g.g_open)
        return self.pick_phases(g) + [
            Phase(tl.lift, line=(g.grasp, lifted), grip=closed),
            Phase(tl.carry, line=(lifted, above), turn=(g.R, R_place), grip=closed),
            Phase(tl.place, line=(above, place), grip=closed),
            Phase(tl.release, grip=(g.g_close, g.g_open), grip_until=tl.open),
            Phase(tl.retreat, line=(place, place + self.retreat_height * UP), grip=opened),
            Phase(tl.end, grip=opened),
        ]
