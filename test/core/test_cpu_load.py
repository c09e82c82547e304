"""pi0_ros.bench.cpu_load.CpuLoad: burners start, burn, and are always reaped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pi0_ros.bench.cpu_load import CpuLoad

ROOT = Path(__file__).resolve().parents[2]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def alive(pid: int) -> bool:
    """Running (a zombie - dead, not reaped - counts as alive: nobody cleaned up)."""
    return Path(f"/proc/{pid}").exists()


def stopped(pid: int) -> bool:
    """Gone, or a zombie (exited; reaping it is its new parent's business, not ours)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_burners_run_and_are_reaped_after_an_exception():
    with pytest.raises(RuntimeError, match="boom"), CpuLoad(2) as load:
        pids = load.pids
        assert len(set(pids)) == 2 and all(alive(p) for p in pids)
        assert wait_until(lambda: all(cpu_ticks(p) > 0 for p in pids)), "burners do not burn CPU"
        raise RuntimeError("boom")
    assert all(p.returncode is not None for p in load.procs)
    assert not any(alive(p) for p in pids)


def test_zero_is_no_load_and_negative_is_refused():
    with CpuLoad(0) as load:
        assert load.pids == []
    assert load.describe()["processes"] == 0
    with pytest.raises(ValueError):
        CpuLoad(-1)


def test_burners_stop_when_their_parent_is_killed():
    code = ("import sys, time\nfrom pi0_ros.bench.cpu_load import CpuLoad\n"
            "load = CpuLoad(1).__enter__()\nprint(load.pids[0], flush=True)\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        burner = int(parent.stdout.readline())
        assert alive(burner)
    finally:
        parent.send_signal(signal.SIGKILL)  # no cleanup runs in the parent
        parent.wait()
    # The orphan notices its new parent and exits; its new parent (init/subreaper) reaps it.
    assert wait_until(lambda: stopped(burner))


def _children() -> list[int]:
    pid = os.getpid()
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("command", [["eval", "--json"], ["bench", "pipeline", "--json"]])
def test_cli_cpu_load_runs_beside_the_work_and_is_reported(command, monkeypatch, capsys):
    """`--cpu-load N`: N burners exist while the pipeline runs, none after, and the JSON says so."""
    import json

    from pi0_ros import evaluation
    from pi0_ros.cli import main
    from pi0_ros.ros import bench_pipeline

    before = set(_children())
    seen: list[int] = []

    def work(args, *rest):
        seen.append(len(set(_children()) - before))
        return ([], {}) if command[0] == "eval" else {"embodiment": "stub"}  # eval: results, settings

    monkeypatch.setattr(evaluation, "_episodes", work)
    monkeypatch.setattr(bench_pipeline, "_measure", work)
    assert main([*command, "--cpu-load", "2"]) == 0
    assert seen == [2]
    assert wait_until(lambda: not set(_children()) - before)
    out = json.loads(capsys.readouterr().out)
    assert out["cpu_load"]["processes"] == 2
