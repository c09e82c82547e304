"""joint_trajectory_controller as the robot runs it: acceptance rules and sampling (ROS-free).

A stand-in for ros2_control's JointTrajectoryController (ros-controls/ros2_controllers,
joint_trajectory_controller/src/joint_trajectory_controller.cpp `validate_trajectory_msg`,
`fill_partial_goal`, `preempt_active_goal`; src/trajectory.cpp `Trajectory::sample`), used by the
simulator and by tests, so every trajectory we send is checked against the rules the real
controller applies (Jazzy and later):

- joint_names non-empty; every name one of the controller's joints (any order: JTC maps by name);
  all controller joints unless ``allow_partial_joints_goal`` (missing joints hold, zero velocity);
- at least one point; per point ``positions`` sized like joint_names (velocities/accelerations
  empty or that size); no ``effort`` unless the controller commands effort;
- ``time_from_start`` strictly increasing;
- last point's velocities all |v| <= float epsilon unless ``allow_nonzero_velocity_at_trajectory_end``
  (default false, and neither UR's nor franka_ros2's controller configs override it);
- header.stamp 0 means "start now" (the first update that samples it); a non-zero stamp whose
  end (stamp + last time_from_start) lies before now is rejected.

An accepted trajectory replaces the active one ("always replace old msg with new one"). Sampling
follows ``Trajectory::sample``: before the first point it interpolates from the set point held
when the trajectory was taken in to the first point; between points it interpolates each segment
(cubic Hermite when both points carry velocities -- JTC's default "splines" interpolation for
position+velocity points; linear for positions only; accelerations are not used because we never
send them); after the last point it holds the last point.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["JtcParams", "JtcEmulator", "TrajectoryPoint", "TrajectorySpec", "FLOAT_EPS"]

# JTC compares end velocities with std::numeric_limits<float>::epsilon().
FLOAT_EPS = float(np.finfo(np.float32).eps)


def _duration_s(d: object) -> float:
    return float(getattr(d, "sec")) + float(getattr(d, "nanosec")) * 1e-9


@dataclass(frozen=True)
class TrajectoryPoint:
    """One trajectory_msgs/JointTrajectoryPoint: time_from_start s, fields in joint_names order."""

    time_from_start: float
    positions: tuple[float, ...] = ()
    velocities: tuple[float, ...] = ()
    accelerations: tuple[float, ...] = ()
    effort: tuple[float, ...] = ()


@dataclass(frozen=True)
class TrajectorySpec:
    """A trajectory_msgs/JointTrajectory without ROS: stamp s (0.0 = start now), points."""

    joint_names: tuple[str, ...]
    stamp: float
    points: tuple[TrajectoryPoint, ...]

    @classmethod
    def from_msg(cls, msg: object) -> "TrajectorySpec":
        """From a trajectory_msgs/msg/JointTrajectory (read by attribute: no ROS import here)."""
        pts = tuple(
            TrajectoryPoint(_duration_s(p.time_from_start), tuple(p.positions), tuple(p.velocities),
                            tuple(p.accelerations), tuple(p.effort))
            for p in msg.points)  # type: ignore[attr-defined]
        return cls(tuple(msg.joint_names), _duration_s(msg.header.stamp), pts)  # type: ignore[attr-defined]

    @classmethod
    def from_arrays(cls, joint_names: Sequence[str], stamp: float, times: np.ndarray,
                    positions: np.ndarray, velocities: np.ndarray | None = None) -> "TrajectorySpec":
        """times (K,), positions (K, m), velocities (K, m) or None."""
        pts = tuple(
            TrajectoryPoint(float(times[k]), tuple(map(float, positions[k])),
                            () if velocities is None else tuple(map(float, velocities[k])))
            for k in range(len(times)))
        return cls(tuple(joint_names), float(stamp), pts)


@dataclass(frozen=True)
class JtcParams:
    """The JTC parameters that decide acceptance (names as in joint_trajectory_controller_parameters.yaml)."""

    joints: tuple[str, ...]
    allow_partial_joints_goal: bool = False
    allow_nonzero_velocity_at_trajectory_end: bool = False
    allow_integration_in_goal_trajectories: bool = False
    effort_command_interface: bool = False


def validate(params: JtcParams, traj: TrajectorySpec, now: float) -> str | None:
    """None when JTC would accept ``traj`` at time ``now`` (s); else the reason it logs."""
    names = traj.joint_names
    if not params.allow_partial_joints_goal and len(names) != len(params.joints):
        return "Joints on incoming trajectory don't match the controller joints."
    if not names:
        return "Empty joint names on incoming trajectory."
    if not traj.points:
        return "Empty trajectory received."
    for n in names:
        if n not in params.joints:
            return f"Incoming joint {n} doesn't match the controller's joints."
    if not params.allow_nonzero_velocity_at_trajectory_end:
        for i, v in enumerate(traj.points[-1].velocities):
            if abs(v) > FLOAT_EPS:
                name = names[i] if i < len(names) else f"#{i}"
                return f"Velocity of last trajectory point of joint {name} is not zero: {v:.15f}"
    if traj.stamp != 0.0 and traj.stamp + traj.points[-1].time_from_start < now:
        return (f"Received trajectory with non-zero start time ({traj.stamp:f}) that ends in the past "
                f"({traj.stamp + traj.points[-1].time_from_start:f})")
    m = len(names)
    prev = 0.0
    for i, p in enumerate(traj.points):
        if i > 0 and p.time_from_start <= prev:
            return (f"Time between points {i - 1} and {i} is not strictly increasing, it is {prev:f} "
                    f"and {p.time_from_start:f} respectively")
        prev = p.time_from_start
        fields = (("positions", p.positions), ("velocities", p.velocities), ("accelerations", p.accelerations))
        if params.allow_integration_in_goal_trajectories:
            if not (p.positions or p.velocities or p.accelerations):
                return "The given trajectory has no position, velocity, or acceleration points."
            bad = [f for f, v in fields if v and len(v) != m]
        else:
            bad = [f for f, v in fields if (len(v) != m if f == "positions" else v and len(v) != m)]
        if bad:
            return f"Mismatch between joint_names size ({m}) and {bad[0]} at point #{i}."
        if p.effort and not params.effort_command_interface:
            return ("Trajectories with effort fields are only supported for controllers using the "
                    "'effort' command interface.")
    return None


def _hermite(t0: float, p0: np.ndarray, v0: np.ndarray, t1: float, p1: np.ndarray, v1: np.ndarray,
             t: float) -> tuple[np.ndarray, np.ndarray]:
    """Cubic through (t0, p0, v0) and (t1, p1, v1) at t in [t0, t1]: (position, velocity), (m,) each."""
    h = t1 - t0
    s = (t - t0) / h
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
    pos = h00 * p0 + h10 * h * v0 + h01 * p1 + h11 * h * v1
    vel = (d00 * p0 + d10 * h * v0 + d01 * p1 + d11 * h * v1) / h
    return pos, vel


@dataclass
class _Active:
    start: float                 # s, absolute (stamp, or the time it was taken in when stamp 0)
    times: np.ndarray            # (K,)
    positions: np.ndarray        # (K, n) controller joint order
    velocities: np.ndarray | None  # (K, n) or None (positions only: linear)
    before_t: float              # time the trajectory was taken in
    before_p: np.ndarray         # (n,) set point then
    before_v: np.ndarray         # (n,)


class JtcEmulator:
    """One joint_trajectory_controller: accept or reject trajectories, sample set points over time."""

    def __init__(self, params: JtcParams, initial_positions: Sequence[float]) -> None:
        self.params = params
        self._hold = np.asarray(initial_positions, dtype=np.float64).copy()  # (n,)
        if self._hold.shape != (len(params.joints),):
            raise ValueError(f"initial_positions must have {len(params.joints)} values")
        self._active: _Active | None = None
        self.accepted = 0
        self.rejected = 0
        self.last_rejection: str | None = None

    @property
    def joints(self) -> tuple[str, ...]:
        return self.params.joints

    def reset(self, positions: Sequence[float]) -> None:
        """Drop the active trajectory and hold ``positions`` (n,) (a controller restart)."""
        self._hold = np.asarray(positions, dtype=np.float64).copy()
        self._active = None

    def submit(self, traj: TrajectorySpec, now: float) -> str | None:
        """Validate and, when accepted, replace the active trajectory. None = accepted, else the reason."""
        reason = validate(self.params, traj, now)
        if reason is not None:
            self.rejected += 1
            self.last_rejection = reason
            return reason
        p_now, v_now = self._state(now)
        n = len(self.params.joints)
        col = {name: i for i, name in enumerate(traj.joint_names)}
        k = len(traj.points)
        pos = np.repeat(p_now[None, :], k, axis=0)    # fill_partial_goal: missing joints hold
        has_vel = all(len(p.velocities) == len(traj.joint_names) for p in traj.points)
        vel = np.zeros((k, n)) if has_vel else None
        for j, name in enumerate(self.params.joints):
            if name not in col:
                continue
            c = col[name]
            pos[:, j] = [p.positions[c] for p in traj.points]
            if vel is not None:
                vel[:, j] = [p.velocities[c] for p in traj.points]
        times = np.array([p.time_from_start for p in traj.points], dtype=np.float64)
        start = traj.stamp if traj.stamp != 0.0 else now
        self._active = _Active(start, times, pos, vel, now, p_now, v_now)
        self.accepted += 1
        return None

    def sample(self, t: float) -> np.ndarray:
        """(n,) set point the controller commands at time t (s), controller joint order."""
        return self._state(t)[0]

    def end_time(self) -> float | None:
        """s, when the active trajectory reaches its last point (None when holding)."""
        a = self._active
        return None if a is None else a.start + float(a.times[-1])

    def _state(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        a = self._active
        zeros = np.zeros_like(self._hold)
        if a is None or t < a.before_t:
            return self._hold.copy(), zeros
        abs_t = a.start + a.times
        vel = a.velocities
        if t < abs_t[0]:
            if vel is None:
                s = (t - a.before_t) / (abs_t[0] - a.before_t)
                return a.before_p + s * (a.positions[0] - a.before_p), zeros
            return _hermite(a.before_t, a.before_p, a.before_v, abs_t[0], a.positions[0], vel[0], t)
        if t >= abs_t[-1]:
            self._hold = a.positions[-1].copy()
            last_v = vel[-1] if vel is not None else zeros
            return self._hold.copy(), last_v.copy()
        i = int(np.searchsorted(abs_t, t, side="right")) - 1
        t0, t1 = abs_t[i], abs_t[i + 1]
        if vel is None:
            s = (t - t0) / (t1 - t0)
            return a.positions[i] + s * (a.positions[i + 1] - a.positions[i]), zeros
        return _hermite(t0, a.positions[i], vel[i], t1, a.positions[i + 1], vel[i + 1], t)
