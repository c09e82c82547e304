"""bag2dataset labels from multi-point JointTrajectory commands: each point at its own time."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np

from pi0_ros.data.bag_read import Series, _add_command
from pi0_ros.robots.embodiment import load_embodiment

EMB = load_embodiment("ur5e")
ARM = EMB.outputs[0]
KINDS = {d.name: d.kind for d in EMB.dims}


def traj(stamp_ns: int, times_s, values):
    pts = [NS(positions=[v] * 6, time_from_start=NS(sec=int(t), nanosec=int(round((t % 1) * 1e9))))
           for t, v in zip(times_s, values)]
    return NS(header=NS(stamp=NS(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)),
              joint_names=list(ARM.joint_names), points=pts)


def test_each_point_at_its_time_and_a_newer_trajectory_replaces_the_rest():
    commands = {dn: Series(ARM.topic) for dn in ARM.dims}
    t0 = 10 * 10**9
    _add_command(Path("bag"), ARM, traj(t0, [0.05, 0.10, 0.15, 0.20], [1, 2, 3, 4]), t0, commands, KINDS)
    t1 = t0 + 100_000_000  # a new chunk 0.1 s later: its first point at 0.15 s replaces 3 and 4
    _add_command(Path("bag"), ARM, traj(t1, [0.05, 0.10], [30, 40]), t1, commands, KINDS)
    t, v = commands[ARM.dims[0]].arrays()
    np.testing.assert_array_equal(t - t0, [50_000_000, 100_000_000, 150_000_000, 200_000_000])
    np.testing.assert_array_equal(v, [1, 2, 30, 40])


def test_unstamped_single_point_is_labelled_at_receipt():
    commands = {dn: Series(ARM.topic) for dn in ARM.dims}
    _add_command(Path("bag"), ARM, traj(0, [0.05, 0.1], [7, 8]), 123, commands, KINDS)
    t, v = commands[ARM.dims[0]].arrays()
    assert t.tolist() == [123] and v.tolist() == [7]
