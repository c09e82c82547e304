"""The robot embodiments as data: load, validate, pad and unpad (ROS-free).

An embodiment YAML (``config/embodiments/<name>.yaml``) says everything that differs between
robots: joint names per source topic, the slot of each dimension in the model's padded action
vector, gripper conversions, camera topics -> model camera slots, control rate, execute_steps,
limits and command outputs. Code never branches on the robot's name.

Three vector spaces, one name each:
- robot vector ``(n,)``: the embodiment's dims in YAML order, robot units (joints rad,
  grippers in the driver's units, base velocities m/s and rad/s);
- model vector ``(n,)``: the same dims in the model's convention (grippers in [0 open, 1 closed]);
- padded vector ``(action_dim,)``: model vector scattered into its slots, zeros elsewhere
  (action_dim = the model's width: 18 in the paper, 32 for openpi checkpoints).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pi0_ros.images import check_crop
from pi0_ros.paths import config_dir

CAMERA_SLOTS: tuple[str, ...] = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
DIM_KINDS: tuple[str, ...] = ("joint", "gripper", "base_vx", "base_vy", "base_wz")
BASE_KINDS: tuple[str, ...] = ("base_vx", "base_vy", "base_wz")
# Widest padded vector a slot may address (openpi checkpoints use 32; the paper 18).
MAX_ACTION_DIM = 32

# Command interfaces the executor knows how to fill. Others are refused at load time.
OUTPUT_TYPES: tuple[str, ...] = (
    "std_msgs/msg/Float64MultiArray",    # ros2_control forward controllers: one value per dim, every tick
    "trajectory_msgs/msg/JointTrajectory",  # joint_trajectory_controller ~/joint_trajectory: multi-point, per chunk
    "control_msgs/action/FollowJointTrajectory",  # joint_trajectory_controller ~/follow_joint_trajectory
    "control_msgs/action/GripperCommand",  # gripper_action_controller, Robotiq, franka_gripper gripper_action
    # franka_gripper's own actions; topic = the gripper node (e.g. /fr3_gripper): closing sends
    # <topic>/grasp (franka_msgs/action/Grasp), opening <topic>/move (franka_msgs/action/Move).
    "franka_msgs/action/Grasp",
    "geometry_msgs/msg/Twist",           # mobile bases (diff_drive_controller before Jazzy, most base drivers)
    "geometry_msgs/msg/TwistStamped",    # mobile bases: diff_drive_controller from Jazzy on
    "interbotix_xs_msgs/msg/JointGroupCommand",   # Interbotix xs_sdk group command (arms)
    "interbotix_xs_msgs/msg/JointSingleCommand",  # Interbotix xs_sdk single joint (grippers)
)
TWIST_TYPES: tuple[str, ...] = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped")
GRIPPER_ACTION_TYPES: tuple[str, ...] = ("control_msgs/action/GripperCommand", "franka_msgs/action/Grasp")
# Outputs that carry a whole trajectory, sent once per chunk (the controller keeps time).
TRAJECTORY_TYPES: tuple[str, ...] = ("trajectory_msgs/msg/JointTrajectory", "control_msgs/action/FollowJointTrajectory")
# Per-output `params` each type accepts (YAML key -> Python type), with their meaning:
OUTPUT_PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    # max_effort: GripperCommand.command.max_effort (N for Robotiq/Franka; 0 = the controller's default).
    # deadband: robot units; a new goal is sent only when the target moved further than this.
    # allow_stalling / goal_tolerance / stall_timeout: mirror the real gripper_action_controller's
    #   parameters of the same name (the simulator's stand-in applies them; set them on the robot too).
    "control_msgs/action/GripperCommand": {"max_effort": float, "deadband": float, "allow_stalling": bool,
                                           "goal_tolerance": float, "stall_timeout": float},
    # allow_nonzero_velocity_at_trajectory_end / allow_partial_joints_goal: mirror the JTC's
    #   parameters (the simulator's stand-in applies them; our trajectories always end at rest).
    "trajectory_msgs/msg/JointTrajectory": {"allow_nonzero_velocity_at_trajectory_end": bool,
                                            "allow_partial_joints_goal": bool},
    "control_msgs/action/FollowJointTrajectory": {"allow_nonzero_velocity_at_trajectory_end": bool,
                                                  "allow_partial_joints_goal": bool,
                                                  "goal_time_tolerance": float},
    "geometry_msgs/msg/TwistStamped": {"frame_id": str},  # header.frame_id (default base_link)
    # speed m/s (franka_gripper default_speed 0.1), force N (grasp), epsilon_inner/outer m (a grasp
    # succeeds only if it stops within [width - inner, width + outer]), width_scale: finger width
    # per robot unit (2.0: our dim is one finger's opening, as franka_gripper's joint_states).
    "franka_msgs/action/Grasp": {"speed": float, "force": float, "epsilon_inner": float, "epsilon_outer": float,
                                 "deadband": float, "width_scale": float},
}


def is_action(type_name: str) -> bool:
    """'pkg/action/Name' types are action goals, not topics (nothing to record on a topic)."""
    return type_name.split("/")[1:2] == ["action"]


class EmbodimentError(ValueError):
    """An embodiment YAML is invalid; the message names the file and the field."""


class JointStateError(ValueError):
    """A joint state cannot be turned into a state vector; the message says why."""


@dataclass(frozen=True)
class Dim:
    """One action/state dimension of a robot."""

    name: str            # unique within the embodiment, e.g. "left_waist"
    kind: str            # one of DIM_KINDS
    slot: int            # index in the padded model vector
    source: str | None   # joint-state source key (joints, grippers); None for base dims
    joint: str | None    # joint name as the driver publishes it in sensor_msgs/JointState
    lower: float         # position (or velocity for base dims) limits, robot units
    upper: float
    max_velocity: float  # robot units per second (per-tick step limit = max_velocity / rate)
    open: float | None = None    # grippers: robot value when fully open  (model 0)
    closed: float | None = None  # grippers: robot value when fully closed (model 1)


@dataclass(frozen=True)
class Camera:
    slot: str              # model camera slot (CAMERA_SLOTS)
    topic: str
    compressed: bool = False  # sensor_msgs/CompressedImage instead of Image
    # Region of interest (top, left, height, width) as fractions of the frame, cut out before the
    # resize to the model's input (pi0_ros.images.crop_region); None = the whole frame.
    crop: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Output:
    """One command topic: which dims it carries, in which order, as which message type."""

    name: str
    topic: str
    type: str
    dims: tuple[str, ...]
    indices: tuple[int, ...]   # positions of ``dims`` in the robot vector
    joint_names: tuple[str, ...]  # driver joint names of ``dims`` (JointTrajectory, Interbotix)
    group: str | None = None   # Interbotix group name (JointGroupCommand)
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)  # OUTPUT_PARAMS[type]

    @property
    def is_action(self) -> bool:
        """True for action outputs (``topic`` is then the action name)."""
        return is_action(self.type)


@dataclass(frozen=True)
class Embodiment:
    name: str
    description: str
    asset_id: str
    control_rate_hz: float
    execute_steps: int
    cameras: tuple[Camera, ...]
    joint_state_sources: Mapping[str, str]   # source key -> JointState topic
    odometry_topic: str | None
    dims: tuple[Dim, ...]
    outputs: tuple[Output, ...]
    source_file: str = ""
    # Derived arrays, filled in __post_init__ (shapes (n,)).
    slots: np.ndarray = field(init=False, repr=False, compare=False)
    lower: np.ndarray = field(init=False, repr=False, compare=False)
    upper: np.ndarray = field(init=False, repr=False, compare=False)
    max_velocity: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "slots", np.array([d.slot for d in self.dims], dtype=np.int64))
        set_(self, "lower", np.array([d.lower for d in self.dims], dtype=np.float64))
        set_(self, "upper", np.array([d.upper for d in self.dims], dtype=np.float64))
        set_(self, "max_velocity", np.array([d.max_velocity for d in self.dims], dtype=np.float64))
        grip = [i for i, d in enumerate(self.dims) if d.kind == "gripper"]
        set_(self, "_grip_idx", np.array(grip, dtype=np.int64))
        set_(self, "_grip_open", np.array([self.dims[i].open for i in grip], dtype=np.float64))
        set_(self, "_grip_closed", np.array([self.dims[i].closed for i in grip], dtype=np.float64))

    # ------------------------------------------------------------------ properties
    @property
    def num_dims(self) -> int:
        """Number of robot dims n (the unpadded action/state width)."""
        return len(self.dims)

    @property
    def dt(self) -> float:
        """Seconds between consecutive actions of a chunk."""
        return 1.0 / self.control_rate_hz

    @property
    def dim_names(self) -> list[str]:
        return [d.name for d in self.dims]

    @property
    def kinds(self) -> list[str]:
        return [d.kind for d in self.dims]

    @property
    def min_action_dim(self) -> int:
        """The smallest padded width this embodiment fits in."""
        return int(self.slots.max()) + 1

    def camera_slots(self) -> list[str]:
        return [c.slot for c in self.cameras]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "asset_id": self.asset_id,
            "action_dims": self.num_dims,
            "cameras": {c.slot: c.topic for c in self.cameras},
            "control_rate_hz": self.control_rate_hz,
            "execute_steps": self.execute_steps,
            "joint_state_sources": dict(self.joint_state_sources),
            "outputs": [{"name": o.name, "topic": o.topic, "type": o.type} for o in self.outputs],
        }

    # ------------------------------------------------------------------ conversions
    def to_model(self, robot: np.ndarray) -> np.ndarray:
        """Robot units -> model convention (grippers to [0 open, 1 closed]). (..., n) -> (..., n)."""
        out = np.array(robot, dtype=np.float64, copy=True)
        if self._grip_idx.size:
            g = out[..., self._grip_idx]
            out[..., self._grip_idx] = (g - self._grip_open) / (self._grip_closed - self._grip_open)
        return out

    def to_robot(self, model: np.ndarray) -> np.ndarray:
        """Model convention -> robot units. (..., n) -> (..., n)."""
        out = np.array(model, dtype=np.float64, copy=True)
        if self._grip_idx.size:
            g = out[..., self._grip_idx]
            out[..., self._grip_idx] = self._grip_open + g * (self._grip_closed - self._grip_open)
        return out

    def pad(self, model: np.ndarray, action_dim: int) -> np.ndarray:
        """Scatter model-convention dims into their slots. (..., n) -> (..., action_dim), zeros elsewhere."""
        self._check_width(action_dim)
        model = np.asarray(model, dtype=np.float64)
        if model.shape[-1] != self.num_dims:
            raise ValueError(f"{self.name}: expected {self.num_dims} dims, got shape {model.shape}")
        out = np.zeros(model.shape[:-1] + (action_dim,), dtype=np.float64)
        out[..., self.slots] = model
        return out

    def unpad(self, padded: np.ndarray) -> np.ndarray:
        """Gather this robot's slots from a padded vector. (..., action_dim) -> (..., n)."""
        padded = np.asarray(padded)
        self._check_width(padded.shape[-1])
        return padded[..., self.slots].astype(np.float64)

    def padded_state(self, robot: np.ndarray, action_dim: int) -> np.ndarray:
        """Robot-units state (n,) -> the model's padded state (action_dim,)."""
        return self.pad(self.to_model(robot), action_dim)

    def robot_actions(self, padded: np.ndarray) -> np.ndarray:
        """Padded model actions (..., action_dim) -> robot-units actions (..., n)."""
        return self.to_robot(self.unpad(padded))

    def split_outputs(self, robot: np.ndarray) -> dict[str, np.ndarray]:
        """Robot vector (n,) -> {output name: values in that output's dim order}."""
        return {o.name: robot[list(o.indices)] for o in self.outputs}

    def _check_width(self, action_dim: int) -> None:
        if action_dim < self.min_action_dim:
            raise ValueError(
                f"{self.name}: slots go up to {self.min_action_dim - 1}, "
                f"so action_dim must be >= {self.min_action_dim}, got {action_dim}"
            )

    # ------------------------------------------------------------------ joint states
    def state_from_joints(
        self,
        positions: Mapping[str, Mapping[str, float]],
        base_velocity: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """Assemble the robot-units state vector (n,) from joint positions BY NAME.

        positions: {source key: {joint name: position}} (one dict per JointState source;
        extra joints, e.g. finger joints, are ignored). base_velocity: {"base_vx": .., "base_vy":
        .., "base_wz": ..} from odometry for mobile robots. Missing or non-finite values raise
        JointStateError: a state is never silently zero-filled.
        """
        state = np.empty(self.num_dims, dtype=np.float64)
        for i, d in enumerate(self.dims):
            if d.kind in BASE_KINDS:
                if base_velocity is None or d.kind not in base_velocity:
                    raise JointStateError(f"{self.name}: no base velocity for '{d.name}' ({d.kind}); is odometry published?")
                value = base_velocity[d.kind]
            else:
                src = positions.get(d.source)  # type: ignore[arg-type]
                if src is None:
                    topic = self.joint_state_sources.get(d.source or "", "?")
                    raise JointStateError(f"{self.name}: no joint state from source '{d.source}' ({topic})")
                if d.joint not in src:
                    raise JointStateError(
                        f"{self.name}: joint '{d.joint}' missing from source '{d.source}' "
                        f"(has: {sorted(src)[:12]})"
                    )
                value = src[d.joint]  # type: ignore[index]
            if not math.isfinite(value):
                raise JointStateError(f"{self.name}: '{d.name}' is not finite ({value})")
            state[i] = value
        return state


def joint_state_positions(names: list[str], positions: list[float] | np.ndarray) -> dict[str, float]:
    """Validate one sensor_msgs/JointState's names/positions and return {name: position}.

    Rejects mismatched lengths, duplicate names and non-finite positions of any joint.
    """
    if len(names) != len(positions):
        raise JointStateError(f"JointState has {len(names)} names but {len(positions)} positions")
    out: dict[str, float] = {}
    for n, p in zip(names, positions):
        if n in out:
            raise JointStateError(f"JointState names joint '{n}' twice")
        p = float(p)
        if not math.isfinite(p):
            raise JointStateError(f"JointState position of '{n}' is not finite ({p})")
        out[n] = p
    return out


# ---------------------------------------------------------------------- loading
def embodiments_dir() -> Path:
    return config_dir() / "embodiments"


def list_embodiments() -> list[str]:
    """Names of the embodiments shipped in config/embodiments."""
    return sorted(p.stem for p in embodiments_dir().glob("*.yaml"))


def load_embodiment(name_or_path: str | Path) -> Embodiment:
    """Load an embodiment by name (config/embodiments/<name>.yaml) or by YAML path."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = embodiments_dir() / f"{name_or_path}.yaml"
        if not p.exists():
            raise EmbodimentError(f"unknown embodiment '{name_or_path}'; known: {', '.join(list_embodiments())}")
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise EmbodimentError(f"{p}: cannot read YAML: {e}") from e
    return parse_embodiment(data, str(p))


def load_all() -> list[Embodiment]:
    return [load_embodiment(n) for n in list_embodiments()]


def parse_embodiment(data: Any, source: str = "<dict>") -> Embodiment:
    """Validate a parsed YAML mapping; every error names ``source`` and the field."""

    def fail(field_: str, msg: str) -> EmbodimentError:
        return EmbodimentError(f"{source}: {field_}: {msg}")

    def req(m: Mapping[str, Any], key: str, where: str, typ: type | tuple[type, ...]) -> Any:
        if not isinstance(m, Mapping) or key not in m or m[key] is None:
            raise fail(f"{where}{key}", "missing")
        v = m[key]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
            raise fail(f"{where}{key}", f"expected {getattr(typ, '__name__', typ)}, got {type(v).__name__} {v!r}")
        return v

    if not isinstance(data, Mapping):
        raise fail("<top>", "expected a mapping")
    name = req(data, "name", "", str)
    rate = req(data, "control_rate_hz", "", float)
    if not (0 < rate <= 2000):
        raise fail("control_rate_hz", f"must be in (0, 2000], got {rate}")
    execute_steps = req(data, "execute_steps", "", int)
    if execute_steps < 1:
        raise fail("execute_steps", f"must be >= 1, got {execute_steps}")

    sources = data.get("joint_state_sources") or {}
    if not isinstance(sources, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sources.items()):
        raise fail("joint_state_sources", "expected a mapping {source key: JointState topic}")

    cameras: list[Camera] = []
    cams = data.get("cameras") or {}
    if not isinstance(cams, Mapping):
        raise fail("cameras", "expected a mapping {camera slot: {topic: ...}}")
    for slot, spec in cams.items():
        if slot not in CAMERA_SLOTS:
            raise fail(f"cameras.{slot}", f"unknown camera slot; use one of {CAMERA_SLOTS}")
        topic = req(spec, "topic", f"cameras.{slot}.", str)
        crop = spec.get("crop")
        if crop is not None:
            try:
                crop = check_crop(crop, f"cameras.{slot}.crop")
            except ValueError as e:
                raise EmbodimentError(f"{source}: {e}") from None
        cameras.append(Camera(slot=slot, topic=topic, compressed=bool(spec.get("compressed", False)), crop=crop))

    raw_dims = data.get("dims")
    if not isinstance(raw_dims, list) or not raw_dims:
        raise fail("dims", "missing or empty list")
    dims: list[Dim] = []
    seen_names: set[str] = set()
    seen_joints: set[tuple[str, str]] = set()
    seen_slots: dict[int, str] = {}
    for i, rd in enumerate(raw_dims):
        w = f"dims[{i}]."
        dname = req(rd, "name", w, str)
        w = f"dims[{i}]({dname})."
        kind = req(rd, "kind", w, str)
        if kind not in DIM_KINDS:
            raise fail(f"{w}kind", f"unknown kind '{kind}'; use one of {DIM_KINDS}")
        slot = req(rd, "slot", w, int)
        if not (0 <= slot < MAX_ACTION_DIM):
            raise fail(f"{w}slot", f"slot {slot} out of range [0, {MAX_ACTION_DIM})")
        if dname in seen_names:
            raise fail(f"{w}name", f"duplicate dim name '{dname}'")
        if slot in seen_slots:
            raise fail(f"{w}slot", f"slot {slot} overlaps dim '{seen_slots[slot]}'")
        src = joint = None
        if kind in BASE_KINDS:
            if not data.get("odometry_topic"):
                raise fail(f"{w}kind", f"'{kind}' needs odometry_topic")
        else:
            src = req(rd, "source", w, str)
            if src not in sources:
                raise fail(f"{w}source", f"unknown source '{src}'; joint_state_sources has {sorted(sources)}")
            joint = req(rd, "joint", w, str)
            if (src, joint) in seen_joints:
                raise fail(f"{w}joint", f"duplicate joint '{joint}' in source '{src}'")
            seen_joints.add((src, joint))
        limits = req(rd, "limits", w, list)
        if len(limits) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in limits) or limits[0] >= limits[1]:
            raise fail(f"{w}limits", f"expected [lower, upper] finite with lower < upper, got {limits}")
        maxv = req(rd, "max_velocity", w, float)
        if not (maxv > 0 and math.isfinite(maxv)):
            raise fail(f"{w}max_velocity", f"must be > 0, got {maxv}")
        g_open = g_closed = None
        if kind == "gripper":
            g_open = req(rd, "open", w, float)
            g_closed = req(rd, "closed", w, float)
            if g_open == g_closed:
                raise fail(f"{w}closed", "open and closed must differ")
            lo, hi = min(g_open, g_closed), max(g_open, g_closed)
            if limits[0] > lo + 1e-9 or limits[1] < hi - 1e-9:
                raise fail(f"{w}limits", f"must contain open..closed [{lo}, {hi}], got {limits}")
        seen_names.add(dname)
        seen_slots[slot] = dname
        dims.append(Dim(dname, kind, slot, src, joint, float(limits[0]), float(limits[1]), maxv, g_open, g_closed))

    used_sources = {d.source for d in dims if d.source}
    unused = set(sources) - used_sources
    if unused:
        raise fail("joint_state_sources", f"sources {sorted(unused)} are not used by any dim")

    by_name = {d.name: i for i, d in enumerate(dims)}
    outputs: list[Output] = []
    raw_out = data.get("outputs")
    if not isinstance(raw_out, list) or not raw_out:
        raise fail("outputs", "missing or empty list")
    covered: set[str] = set()
    for i, ro in enumerate(raw_out):
        w = f"outputs[{i}]."
        oname = req(ro, "name", w, str)
        w = f"outputs[{i}]({oname})."
        topic = req(ro, "topic", w, str)
        otype = req(ro, "type", w, str)
        if otype not in OUTPUT_TYPES:
            raise fail(f"{w}type", f"unknown message type '{otype}'; supported: {', '.join(OUTPUT_TYPES)}")
        odims = req(ro, "dims", w, list)
        for dn in odims:
            if dn not in by_name:
                raise fail(f"{w}dims", f"unknown dim '{dn}'")
        if len(set(odims)) != len(odims):
            raise fail(f"{w}dims", "a dim is listed twice")
        kinds = {dims[by_name[dn]].kind for dn in odims}
        if otype in TWIST_TYPES:
            if not kinds <= set(BASE_KINDS):
                raise fail(f"{w}dims", "a Twist output carries only base_vx/base_vy/base_wz dims")
        elif kinds & set(BASE_KINDS):
            raise fail(f"{w}dims", f"base velocity dims need a Twist or TwistStamped output, not {otype}")
        if otype in GRIPPER_ACTION_TYPES + ("interbotix_xs_msgs/msg/JointSingleCommand",) and len(odims) != 1:
            raise fail(f"{w}dims", f"{otype} carries exactly one dim, got {len(odims)}")
        if otype in GRIPPER_ACTION_TYPES and kinds != {"gripper"}:
            raise fail(f"{w}dims", f"a {otype} output carries one gripper dim")
        raw_params = ro.get("params") or {}
        allowed = OUTPUT_PARAMS.get(otype, {})
        if not isinstance(raw_params, Mapping):
            raise fail(f"{w}params", "expected a mapping")
        oparams: dict[str, Any] = {}
        for key, val in raw_params.items():
            if key not in allowed:
                raise fail(f"{w}params.{key}", f"unknown for {otype}; allowed: {sorted(allowed) or 'none'}")
            typ = allowed[key]
            if typ is float and isinstance(val, int) and not isinstance(val, bool):
                val = float(val)
            if not isinstance(val, typ) or (isinstance(val, bool) and typ is not bool):
                raise fail(f"{w}params.{key}", f"expected {getattr(typ, '__name__', typ)}, got {val!r}")
            if typ is float and not (math.isfinite(val) and val >= 0):
                raise fail(f"{w}params.{key}", f"must be finite and >= 0, got {val}")
            oparams[key] = val
        covered |= set(odims)
        idx = tuple(by_name[dn] for dn in odims)
        outputs.append(Output(oname, topic, otype, tuple(odims), idx,
                              tuple(dims[j].joint or dims[j].name for j in idx), ro.get("group"), oparams))
    missing = [d.name for d in dims if d.name not in covered]
    if missing:
        raise fail("outputs", f"dims not sent to any output: {missing}")

    return Embodiment(
        name=name,
        description=str(data.get("description", "")),
        asset_id=str(data.get("asset_id", name)),
        control_rate_hz=float(rate),
        execute_steps=execute_steps,
        cameras=tuple(cameras),
        joint_state_sources=dict(sources),
        odometry_topic=data.get("odometry_topic") or None,
        dims=tuple(dims),
        outputs=tuple(outputs),
        source_file=source,
    )
