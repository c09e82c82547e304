"""Small helpers shared by the nodes: parameters, time, diagnostics."""
from __future__ import annotations

import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node


def declare(node: Node, params: dict[str, Any]) -> dict[str, Any]:
    """Declare parameters with defaults and return their current values."""
    out = {}
    for name, default in params.items():
        node.declare_parameter(name, default)
        out[name] = node.get_parameter(name).value
    return out


def given_parameters(node: Node, names) -> set[str]:
    """Those of ``names`` that were given to this node (``--ros-args -p``, a parameters file, a
    launch file's ``parameters``, ``parameter_overrides``) rather than left at their default.

    rclpy keeps the overrides it got at construction in ``Node._parameter_overrides`` (every
    distribution since Foxy); declare_parameter reads them from there. Raises if that ever changes
    rather than taking every parameter for a default."""
    overrides = getattr(node, "_parameter_overrides", None)
    if not isinstance(overrides, dict):
        raise RuntimeError("this rclpy keeps no Node._parameter_overrides: cannot tell given parameters from defaults")
    return {n for n in names if n in overrides}


def now_sec(node: Node) -> float:
    """The node clock (sim time when use_sim_time) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE


def status(name: str, level: bytes, message: str, values: dict[str, Any], hardware_id: str = "") -> DiagnosticStatus:
    """level: OK / WARN / ERROR / STALE (DiagnosticStatus byte constants)."""
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])


def log_at(logger: Any, level: str, text: str) -> None:
    """Log at a level chosen at run time ("info" | "warning" | "error").

    rclpy keys a logger's state on the call site and refuses a different severity from the
    same site, so each level needs its own call here.
    """
    if level == "error":
        logger.error(text)
    elif level == "warning":
        logger.warning(text)
    else:
        logger.info(text)


def join_thread(thread: threading.Thread, logger: Any, what: str, warn_after: float = 2.0,
                warn_every: float = 10.0) -> None:
    """Wait for a node's own thread to end, however long that takes; say so while waiting.

    Never give up on it: a thread left running goes on inside its C/C++ call (a torch forward
    pass, MuJoCo, a model load) while the node and the context are destroyed, and when it comes
    back after the interpreter finalised, Python ends it with pthread_exit, whose forced unwind
    through a C++ frame (pybind11's GIL guard) is std::terminate: "terminate called without an
    active exception", the process aborts. Waits in slices, so signal handlers keep running on
    the main thread (a second Ctrl-C still forces the stop: pi0_ros.signals)."""
    if thread is threading.current_thread() or not thread.is_alive():
        return
    thread.join(timeout=warn_after)
    while thread.is_alive():
        logger.warning(f"stopping: waiting for {what}")
        thread.join(timeout=warn_every)


def run_node(node_class: type, args: list[str] | None = None) -> None:
    """`main()` of every node: init, spin until Ctrl-C / shutdown, clean up."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = node_class()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # Ctrl-C shuts the context down from rclpy's signal handler; a callback the executor had
        # already taken (a timer's publish) then fails with RCLError "publisher's context is
        # invalid". That is the stop the user asked for, not a crash: only a live context re-raises.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
