"""Multi-point joint trajectories for trajectory controllers (ROS-free).

A robot whose arm is driven by ros2_control's joint_trajectory_controller (UR's
scaled_joint_trajectory_controller, franka_ros2, ...) gets the executable rest of a chunk as ONE
trajectory: one point per action at its time-aligned offset, re-sent when a newer chunk takes
over. The controller interpolates at its own 500 Hz-1 kHz, so Python timing jitter never reaches
the motors. Every point passes the same safety rules as a streamed command.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Trajectory", "TRAJECTORY_TYPES", "plan_trajectory", "hold_trajectory"]


@dataclass(frozen=True)
class Trajectory:
    """A safe trajectory over ALL robot dims (outputs pick their columns).

    start: s, executor clock; the time `times` are measured from (JointTrajectory header.stamp).
    times: (K,) s from `start` (time_from_start), strictly increasing, > 0.
    positions: (K, n) robot units, finite, within limits, each step within the step limit.
    velocities: (K, n) units/s, consistent with the points; the last row is exactly 0.
    hold: True when this trajectory only holds still (one point, zero velocity).
    """

    start: float
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    hold: bool = False

    @property
    def num_points(self) -> int:
        """K."""
        return int(self.times.shape[0])

    @property
    def end(self) -> float:
        """s, executor clock: when the last point is reached."""
        return self.start + float(self.times[-1])


# Output message types whose controller executes whole trajectories (joint_trajectory_controller).
TRAJECTORY_TYPES: frozenset[str] = frozenset((
    "trajectory_msgs/msg/JointTrajectory",
    "control_msgs/action/FollowJointTrajectory",
))


def plan_trajectory(start: float, current: np.ndarray, t_points: np.ndarray, targets: np.ndarray,
                    low: np.ndarray, high: np.ndarray, max_velocity: np.ndarray) -> Trajectory:
    """The safe trajectory through `targets` starting from the command `current` at `start`.

    current: (n,) the command in force at `start` (the controller's desired state).
    t_points: (K,) s, absolute times (executor clock) the targets are meant for; K >= 1, each
        > start and strictly increasing.
    targets: (K, n) robot units (the chunk's actions for those times).
    low, high, max_velocity: (n,) the safety limits.

    Every point is clamped to [low, high] and moves at most max_velocity * (its time step)
    from the previous point (the first from `current`): the streamed step limit, per point.
    Velocities are central differences of the safe points (|v| <= max_velocity), 0 at the end,
    so joint_trajectory_controller accepts the trajectory and comes to rest at its end.
    """
    t_points = np.asarray(t_points, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    k = t_points.shape[0]
    if k < 1 or targets.shape != (k, current.shape[0]):
        raise ValueError(f"targets {targets.shape} must be (K>=1, {current.shape[0]}) for {k} times")
    times = t_points - start
    if not (np.isfinite(times).all() and times[0] > 0.0 and (np.diff(times) > 0.0).all()):
        raise ValueError(f"trajectory times must be finite, > 0 and strictly increasing, got {times}")
    if not np.isfinite(targets).all():
        raise ValueError("trajectory targets must be finite")
    pos = np.empty_like(targets)
    prev, prev_t = np.asarray(current, dtype=np.float64), 0.0
    for i in range(k):
        step = max_velocity * (times[i] - prev_t)
        p = np.clip(targets[i], low, high)
        p = np.clip(prev + np.clip(p - prev, -step, step), low, high)
        pos[i] = p
        prev, prev_t = p, times[i]
    # Central differences with `current` at t=0 as the point before the first.
    before = np.vstack([current[None], pos[:-1]])
    t_before = np.concatenate([[0.0], times[:-1]])
    after = np.vstack([pos[1:], pos[-1:]])
    t_after = np.concatenate([times[1:], times[-1:]])
    span = np.maximum(t_after - t_before, 1e-9)[:, None]
    vel = np.clip((after - before) / span, -max_velocity, max_velocity)
    vel[-1] = 0.0
    return Trajectory(start=float(start), times=times, positions=pos, velocities=vel)


def hold_trajectory(start: float, position: np.ndarray, dt: float) -> Trajectory:
    """Stop at `position` (n,): one point `dt` after `start`, zero velocity (the controller
    stops interpolating the previous trajectory and holds)."""
    p = np.asarray(position, dtype=np.float64)[None].copy()
    return Trajectory(start=float(start), times=np.array([float(dt)]), positions=p, velocities=np.zeros_like(p),
                      hold=True)
