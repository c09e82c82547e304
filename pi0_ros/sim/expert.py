"""Scripted experts: IK waypoint planners that output what the chunk executor publishes (ROS-free).

:class:`PickCubeExpert` solves the ``pick_cube`` task on any simulated scene (ALOHA, UR5e +
Robotiq 2F-85, Franka + hand) with privileged state (cube poses): it picks the arm closer to
the target cube, plans a top-down grasp (pre-grasp above, straight descent, close, lift) and
turns it into a joint position target per control tick with damped-least-squares IK on the
MuJoCo model (``mj_jacSite`` on the pinch site between the fingers). Robots differ only by the
scene's data: arms and their grippers (``Scene.arm_dims`` / ``gripper_dim``), pinch sites (one
frame convention: x approach, y closing axis), the home pose, the YAML's gripper open/closed
values and the grasp heights (``Scene.pick``). Output: the embodiment's robot vector
(n,) in robot units per tick at the control rate (grippers in the YAML's units), i.e. exactly
what ``SimEnv.set_targets`` / the executor's Float64MultiArray commands carry. The plan is made
once at reset (open loop), so it is deterministic given the episode seed.

A plan is a list of :class:`Phase` segments (joint-space move, Cartesian line, hold; gripper
ramp) that :func:`build_plan` turns into ticks; the stacking expert
(pi0_ros.sim.stack_expert) adds its own phases after the same grasp, and :func:`make_expert`
picks the expert by the env's task.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pi0_ros import sim as _sim  # noqa: F401

import mujoco
import numpy as np

from pi0_ros.sim.env import SimEnv


class ArmIK:
    """Damped-least-squares IK for one arm (its joint dims) to a site pose."""

    def __init__(self, env: SimEnv, source: str, site: str) -> None:
        self.model = env.model
        self.data = mujoco.MjData(env.model)   # scratch data: never touches the sim state
        self.site = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, site)
        self.dims = env.scene.arm_dims[source]
        binds = [env.scene.dims[i] for i in self.dims]
        self.qadr = np.array([b.qpos_adr for b in binds])
        self.vadr = np.array([b.dof_adr for b in binds])
        self.lower = env.embodiment.lower[self.dims]
        self.upper = env.embodiment.upper[self.dims]
        self.base_qpos = env.data.qpos.copy()

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        d.qpos[:] = self.base_qpos
        d.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        return d.site_xpos[self.site].copy(), d.site_xmat[self.site].reshape(3, 3).copy()

    def solve(self, pos: np.ndarray, mat: np.ndarray | None, q0: np.ndarray, iters: int = 60,
              damping: float = 0.02, rot_weight: float = 0.3, tol: float = 1e-4) -> tuple[np.ndarray, float]:
        """Joint positions reaching ``pos`` (and orientation ``mat`` if given) from ``q0``.

        Returns (q, position error in m)."""
        q = np.array(q0, dtype=np.float64)
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        target_quat = np.zeros(4)
        if mat is not None:
            mujoco.mju_mat2Quat(target_quat, np.asarray(mat, dtype=np.float64).reshape(-1))
        cur_quat = np.zeros(4)
        err_rot = np.zeros(3)
        for _ in range(iters):
            p, R = self.forward(q)
            err_p = pos - p
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self.site)
            if mat is not None:
                mujoco.mju_mat2Quat(cur_quat, R.reshape(-1))
                # Rotation from current to target, in the current site frame -> world frame.
                mujoco.mju_subQuat(err_rot, target_quat, cur_quat)
                err_w = R @ err_rot
                J = np.vstack([jacp[:, self.vadr], rot_weight * jacr[:, self.vadr]])
                e = np.concatenate([err_p, rot_weight * err_w])
            else:
                J = jacp[:, self.vadr]
                e = err_p
            if np.linalg.norm(err_p) < tol and (mat is None or np.linalg.norm(err_rot) < 10 * tol):
                break
            dq = J.T @ np.linalg.solve(J @ J.T + damping ** 2 * np.eye(J.shape[0]), e)
            step = np.linalg.norm(dq)
            if step > 0.3:
                dq *= 0.3 / step
            q = np.clip(q + dq, self.lower, self.upper)
        p, _ = self.forward(q)
        return q, float(np.linalg.norm(pos - p))


def _smoothstep(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * (3 - 2 * s)


def rate_limit(plan: np.ndarray, max_step: np.ndarray) -> np.ndarray:
    """``plan`` (T, n) with every per-tick change clipped to ``max_step`` (n,), as the executor's
    step limit would; ticks within the limit are kept exactly."""
    out = np.array(plan, dtype=np.float64)
    for k in range(1, len(out)):
        d = out[k] - out[k - 1]
        over = np.abs(d) > max_step
        if over.any():
            out[k, over] = out[k - 1, over] + np.sign(d[over]) * max_step[over]
    return out


@dataclass
class PickTimeline:
    """Phase end times (s) of the scripted pick."""

    reach: float = 1.2      # home -> pre-grasp (joint space)
    descend: float = 2.0    # pre-grasp -> grasp (Cartesian straight line)
    close: float = 2.5      # gripper closes
    settle: float = 2.7     # hold
    lift: float = 3.5       # grasp -> lifted (Cartesian)
    end: float = 4.2        # hold


@dataclass(frozen=True, eq=False)
class Phase:
    """One segment of a scripted plan: the ticks with previous end < t <= ``end`` (s; the first
    phase from t = 0, the last one also every tick after its end).

    The arm moves in joint space (``joints`` = (from, to), (n_arm,) each), or its pinch site along a
    Cartesian straight ``line`` ((from, to), (3,) each; IK warm-started from the previous tick) at
    the current orientation or turning ``turn`` = (from, to) ((3, 3) each; the current one
    afterwards), or holds. The gripper goes ``grip`` = (from, to) over the phase, or by
    ``grip_until`` (s) and then holds there. Progress is smoothstepped."""

    end: float
    joints: tuple[np.ndarray, np.ndarray] | None = None
    line: tuple[np.ndarray, np.ndarray] | None = None
    turn: tuple[np.ndarray, np.ndarray] | None = None
    grip: tuple[float, float] = (0.0, 0.0)
    grip_until: float | None = None


@dataclass(frozen=True, eq=False)
class Grasp:
    """The pick every cube expert starts with, planned from the reset state (world frame, m)."""

    cube: np.ndarray        # (3,) target cube centre
    anchor: np.ndarray      # (3,) the arm's first joint: where it reaches from
    pre: np.ndarray         # (3,) pinch site at the pre-grasp
    grasp: np.ndarray       # (3,) ... at the grasp
    R: np.ndarray           # (3, 3) pinch-site orientation at the grasp
    q_home: np.ndarray      # (n_arm,) the arm's home joints
    q_pre: np.ndarray       # (n_arm,) ... at the pre-grasp
    g_open: float           # gripper command, robot units
    g_close: float
    ik: ArmIK               # the arm's IK (scratch data)


def slerp(Ra: np.ndarray, Rb: np.ndarray, s: float) -> np.ndarray:
    """Rotation (3, 3) ``s`` of the way from ``Ra`` to ``Rb`` (about one fixed axis)."""
    qa, qb, w, out = np.zeros(4), np.zeros(4), np.zeros(3), np.zeros(9)
    mujoco.mju_mat2Quat(qa, np.ascontiguousarray(Ra, dtype=np.float64).reshape(-1))
    mujoco.mju_mat2Quat(qb, np.ascontiguousarray(Rb, dtype=np.float64).reshape(-1))
    mujoco.mju_subQuat(w, qb, qa)          # qa * exp(w) = qb
    mujoco.mju_quatIntegrate(qa, w, s)     # qa * exp(s w)
    mujoco.mju_quat2Mat(out, qa)
    return out.reshape(3, 3)


def build_plan(phases: list[Phase], home: np.ndarray, arm_idx: list[int], g_idx: int, ik: ArmIK,
               R: np.ndarray, dt: float) -> tuple[np.ndarray, list[float]]:
    """Robot vectors (T, n) at ``dt`` from ``phases`` (the other dims stay at ``home`` (n,)), and
    the IK position errors (m) of its Cartesian ticks. T = round(last end / dt) + 1. ``R`` (3, 3):
    the pinch site's orientation until a phase turns it."""
    n = int(round(phases[-1].end / dt)) + 1
    plan = np.tile(home, (n, 1))
    errs: list[float] = []
    q = home[arm_idx].copy()   # the arm's joints at the previous tick: IK's start
    i = 0
    for k in range(n):
        t = k * dt
        while i < len(phases) - 1 and t > phases[i].end:
            i += 1
        ph = phases[i]
        t0 = phases[i - 1].end if i else 0.0
        s = _smoothstep((t - t0) / (ph.end - t0))
        if ph.joints is not None:
            a, b = ph.joints
            qa = a + s * (b - a)
            q = b.copy()   # later phases start from the target, not from its smoothstepped approach
        elif ph.line is not None:
            a, b = ph.line
            if ph.turn is not None:
                R = slerp(*ph.turn, s)
            q, err = ik.solve(a + s * (b - a), R, q)
            errs.append(err)
            qa = q
        else:
            qa = q
        g0, g1 = ph.grip
        sg = s if ph.grip_until is None else _smoothstep((t - t0) / (ph.grip_until - t0))
        plan[k, arm_idx] = qa
        plan[k, g_idx] = g0 + sg * (g1 - g0)
    return plan, errs


