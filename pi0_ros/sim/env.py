"""SimEnv: a MuJoCo robot that speaks the embodiment's robot units (ROS-free).

Everything crossing this interface is what a real driver would publish or accept:
- joint positions by (source, joint name) exactly as in the embodiment YAML, grippers in the
  YAML's robot units (linear map from the MJCF finger/driver joint, YAML open = MJCF open);
- commands: per output (name, values in the output's dim order) or per (source, joint), joint
  position targets in robot units, held until the next command (like a forward controller);
  trajectory and gripper-action outputs go through stand-ins of the real controllers instead
  (``env.controllers``, pi0_ros.sim.robot_controllers), sampled at every physics step;
- images per camera slot, HxWx3 uint8 RGB.

Physics runs at TIMESTEP (2 ms); ``step()`` advances one control tick (1 / control_rate_hz)
with ``n_substeps`` physics steps. Deterministic given the seed (single-threaded MuJoCo,
seeded numpy Generator).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pi0_ros import sim as _sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)

import mujoco
import numpy as np

from pi0_ros.robots.embodiment import BASE_KINDS, Embodiment, load_embodiment
from pi0_ros.sim.disturbance import JointDisturbance
from pi0_ros.sim.robot_controllers import SimControllers
from pi0_ros.sim.scenes import Scene, build_scene
from pi0_ros.sim.tasks import PickCubeTask, make_task

SETTLE_S = 0.1  # physics run at reset (then the clock is set back to 0) so coupled joints settle


class SimEnv:
    """One simulated robot + task.

    Args:
        embodiment_name: embodiment name (config/embodiments/<name>.yaml), a YAML path, or an Embodiment.
        seed: seed of the first episode (reset() is called in the constructor).
        task: task name (see pi0_ros.sim.tasks.TASKS) or a task instance; default pick_cube.
        image_size: rendered images are image_size x image_size.
        render: False disables the renderer (no GL context is created).
        disturbance_std: std (rad) of smooth random offsets between the commanded and the
            controlled arm joint targets (see pi0_ros.sim.disturbance; for collecting
            demonstrations, DART-style); 0 = off. Seeded by the episode seed.
        disturbance_tau: correlation time (s) of those offsets.
    """

    def __init__(
        self,
        embodiment_name: str | Path | Embodiment = "trossen_bimanual",
        seed: int = 0,
        task: str | PickCubeTask | None = None,
        image_size: int = 224,
        render: bool = True,
        disturbance_std: float = 0.0,
        disturbance_tau: float = 0.5,
    ) -> None:
        self.embodiment = (load_embodiment(embodiment_name) if isinstance(embodiment_name, (str, Path))
                           else embodiment_name)
        self.task = task if isinstance(task, PickCubeTask) else make_task(task)
        self.scene: Scene = build_scene(self.embodiment, self.task.objects)
        self.model = self.scene.model
        self.data = mujoco.MjData(self.model)
        self.image_size = int(image_size)
        self.n_substeps = self.scene.n_substeps_per_tick
        self.control_dt = self.n_substeps * self.model.opt.timestep
        self._render_enabled = render
        self._renderer: mujoco.Renderer | None = None
        self._targets = self.scene.home.copy()
        self._out = {o.name: o for o in self.embodiment.outputs}
        self._dim_index = {(d.source, d.joint): i for i, d in enumerate(self.embodiment.dims) if d.source}
        self._sites = {}
        self._base_idx = {d.kind: i for i, d in enumerate(self.embodiment.dims) if d.kind in BASE_KINDS}
        self.base_pose = np.zeros(3)  # kinematic base (x, y, yaw) integrated from commanded velocity
        arm_joints = np.array([d.kind == "joint" and b is not None
                               for d, b in zip(self.embodiment.dims, self.scene.dims)])
        self.disturbance = JointDisturbance(arm_joints, disturbance_std, disturbance_tau, self.control_dt)
        # Stand-ins for the robot's joint_trajectory_controller / gripper_action_controller behind
        # trajectory and gripper-action outputs, on the simulator's ROS clock: clock_offset + time.
        self.clock_offset = 0.0
        self.controllers = SimControllers(self.embodiment, self.scene.home)
        self.seed = seed
        self.tick = 0
        self.reset(seed)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, target: str | None = None, prompt: str | None = None) -> None:
        """New episode: robot at home, objects placed from ``seed``; target from prompt/target/seed."""
        if seed is not None:
            self.seed = int(seed)
        if prompt is not None:
            target = self.task.target_from_prompt(prompt)
        rng = np.random.default_rng(self.seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self._targets = self.scene.home.copy()
        self.disturbance.reset(self.seed)
        for i, b in enumerate(self.scene.dims):
            if b is not None:
                q = b.to_qpos(self._targets[i])
                d.qpos[b.qpos_adr] = q
                for adr, f in b.coupled:  # e.g. ALOHA's mirrored right finger
                    d.qpos[adr] = f * q
        self._apply_targets()
        self.task.reset(self, rng, target)
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=max(1, round(SETTLE_S / m.opt.timestep)))
        d.time = 0.0
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        self.tick = 0
        self.base_pose = np.zeros(3)
        if hasattr(self, "controllers"):
            self.controllers.reset(self._targets, self.controller_time)

    @property
    def controller_time(self) -> float:
        """The controllers' clock (s): the simulator's ROS time, ``clock_offset`` + :attr:`time`."""
        return self.clock_offset + float(self.data.time)

    @property
    def time(self) -> float:
        """Simulated time since reset (s)."""
        return float(self.data.time)

    @property
    def prompt(self) -> str:
        return self.task.prompt

    def success(self, target: str | None = None) -> bool:
        return self.task.success(self, target)

    # ------------------------------------------------------------------ stepping
    def step(self, ticks: int = 1) -> None:
        """Advance ``ticks`` control ticks (n_substeps physics steps each) holding the targets."""
        ctl = self.controllers
        for _ in range(ticks):
            offset = self.disturbance.step() if self.disturbance.enabled else None
            if ctl.active:  # trajectory controllers set their targets at every physics step
                for _ in range(self.n_substeps):
                    ctl.sample_into(self._targets, self.controller_time)
                    self._apply_targets(offset)
                    mujoco.mj_step(self.model, self.data)
                ctl.update(self.controller_time, self.measured_positions(), self.measured_velocities())
            else:
                self._apply_targets(offset)
                mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
            self.tick += 1
            if self._base_idx:
                v = self.base_velocity()
                x, y, yaw = self.base_pose
                vx, vy, wz = v.get("base_vx", 0.0), v.get("base_vy", 0.0), v.get("base_wz", 0.0)
                self.base_pose = np.array([x + (vx * np.cos(yaw) - vy * np.sin(yaw)) * self.control_dt,
                                           y + (vx * np.sin(yaw) + vy * np.cos(yaw)) * self.control_dt,
                                           yaw + wz * self.control_dt])

    def _apply_targets(self, offset: np.ndarray | None = None) -> None:
        """Targets (+ disturbance ``offset`` (n,), kept within the YAML limits) -> actuator ctrl."""
        m, d = self.model, self.data
        targets = self._targets
        if offset is not None:
            targets = np.clip(targets + offset, self.embodiment.lower, self.embodiment.upper)
        for i, b in enumerate(self.scene.dims):
            if b is None:
                continue
            for aid, s, o in b.actuators:
                v = s * targets[i] + o
                if m.actuator_ctrllimited[aid]:
                    v = min(max(v, m.actuator_ctrlrange[aid, 0]), m.actuator_ctrlrange[aid, 1])
                d.ctrl[aid] = v

    # ------------------------------------------------------------------ commands
    def set_command(self, output: str | Mapping[tuple[str, str], float], values: Sequence[float] | None = None) -> None:
        """Set joint position targets (robot units), held until changed.

        ``set_command("left_arm", [6 values])`` sets an output's dims in its YAML order;
        ``set_command({("left", "gripper"): 0.3})`` sets dims by (source, joint).
        Values are clipped to the YAML limits. Base (Twist) outputs store the velocity command.
        """
        if isinstance(output, str):
            o = self._out.get(output)
            if o is None:
                raise KeyError(f"unknown output '{output}'; outputs: {sorted(self._out)}")
            vals = np.asarray(values, dtype=np.float64).reshape(-1)
            if vals.size != len(o.indices):
                raise ValueError(f"output '{output}' takes {len(o.indices)} values, got {vals.size}")
            idx = list(o.indices)
        else:
            idx, v = [], []
            for key, val in output.items():
                if key not in self._dim_index:
                    raise KeyError(f"unknown (source, joint) {key}")
                idx.append(self._dim_index[key])
                v.append(val)
            vals = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"non-finite command {vals}")
        self._targets[idx] = np.clip(vals, self.embodiment.lower[idx], self.embodiment.upper[idx])
        if self.controllers.active:  # trajectory / gripper-action outputs: their controllers hold these
            self.controllers.hold(self._targets, idx)

    def set_targets(self, robot: Sequence[float]) -> None:
        """Set the whole robot vector (n,) of targets at once (robot units, YAML dim order)."""
        robot = np.asarray(robot, dtype=np.float64).reshape(-1)
        if robot.size != self.embodiment.num_dims:
            raise ValueError(f"expected {self.embodiment.num_dims} values, got {robot.size}")
        for name, vals in self.embodiment.split_outputs(robot).items():
            self.set_command(name, vals)

    @property
    def targets(self) -> np.ndarray:
        return self._targets.copy()

    # ------------------------------------------------------------------ state
    def measured_positions(self) -> np.ndarray:
        """(n,) robot units: simulated dims measured, the others (base) their targets."""
        out = self._targets.copy()
        for i, b in enumerate(self.scene.dims):
            if b is not None:
                out[i] = b.to_robot(float(self.data.qpos[b.qpos_adr]))
        return out

    def measured_velocities(self) -> np.ndarray:
        """(n,) robot units / s (0 for dims that are not simulated)."""
        out = np.zeros(self.embodiment.num_dims)
        for i, b in enumerate(self.scene.dims):
            if b is not None:
                out[i] = b.read_scale * float(self.data.qvel[b.dof_adr])
        return out

    def joint_positions(self) -> dict[str, dict[str, float]]:
        """{source: {joint: position in robot units}} for every simulated dim."""
        out: dict[str, dict[str, float]] = {s: {} for s in self.embodiment.joint_state_sources}
        for d, b in zip(self.embodiment.dims, self.scene.dims):
            if b is not None:
                out[d.source][d.joint] = b.to_robot(float(self.data.qpos[b.qpos_adr]))
        return out

    def joint_velocities(self) -> dict[str, dict[str, float]]:
        """{source: {joint: velocity in robot units / s}}."""
        out: dict[str, dict[str, float]] = {s: {} for s in self.embodiment.joint_state_sources}
        for d, b in zip(self.embodiment.dims, self.scene.dims):
            if b is not None:
                out[d.source][d.joint] = b.read_scale * float(self.data.qvel[b.dof_adr])
        return out

    def joint_efforts(self) -> dict[str, dict[str, float]]:
        """{source: {joint: actuator force on the read joint}} (N m or N)."""
        out: dict[str, dict[str, float]] = {s: {} for s in self.embodiment.joint_state_sources}
        for d, b in zip(self.embodiment.dims, self.scene.dims):
            if b is not None:
                out[d.source][d.joint] = float(self.data.qfrc_actuator[b.dof_adr])
        return out

    def base_velocity(self) -> dict[str, float]:
        """Mobile embodiments: the base is kinematic (not simulated physically; the arms and cameras
        do not move with it); reports the commanded velocity, integrated into ``base_pose``."""
        return {d.kind: float(self._targets[i]) for i, d in enumerate(self.embodiment.dims) if d.kind in BASE_KINDS}

    def robot_state(self) -> np.ndarray:
        """Robot-units state vector (n,) assembled by name, as the observation node does."""
        bv = self.base_velocity() or None
        return self.embodiment.state_from_joints(self.joint_positions(), bv)

    def object_position(self, name: str) -> np.ndarray:
        ob = self.scene.objects[name]
        return self.data.xpos[ob.body_id].copy()

    def object_quat(self, name: str) -> np.ndarray:
        ob = self.scene.objects[name]
        return self.data.xquat[ob.body_id].copy()

    def site_position(self, site: str) -> np.ndarray:
        sid = self._sites.get(site)
        if sid is None:
            sid = self._sites[site] = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, site)
        return self.data.site_xpos[sid].copy()

    def site_rotation(self, site: str) -> np.ndarray:
        """(3, 3) world-from-site rotation: its columns are the site's axes in the world."""
        self.site_position(site)  # caches the id
        return self.data.site_xmat[self._sites[site]].reshape(3, 3).copy()

    # ------------------------------------------------------------------ rendering
    def render(self, slots: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """{camera slot: (image_size, image_size, 3) uint8 RGB} for the embodiment's cameras."""
        if not self._render_enabled:
            raise RuntimeError("SimEnv was created with render=False")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        r = self._renderer
        out = {}
        for slot in (slots or list(self.scene.cameras)):
            r.update_scene(self.data, camera=self.scene.cameras[slot])
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            out[slot] = r.render().copy()
        return out

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "SimEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort GL cleanup
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
