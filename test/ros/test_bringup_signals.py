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
        rc = _exit_code(proc, out, STOP_BOUND_S, sig.name)
    finally:
        _reap(proc)
    text = out.text
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text and "context is invalid" not in text, text[-3000:]


def _exit_code(proc: subprocess.Popen, out, timeout: float, after: str) -> int:
    """The process's return code once it exits within `timeout` s of `after`, else a test failure."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout:g} s after {after}:\n{out.text[-3000:]}")


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


ENDLESS_WARMUP = 1_000_000  # forward passes: the policy stays WARMING_UP for as long as the test runs


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "duration"])
def test_bringup_stops_cleanly_while_the_policy_warms_up(tmp_path, how):
    """A stop while the policy node still loads / warms up its model: rc 0, no abort.

    It used to abort ("terminate called without an active exception", SIGABRT): the policy node
    gave its inference thread 5 s to end, the thread stayed inside a torch call, and at interpreter
    exit Python ended that daemon thread with pthread_exit, whose forced unwind through pybind11's
    GIL guard is std::terminate. A warm-up that never ends by itself makes the window certain."""
    params = tmp_path / "params.yaml"
    params.write_text(f"pi0_policy:\n  ros__parameters:\n    warmup_runs: {ENDLESS_WARMUP}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONFAULTHANDLER": "1"}  # an abort prints every thread's Python stack
    proc = subprocess.Popen([sys.executable, "-m", "pi0_ros.cli", "bringup", "--params-file", str(params),
                             "--duration", "1" if how == "duration" else "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    try:
        # Logged once every node is up and spinning: the policy is then loading or warming up.
        assert out.wait_for("DRY RUN", 120), out.text[-3000:]
        if how != "duration":
            assert proc.poll() is None, out.text[-3000:]
            proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
        # The stop waits for the warm-up forward pass under way: a hang guard only.
        rc = _exit_code(proc, out, STOP_BOUND_S + 60, how)
    finally:
        _reap(proc)
    text = out.text
    assert "policy ready" not in text, "the stop did not fall into the warm-up:\n" + text[-3000:]
    assert "terminate called" not in text and "Fatal Python error" not in text, text[-5000:]
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text and "context is invalid" not in text, text[-3000:]
