"""MuJoCo simulation behind the same interfaces as the real robots (ROS-free).

- :mod:`pi0_ros.sim.scenes`: build MJCF scenes (robot from the installed asset wheels, table,
  objects, cameras) and bind them to an embodiment's dims.
- :mod:`pi0_ros.sim.env`: :class:`SimEnv`, a stepping/rendering environment that speaks robot
  units (the embodiment YAML's joint names and gripper constants).
- :mod:`pi0_ros.sim.tasks`: language-conditioned tasks (prompt -> target, success check);
  :mod:`pi0_ros.sim.stack_task`: the stacking task.
- :mod:`pi0_ros.sim.expert`: scripted experts (IK waypoint planners) producing the same joint
  position targets the chunk executor publishes (``make_expert``: the task's);
  :mod:`pi0_ros.sim.stack_expert`: the stacking expert.
- :mod:`pi0_ros.sim.bench`: simulation speed measurement.

Headless rendering: ``MUJOCO_GL`` is chosen here if the user did not set it (EGL, else OSMesa),
so it must be imported before ``mujoco`` to take effect (importing any ``pi0_ros.sim`` module
does that).
"""
from __future__ import annotations

import ctypes.util
import os


def _pick_gl_backend() -> str | None:
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if ctypes.util.find_library("EGL"):
        backend = "egl"
    elif ctypes.util.find_library("OSMesa"):
        backend = "osmesa"
    elif os.environ.get("DISPLAY"):
        backend = "glfw"
    else:
        return None
    os.environ["MUJOCO_GL"] = backend
    if backend == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    elif backend == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    return backend


GL_BACKEND = _pick_gl_backend()

__all__ = ["GL_BACKEND"]