# Takeovers (reset(start=...)): a pinch off the grasp sideways by more than TAKEOVER_LATERAL (m) rises
# to pass over the cube, up to TAKEOVER_CLEARANCE (m) above the grasp (the open fingers clear a 4 cm
# cube); the reach to above the grasp moves the pinch at about TAKEOVER_SPEED (m/s).
TAKEOVER_CLEARANCE = 0.04
TAKEOVER_LATERAL = 0.01
TAKEOVER_SPEED = 0.25


class PickCubeExpert:
    """Scripted top-down pick of the prompt's cube. ``act()`` -> robot vector (n,) per tick."""

    timeline_class: type = PickTimeline

    def __init__(self, env: SimEnv, timeline: PickTimeline | None = None,
                 pregrasp_height: float | None = None, grasp_offset: float | None = None,
                 lift_height: float | None = None, close_to: float = 1.0, align_to_faces: bool | None = None) -> None:
        """Heights and ``align_to_faces`` default to the scene's
        :class:`~pi0_ros.sim.scenes.PickGeometry` (robot data)."""
        self.env = env
        geo = env.scene.pick
        # Off for ALOHA and the UR5e: their open grippers close on a cube at any yaw in the task's
        # range (ALOHA: 200/200 seeds), and a grasp that does not depend on the yaw spares the
        # imitating policy from reading a 4 cm cube's yaw off the pixels. On for the Franka hand.
        self.align_to_faces = geo.align_to_faces if align_to_faces is None else align_to_faces
        self._timeline = timeline or self.timeline_class()   # from home; a takeover shortens its moves
        self.timeline = self._timeline
        self.pregrasp_height = geo.pregrasp_height if pregrasp_height is None else pregrasp_height
        self.grasp_offset = geo.grasp_offset if grasp_offset is None else grasp_offset  # pinch above cube centre (m)
        self.lift_height = geo.lift_height if lift_height is None else lift_height
        self.close_to = close_to               # gripper command at grasp, model units (1 = closed)
        self.plan: np.ndarray = np.zeros((0, env.embodiment.num_dims))
        self.arm: str = ""
        self.ik_error: float = 0.0
        self.reset()

    # ------------------------------------------------------------------ planning
    def _choose_arm(self, cube: np.ndarray) -> str:
        best, best_d = "", math.inf
        for src in self.env.scene.gripper_dim:  # arms with a gripper
            first = self.env.scene.dims[self.env.scene.arm_dims[src][0]]
            jid = mujoco.mj_name2id(self.env.model, mujoco.mjtObj.mjOBJ_JOINT, first.joint)
            base = self.env.data.xanchor[jid]
            dist = float(np.linalg.norm(cube[:2] - base[:2]))
            if dist < best_d:
                best, best_d = src, dist
        return best

    def _grasp_rotation(self, cube: np.ndarray, cube_quat: np.ndarray, base: np.ndarray,
                        turn: float = 0.0) -> np.ndarray:
        """Top-down gripper orientation: x (approach) down, y (finger axis) perpendicular to the
        reach direction, or along the nearest cube face normal with ``align_to_faces``; ``turn``
        (rad) turns it about the vertical (pi: the same grasp, the wrist the other way round)."""
        u = cube[:2] - base[:2]
        u /= np.linalg.norm(u) + 1e-12
        psi = math.atan2(u[0], -u[1]) + turn  # finger axis perpendicular to the reach direction
        if self.align_to_faces:
            mat = np.zeros(9)
            mujoco.mju_quat2Mat(mat, cube_quat)
            cx = mat.reshape(3, 3)[:, 0]
            face = math.atan2(cx[1], cx[0])
            psi = face + round((psi - face) / (math.pi / 2)) * math.pi / 2
        x = np.array([0.0, 0.0, -1.0])
        y = np.array([math.cos(psi), math.sin(psi), 0.0])
        z = np.cross(x, y)
        return np.stack([x, y, z], axis=1)

    def reset(self, start: np.ndarray | None = None) -> None:
        """Plan the episode from the env's current state. ``start`` (n,) robot units: the robot
        vector the plan starts from; default the scene's home pose, where a reset leaves the robot.
        A takeover (DAgger-style: the expert continues from wherever a policy took the robot)
        passes the current joint positions; the plan's ticks then count from this tick (``act``)."""
        env = self.env
        self.start_tick = env.tick
        emb = env.embodiment
        cube_name = env.task.target_object
        cube = env.object_position(cube_name)
        cube_quat = env.object_quat(cube_name)
        self.arm = src = self._choose_arm(cube)
        ik = ArmIK(env, src, env.scene.ee_sites[src])
        first = env.scene.dims[env.scene.arm_dims[src][0]]
        base = env.data.xanchor[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_JOINT, first.joint)].copy()
        home = (env.scene.home if start is None else np.asarray(start, dtype=np.float64)).copy()
        if home.shape != (emb.num_dims,):
            raise ValueError(f"start must have the embodiment's {emb.num_dims} values, got shape {home.shape}")
        arm_idx = env.scene.arm_dims[src]
        g_idx = env.scene.gripper_dim[src]
        q_home = home[arm_idx]
        grasp = cube + np.array([0, 0, self.grasp_offset])
        pre_height = self.pregrasp_height
        self.timeline = self._timeline
        if start is not None:
            pre_height = self._takeover_height(ik.forward(q_home)[0], grasp)
        pre = grasp + np.array([0, 0, pre_height])
        # Pre-grasp: solved from home for the fingers across the reach direction and for the same
        # grasp with the wrist turned by pi (a parallel gripper is symmetric); keep the one that
        # reaches and gets there from home soonest at the YAML's joint velocities.
        vmax = emb.max_velocity[arm_idx]
        best = None
        for turn in (0.0, math.pi):
            R_try = self._grasp_rotation(cube, cube_quat, base, turn)
            q_try, err = ik.solve(pre, R_try, q_home, iters=200)
            key = self.grasp_key(q_try, err, q_home, vmax, ik)
            if best is None or key < best[0]:
                best = (key, R_try, q_try, err)
        _, R, q_pre, err = best
        g_open = emb.dims[g_idx].open
        g_close = emb.to_robot(np.where(np.arange(emb.num_dims) == g_idx, self.close_to, 0.0))[g_idx]
        if start is not None:
            self.timeline = self._takeover_timeline(ik.forward(q_home)[0], pre, pre_height, q_home, q_pre, vmax,
                                                    abs(home[g_idx] - g_open) / emb.max_velocity[g_idx])
        g = Grasp(cube, base, pre, grasp, R, q_home, q_pre, g_open, g_close, ik)
        plan, errs = build_plan(self.phases(g), home, arm_idx, g_idx, ik, R, emb.dt)
        # Never faster than the YAML's max_velocity (e.g. a slow gripper closing): the executor's
        # step limit would otherwise drag the command after the plan (a safety intervention).
        # 2 % under it, so that float rounding never makes a tick count as over the limit.
        self.plan = rate_limit(plan, emb.max_velocity * emb.dt * 0.98)
        self.ik_error = float(max([err] + errs))

    def _takeover_height(self, pinch: np.ndarray, grasp: np.ndarray) -> float:
        """Pre-grasp height above the grasp (m) for a takeover with the pinch site at ``pinch``.

        Above the cube at about the current height, never back up to the full pre-grasp: takeover
        data teaches a policy what to do from where it drifted, and from a pose at the grasp, a
        little off, the lesson must be "shift over and close", not "back away" (which, taught from
        states the policy reaches in most episodes, makes it hover and never close; measured).
        Only a pinch off sideways by more than TAKEOVER_LATERAL rises, up to TAKEOVER_CLEARANCE
        at 3 cm off, so that the open fingers pass over the cube instead of pushing it."""
        lateral = float(np.linalg.norm(pinch[:2] - grasp[:2]))
        low = TAKEOVER_CLEARANCE * float(np.clip((lateral - TAKEOVER_LATERAL) / (0.03 - TAKEOVER_LATERAL), 0.0, 1.0))
        return float(np.clip(pinch[2] - grasp[2], low, self.pregrasp_height))

    def _takeover_timeline(self, pinch: np.ndarray, pre: np.ndarray, pre_height: float, q_from: np.ndarray,
                           q_pre: np.ndarray, vmax: np.ndarray, reopen_s: float):
        """The timeline with the reach and the descent as long as a takeover's moves need (s): a
        short move at the from-home plan's pace would crawl for seconds near the cube, a pause that
        the policy cannot tell from the moment to close. Never faster than the joints' velocities
        (smoothstep peaks at 1.5x its mean) or than re-opening the gripper."""
        tl = self._timeline
        reach = max(float(np.linalg.norm(pre - pinch)) / TAKEOVER_SPEED, 1.5 * float(np.max(np.abs(q_pre - q_from) / vmax)),
                    reopen_s + 0.1, 0.3)
        descend = max((tl.descend - tl.reach) * pre_height / self.pregrasp_height, 0.1)
        shift = reach + descend - tl.descend
        later = {f.name: getattr(tl, f.name) + shift for f in dataclasses.fields(tl) if getattr(tl, f.name) > tl.descend}
        return dataclasses.replace(tl, reach=reach, descend=reach + descend, **later)

    def grasp_key(self, q: np.ndarray, err: float, q_home: np.ndarray, vmax: np.ndarray, ik: ArmIK) -> tuple:
        """Sort key (lowest first) of a pre-grasp candidate ``q`` (n_arm,) with IK error ``err``
        (m): reaches, then gets there from ``q_home`` soonest at the joint velocities ``vmax``."""
        return (err > 1e-3, float(np.max(np.abs(q - q_home) / vmax)), err)

    def pick_phases(self, g: Grasp) -> list[Phase]:
        """Reach the pre-grasp, descend, close and settle: the start of every cube expert's plan."""
        tl = self.timeline
        opened = (g.g_open, g.g_open)
        return [Phase(tl.reach, joints=(g.q_home, g.q_pre), grip=opened),
                Phase(tl.descend, line=(g.pre, g.grasp), grip=opened),
                Phase(tl.settle, grip=(g.g_open, g.g_close), grip_until=tl.close)]

    def phases(self, g: Grasp) -> list[Phase]:
        """The pick, then lift straight up and hold."""
        tl = self.timeline
        closed = (g.g_close, g.g_close)
        lift = g.cube + np.array([0, 0, self.lift_height + self.grasp_offset])
        return self.pick_phases(g) + [Phase(tl.lift, line=(g.grasp, lift), grip=closed),
                                      Phase(tl.end, grip=closed)]

    # ------------------------------------------------------------------ acting
    def act(self, tick: int | None = None) -> np.ndarray:
        """Robot-units joint targets (n,) for tick ``tick`` of the plan (default: the env's ticks
        since the plan was made; after a reset that is the env's tick)."""
        k = self.env.tick - self.start_tick if tick is None else tick
        return self.plan[min(max(k, 0), len(self.plan) - 1)].copy()

    @property
    def duration_s(self) -> float:
        return len(self.plan) * self.env.embodiment.dt


