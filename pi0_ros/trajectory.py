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

__all__ = ["Trajectory"]


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
