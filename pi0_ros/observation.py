"""Observation assembly: time sync + image preprocessing + state vector (ROS-free).

The observation node feeds every incoming message here (already decoded to numpy) and asks
at its publish rate for the newest synchronised observation. Cameras are queue inputs (one
frame each per observation, all within `slop`); joint states and odometry are
sample-and-hold inputs (the sample nearest to the camera set). Stale inputs (older than their
max age at `now`) block the observation and are named in the reason, so the policy pauses
instead of acting on old data.

Joint states are merged by name: several publishers may share one JointState topic (an arm
driver and a separate gripper driver on /joint_states), each sending only its own joints. So
every needed joint is its own sample-and-hold input ("joints:<source>/<joint>"): it takes the
sample nearest to the camera set from the messages that carried *that* joint, goes stale by
itself when it stops arriving, and the source's stamp in the observation is the newest stamp
among its joints' samples. `InputHealth` tells stale inputs (stopped delivering) from missing
ones (never delivered; for a joint: with what the source does deliver, e.g. `panda_joint1`
where the YAML says `fr3_joint1`). After `wait_for_inputs(now)` (node start) or
`clear(since, now)` (a new episode) every input has its max_age from `now` to (re)appear before
it is reported: then it is stale if it had delivered before, missing if it never did.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pi0_ros.images import model_image
from pi0_ros.joint_merge import JointMerge
from pi0_ros.robots.embodiment import Embodiment, JointStateError
from pi0_ros.sync import ApproximateTimeSync, InputSpec, StaleInput
from pi0_ros.throttle import reason_key

ODOM = "odom"


def camera_input(slot: str) -> str:
    return f"camera:{slot}"


def joints_input(source: str) -> str:
    """A JointState source as a whole (its stamp in observations, its rejection counter)."""
    return f"joints:{source}"


def joint_input(source: str, joint: str) -> str:
    """One joint of a source: the unit of synchronisation and staleness."""
    return f"joints:{source}/{joint}"


@dataclass(frozen=True)
class MissingInput:
    """A required input that never delivered: a camera, a whole JointState source, or one
    joint that its source does not publish (`has` then lists what the source does publish)."""

    name: str                    # input name: camera:<slot>, joints:<source>[/<joint>], odom
    topic: str
    joint: str | None = None     # the joint, when the source delivers but not this joint
    source: str = ""             # its JointState source (joint inputs only)
    has: tuple[str, ...] = ()    # joints the source does deliver (joint inputs only)

    def describe(self) -> str:
        if self.joint is None:
            return f"{self.name} ({self.topic}): nothing received yet"
        return _describe_missing_joints(self.source, self.topic, self.has, [self.joint])


@dataclass(frozen=True)
class InputHealth:
    """Which required inputs stop observations now, and why (for diagnostics and the policy)."""

    stale: tuple[StaleInput, ...] = ()       # delivered, but the newest message is too old
    missing: tuple[MissingInput, ...] = ()   # never delivered
    masked: tuple[str, ...] = ()             # optional cameras left out (observations still flow)
    topics: dict[str, str] = field(default_factory=dict)  # input name -> topic

    @property
    def ok(self) -> bool:
        return not self.stale and not self.missing

    @property
    def problem_inputs(self) -> tuple[str, ...]:
        """Names of the inputs that stop observations (stale first, then missing)."""
        return tuple(s.name for s in self.stale) + tuple(m.name for m in self.missing)

    def describe(self) -> str:
        """One line naming every problem input with its topic; "ok" when there is none."""
        parts = []
        if self.stale:
            parts.append("stale: " + ", ".join(
                f"{s.name} ({self.topics.get(s.name, '?')}) late by {s.late_by:.3f} s "
                f"({s.age:.3f} s old > {s.max_age:g} s)" for s in self.stale))
        if self.missing:
            # Joints missing from one source are usually one naming mismatch: say it once.
            groups: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
            texts: list[str | tuple[str, str, tuple[str, ...]]] = []
            for m in self.missing:
                if m.joint is None:
                    texts.append(m.describe())
                    continue
                g = (m.source, m.topic, m.has)
                if g not in groups:
                    groups[g] = []
                    texts.append(g)
                groups[g].append(m.joint)
            parts.append("missing: " + "; ".join(t if isinstance(t, str) else _describe_missing_joints(*t, groups[t])
                                                 for t in texts))
        return "; ".join(parts) or "ok"


def _describe_missing_joints(source: str, topic: str, has: tuple[str, ...], joints: list[str]) -> str:
    shown = ", ".join(has[:12]) + (f", ... (+{len(has) - 12})" if len(has) > 12 else "")
    names = ", ".join(f"'{j}'" for j in joints)
    return (f"joint{'s' if len(joints) > 1 else ''} {names} of source '{source}' not in the messages on {topic}, "
            f"which carry: {shown}")


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
    missing: tuple[MissingInput, ...] = ()


@dataclass(frozen=True)
class InputStatus:
    """What the observation node reports on `observation_status` (the policy pauses on it)."""

    ok: bool
    message: str                 # "ok", or why observations stopped, naming inputs and topics
    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    key: tuple[str, ...] = ()    # changes only when the problem does (ages in `message` do not count)


def input_status(result: AssembleResult, idle_for: float, max_idle: float) -> InputStatus:
    """The input status after one assembly.

    Stale or missing inputs stop observations at once. A reason that names no input (live
    inputs whose stamps do not align within slop, a joint sample just outside slop) only
    counts once there has been no observation for `max_idle` s (`idle_for`: s since the last
    published observation or reset), so a single late sample never flips the policy to PAUSED.
    """
    stale = tuple(s.name for s in result.stale)
    missing = tuple(m.name for m in result.missing)
    if stale or missing:
        return InputStatus(False, result.reason, stale, missing, stale + missing)
    if result.reason != "ok" and idle_for > max_idle:
        return InputStatus(False, f"no observation for {idle_for:.3f} s: {result.reason}",
                           key=(reason_key(result.reason),))
    return InputStatus(True, "ok")


class ObservationAssembler:
    """Synchronise an embodiment's cameras, joint states and odometry into observations."""

    def __init__(self, embodiment: Embodiment, config: ObservationConfig = ObservationConfig()) -> None:
        self.embodiment = embodiment
        self.config = config
        specs = [InputSpec(camera_input(c.slot), optional=config.cameras_optional, queue_size=config.camera_queue,
                           max_age=config.camera_max_age) for c in embodiment.cameras]
        # Every joint the state needs is its own hold input (see the module docstring).
        self._needed: dict[str, tuple[str, ...]] = {
            src: joints for src in embodiment.joint_state_sources
            if (joints := tuple(dict.fromkeys(d.joint for d in embodiment.dims if d.source == src and d.joint)))
        }
        specs += [InputSpec(joint_input(src, j), sample_and_hold=True, queue_size=config.joint_queue,
                            max_age=config.joint_max_age) for src, joints in self._needed.items() for j in joints]
        if embodiment.odometry_topic:
            specs.append(InputSpec(ODOM, sample_and_hold=True, queue_size=config.joint_queue, max_age=config.odom_max_age))
        if not embodiment.cameras:
            raise ValueError(f"{embodiment.name}: needs at least one camera to anchor observations in time")
        self.sync = ApproximateTimeSync(specs, slop=config.slop)
        self.joints = JointMerge()  # what each source delivers, by name (for missing-joint reports)
        self.topics: dict[str, str] = {camera_input(c.slot): c.topic for c in embodiment.cameras}
        for src, topic in embodiment.joint_state_sources.items():
            self.topics[joints_input(src)] = topic
            self.topics.update({joint_input(src, j): topic for j in self._needed.get(src, ())})
        if embodiment.odometry_topic:
            self.topics[ODOM] = embodiment.odometry_topic
        self._resized: dict[str, tuple[float, np.ndarray]] = {}  # slot -> (stamp, image) cache
        self.rejected: dict[str, int] = {}
        # Survive clear(): what each input / source ever delivered, so that a reset is not
        # mistaken for a driver that is missing (and what a source has can still be named).
        self._delivered: set[str] = set()
        self._seen_names: dict[str, set[str]] = {src: set() for src in embodiment.joint_state_sources}
        self._grace_from: float | None = None  # see wait_for_inputs

    def add_image(self, slot: str, stamp: float, rgb: np.ndarray) -> None:
        """rgb: (H, W, 3) uint8 of any size; resized only if it ends up in an observation."""
        if self.sync.add(camera_input(slot), stamp, rgb):
            self._delivered.add(camera_input(slot))

    def add_joint_state(self, source: str, stamp: float, names: Sequence[str], positions: Sequence[float],
                        received: float | None = None) -> None:
        """Merge one JointState message (it may carry only some of the source's joints).

        received: receipt time (s, same clock as `now`; default: the stamp).
        Raises JointStateError (and counts it) for mismatched lengths, duplicates, NaN or a
        non-finite stamp; nothing of such a message is used.
        """
        try:
            if not math.isfinite(stamp):
                raise JointStateError(f"JointState stamp is not finite ({stamp})")
            self.joints.update(source, names, positions, stamp, stamp if received is None else received)
        except JointStateError:
            self.rejected[joints_input(source)] = self.rejected.get(joints_input(source), 0) + 1
            raise
        self._seen_names[source].update(names)
        needed = self._needed.get(source, ())
        for name, p in zip(names, positions):
            # Every sample goes to the joint's queue, even one older than the merged value:
            # the queue is sorted by stamp and sync picks the one nearest the camera set.
            if name in needed and self.sync.add(joint_input(source, name), stamp, float(p)):
                self._delivered.add(joint_input(source, name))

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
        if self.sync.add(ODOM, stamp, {"base_vx": vx, "base_vy": vy, "base_wz": wz}):
            self._delivered.add(ODOM)

    def clear(self, since: float = -math.inf, now: float | None = None) -> None:
        """Forget every input (new episode, time jump); ignore messages stamped before `since`.

        now: the time of the clear (clock of `assemble`'s now). Inputs that delivered before
        then have their max_age from `now` to deliver again before they count as stale; without
        it they are reported as missing until they do.
        """
        self.sync.clear(since)
        self.joints.clear(since)
        self._grace_from = now

    def wait_for_inputs(self, now: float) -> None:
        """Inputs are expected from `now` on (node start): none is reported as missing or stale
        before its max_age has passed, so drivers starting together do not raise alarms."""
        self._grace_from = now

    def staleness(self, now: float) -> tuple[StaleInput, ...]:
        return self.health(now).stale

    def health(self, now: float) -> InputHealth:
        """Which required inputs stop observations at `now`: stale ones and missing ones."""
        stale: list[StaleInput] = []
        masked: list[str] = []
        missing: dict[str, MissingInput] = {}  # by name: one entry for a source that sent nothing
        optional = {camera_input(c.slot) for c in self.embodiment.cameras} if self.config.cameras_optional else set()
        for s in self.sync.staleness(now):
            if s.name in optional:
                masked.append(s.name)
            elif math.isfinite(s.age):
                stale.append(s)
            elif self._grace_from is not None and now - self._grace_from <= s.max_age:
                continue  # nothing since start / the last clear, but it still has time to come
            elif s.name in self._delivered and self._grace_from is not None:
                # It did deliver before the last clear: it stopped (a reset is not a missing driver).
                stale.append(StaleInput(s.name, now - self._grace_from, s.max_age))
            else:
                m = self._missing(s.name)
                missing[m.name] = m
        return InputHealth(tuple(stale), tuple(missing.values()), tuple(masked), self.topics)

    def _missing(self, name: str) -> MissingInput:
        """Describe a required input that never delivered (see MissingInput)."""
        topic = self.topics.get(name, "?")
        for src, joints in self._needed.items():
            for j in joints:
                if name == joint_input(src, j):
                    has = self.joints.names(src) or tuple(sorted(self._seen_names[src]))
                    if not has or j in has:  # the source sent nothing (since the last clear)
                        return MissingInput(joints_input(src), topic)
                    return MissingInput(name, topic, j, src, has)
        return MissingInput(name, topic)

    def assemble(self, now: float) -> AssembleResult:
        res = self.sync.latest_synchronised(now)
        if res is None or not res.fresh:
            health = self.health(now)
            # Name the inputs that stopped or never came; the sync's own reason only when all
            # inputs are live (e.g. their stamps no longer align within slop).
            reason = self.sync.last_reason if health.ok else health.describe()
            return AssembleResult(None, reason, health.stale, health.missing)
        emb = self.embodiment
        positions = {src: {j: res.payloads[joint_input(src, j)] for j in joints}
                     for src, joints in self._needed.items()}
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
                cached = (stamp, model_image(res.payloads[name], cam.crop, self.config.image_size))
                self._resized[cam.slot] = cached
            images[cam.slot] = cached[1]
            valid[cam.slot] = True
        # One stamp per source: the newest message that contributed one of its joints.
        stamps = {n: t for n, t in res.stamps.items() if not n.startswith("joints:")}
        for src, joints in self._needed.items():
            stamps[joints_input(src)] = max(res.stamps[joint_input(src, j)] for j in joints)
        obs = AssembledObservation(res.t_obs, images, valid, state, stamps)
        return AssembleResult(obs, "ok")
