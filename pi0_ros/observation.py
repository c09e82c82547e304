"""Observation assembly: time sync + image preprocessing + state vector (ROS-free).

The observation node feeds every incoming message here (already decoded to numpy) and asks
at its publish rate for the newest synchronised observation. Cameras are queue inputs (one
frame each per observation, all within `slop`); joint states and odometry are
sample-and-hold inputs (the sample nearest to the camera set). Stale inputs (older than their
max age at `now`) block the observation and are named in the reason, so the policy pauses
instead of acting on old data.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pi0_ros.images import resize_with_pad
from pi0_ros.robots.embodiment import Embodiment, JointStateError, joint_state_positions
from pi0_ros.sync import ApproximateTimeSync, InputSpec, StaleInput

ODOM = "odom"


def camera_input(slot: str) -> str:
    return f"camera:{slot}"


def joints_input(source: str) -> str:
    return f"joints:{source}"


@dataclass(frozen=True)
class ObservationConfig:
    slop: float = 0.05             # s, max spread of camera stamps / joint sample distance
    camera_max_age: float = 0.5    # s, older camera frames are stale
    joint_max_age: float = 0.25    # s
    odom_max_age: float = 0.25     # s
    image_size: int = 224          # pixels, square model input (resize with padding)
    camera_queue: int = 10
    joint_queue: int = 400         # 500 Hz joint states need >= slop + camera latency of history
    cameras_optional: bool = False  # True: a missing camera is masked instead of blocking
    odom_twist_in_world: bool = False  # True: rotate odometry twist into the base frame by yaw


@dataclass
class AssembledObservation:
    t_obs: float                         # s, newest stamp of the synchronised set
    images: dict[str, np.ndarray]        # camera slot -> (S, S, 3) uint8 RGB, valid cameras only
    image_valid: dict[str, bool]         # every embodiment camera slot
    state: np.ndarray                    # (n,) robot units, embodiment dim order
    input_stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class AssembleResult:
    observation: AssembledObservation | None
    reason: str                          # "ok" or why there is no observation
    stale: tuple[StaleInput, ...] = ()


class ObservationAssembler:
    """Synchronise an embodiment's cameras, joint states and odometry into observations."""

    def __init__(self, embodiment: Embodiment, config: ObservationConfig = ObservationConfig()) -> None:
        self.embodiment = embodiment
        self.config = config
        specs = [InputSpec(camera_input(c.slot), optional=config.cameras_optional, queue_size=config.camera_queue,
                           max_age=config.camera_max_age) for c in embodiment.cameras]
        specs += [InputSpec(joints_input(s), sample_and_hold=True, queue_size=config.joint_queue,
                            max_age=config.joint_max_age) for s in embodiment.joint_state_sources]
        if embodiment.odometry_topic:
            specs.append(InputSpec(ODOM, sample_and_hold=True, queue_size=config.joint_queue, max_age=config.odom_max_age))
        if not embodiment.cameras:
            raise ValueError(f"{embodiment.name}: needs at least one camera to anchor observations in time")
        self.sync = ApproximateTimeSync(specs, slop=config.slop)
        self._resized: dict[str, tuple[float, np.ndarray]] = {}  # slot -> (stamp, image) cache
        self.rejected: dict[str, int] = {}

    def add_image(self, slot: str, stamp: float, rgb: np.ndarray) -> None:
        """rgb: (H, W, 3) uint8 of any size; resized only if it ends up in an observation."""
        self.sync.add(camera_input(slot), stamp, rgb)

    def add_joint_state(self, source: str, stamp: float, names: Sequence[str], positions: Sequence[float]) -> None:
        """Raises JointStateError (and counts it) for mismatched lengths, duplicates or NaN."""
        try:
            pos = joint_state_positions(list(names), positions)
        except JointStateError:
            self.rejected[joints_input(source)] = self.rejected.get(joints_input(source), 0) + 1
            raise
        self.sync.add(joints_input(source), stamp, pos)

    def add_odometry(self, stamp: float, vx: float, vy: float, wz: float,
                     quaternion_wxyz: Sequence[float] | None = None) -> None:
        """Base twist (m/s, m/s, rad/s). With odom_twist_in_world the twist is rotated into the
        base frame by the yaw of `quaternion_wxyz` (transforms3d convention w, x, y, z)."""
        vals = (vx, vy, wz)
        if not all(math.isfinite(v) for v in vals):
            self.rejected[ODOM] = self.rejected.get(ODOM, 0) + 1
            raise JointStateError(f"odometry twist is not finite: {vals}")
        if self.config.odom_twist_in_world and quaternion_wxyz is not None:
            from transforms3d.euler import quat2euler

            yaw = quat2euler(quaternion_wxyz, "sxyz")[2]
            c, s = math.cos(yaw), math.sin(yaw)
            vx, vy = c * vx + s * vy, -s * vx + c * vy
        self.sync.add(ODOM, stamp, {"base_vx": vx, "base_vy": vy, "base_wz": wz})

    def staleness(self, now: float) -> tuple[StaleInput, ...]:
        return self.sync.staleness(now)

    def assemble(self, now: float) -> AssembleResult:
        res = self.sync.latest_synchronised(now)
        if res is None:
            return AssembleResult(None, self.sync.last_reason, self.sync.staleness(now))
        if not res.fresh:
            return AssembleResult(None, self.sync.last_reason, res.stale)
        emb = self.embodiment
        positions = {s: res.payloads[joints_input(s)] for s in emb.joint_state_sources}
        try:
            state = emb.state_from_joints(positions, res.payloads.get(ODOM))
        except JointStateError as e:
            return AssembleResult(None, str(e))
        images: dict[str, np.ndarray] = {}
        valid: dict[str, bool] = {}
        for cam in emb.cameras:
            name = camera_input(cam.slot)
            if name not in res.payloads:
                valid[cam.slot] = False
                continue
            stamp = res.stamps[name]
            cached = self._resized.get(cam.slot)
            if cached is None or cached[0] != stamp:
                size = self.config.image_size
                cached = (stamp, resize_with_pad(res.payloads[name], size, size))
                self._resized[cam.slot] = cached
            images[cam.slot] = cached[1]
            valid[cam.slot] = True
        obs = AssembledObservation(res.t_obs, images, valid, state, dict(res.stamps))
        return AssembleResult(obs, "ok")
