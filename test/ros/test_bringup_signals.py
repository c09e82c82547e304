"""`pi0-ros bringup` stops on Ctrl-C / SIGTERM: a real subprocess, real signals, real DDS."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
STOP_BOUND_S = 15.0  # generous: the nodes stop in ~1-2 s on an idle machine


def _ignore_sigint() -> None:
    # What a non-interactive shell does to `pi0-ros bringup &`: the child starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Output:
    """Collects a process's stdout+stderr lines on a thread (never blocks the test)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._t = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self._t.start()

    def wait_for(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in list(self.lines)):
                return True
            time.sleep(0.1)
        return False

    @property
    def text(self) -> str:
        self._t.join(timeout=5.0)
        return "".join(self.lines)


@pytest.mark.parametrize("sig, started_in_background", [(signal.SIGINT, False), (signal.SIGINT, True),
                                                         (signal.SIGTERM, False)],
                         ids=["ctrl-c", "ctrl-c-background-job", "sigterm"])
def test_bringup_stops_on_signal(sig, started_in_background):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "pi0_ros.cli", "bringup", "--duration", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint if started_in_background else None)
    out = Output(proc)
    try:
        assert out.wait_for("policy ready", 120), out.text[-3000:]
        time.sleep(1.0)  # running: the control loop ticks, the policy waits for observations
        assert proc.poll() is None, out.text[-3000:]
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_BOUND_S:g} s after {sig.name}:\n{out.text[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.text
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text and "context is invalid" not in text, text[-3000:]
