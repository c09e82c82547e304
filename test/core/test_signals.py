"""pi0_ros.signals.StopSignals: the first SIGINT/SIGTERM asks to stop, handlers are restored."""
from __future__ import annotations

import os
import signal

import pytest

from pi0_ros.signals import StopSignals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_sets_stop_and_handlers_are_restored(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals() as s:
        assert not s.stop.is_set()
        os.kill(os.getpid(), sig)  # delivered to the main thread before kill() returns to Python code
        assert s.stop.wait(2.0) and s.received == sig
    assert {k: signal.getsignal(k) for k in before} == before


def test_handlers_restored_after_an_exception():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), StopSignals():
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGINT) is before
