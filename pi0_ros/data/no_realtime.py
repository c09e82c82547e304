"""Keep a data tool off real-time scheduling (ROS-free, Linux; a no-op elsewhere).

SVT-AV1 (libsvtav1, LeRobot's video encoder, in PyAV's wheels) moves the thread that opens an
encoder, and the worker threads it starts, to SCHED_FIFO priority 99 when the process may (as root,
e.g. in a container on the robot's computer). The conversion then keeps those threads there: busy
encoder or OpenMP threads at FIFO 99 starve everything below them, the robot's control loop
included, and on 2 cores they livelock the process itself (a CI run hung that way). A dataset
converter is batch work, so the threads the encoder made real-time go back to normal scheduling.
"""
from __future__ import annotations

import os

_REALTIME = tuple(getattr(os, n) for n in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, n))


def _tasks() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # pragma: no cover - not Linux
        return []


def realtime_threads() -> set[int]:
    """Thread ids of this process at SCHED_FIFO or SCHED_RR."""
    if not hasattr(os, "sched_getscheduler"):  # pragma: no cover - not Linux
        return set()
    out = set()
    for tid in _tasks():
        try:
            if os.sched_getscheduler(tid) in _REALTIME:
                out.add(tid)
        except OSError:  # the thread ended meanwhile
            pass
    return out


def demote_new_realtime_threads(before: set[int]) -> list[int]:
    """Put every real-time thread not in ``before`` back to SCHED_OTHER; returns their ids."""
    demoted = []
    for tid in realtime_threads() - before:
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            demoted.append(tid)
        except OSError:  # pragma: no cover - ended meanwhile, or not permitted
            pass
    return demoted