def make_expert(env: SimEnv, **kwargs) -> PickCubeExpert:
    """The scripted expert for ``env.task`` (planned from the env's current state); ``kwargs``
    go to its constructor. Chosen by the task's class, most specific first: robots never matter."""
    from pi0_ros.sim.stack_expert import StackCubeExpert  # builds on this module
    from pi0_ros.sim.stack_task import StackCubeTask
    from pi0_ros.sim.tasks import PickCubeTask

    for task_class, expert_class in ((StackCubeTask, StackCubeExpert), (PickCubeTask, PickCubeExpert)):
        if isinstance(env.task, task_class):
            return expert_class(env, **kwargs)
    raise ValueError(f"no scripted expert for the task {type(env.task).__name__}")


def run_episode(env: SimEnv, seed: int | None = None, target: str | None = None,
                duration_s: float | None = None, render: bool = False, expert: PickCubeExpert | None = None,
                callback=None) -> dict:
    """Reset, run the scripted expert for ``duration_s`` (default: the task's), report the outcome.

    Commands go through ``env.set_command`` per output (exactly the executor's messages).
    ``callback(env, action, images)`` is called every tick (e.g. to record a dataset).
    Returns {success, reached, arm, ik_error, ticks, actions (T, n), states (T, n)}.
    """
    env.reset(seed, target=target)
    expert = expert or make_expert(env)
    if expert.env is env:
        expert.reset()
    duration = duration_s if duration_s is not None else env.task.duration_s
    ticks = int(round(duration / env.embodiment.dt))
    actions, states = [], []
    reached = False
    for _ in range(ticks):
        a = expert.act()
        states.append(env.robot_state())
        images = env.render() if render else None
        for name, vals in env.embodiment.split_outputs(a).items():
            env.set_command(name, vals)
        if callback is not None:
            callback(env, a, images)
        actions.append(a)
        env.step()
        reached = reached or env.task.reached(env)
    return {"success": env.success(), "reached": reached, "arm": expert.arm, "ik_error": expert.ik_error,
            "ticks": ticks, "actions": np.array(actions), "states": np.array(states)}
