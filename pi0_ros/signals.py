"""Graceful stop on Ctrl-C / SIGTERM for long-running commands (ROS-free).

Why not rclpy's handlers: rclpy's SIGINT handler shuts the context down at once, while our
node threads (control loop, simulator, inference) still publish, and it only reaches the main
thread as a KeyboardInterrupt if Python's own handler was installed - which Python skips when
SIGINT is ignored at start (a `cmd &` job of a non-interactive shell, some supervisors). Owning
the signals lets a command stop its nodes first and shut the context down last.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While entered, the first SIGINT/SIGTERM sets `stop` (stop gracefully); a second one gets the
    signal's default action (the process dies at once), so a shutdown that hangs can be forced.

    Must be entered on the main thread (Python delivers signals there)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.stop = threading.Event()
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            for s in self.signals:
                signal.signal(s, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.received = signal.Signals(signum)
        self.stop.set()

    def __enter__(self) -> "StopSignals":
        for s in self.signals:
            # Installed even where the signal was ignored at start: as every ROS node, stop on it.
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
