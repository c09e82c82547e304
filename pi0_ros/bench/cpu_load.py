"""Synthetic CPU load beside the pipeline: N processes that burn a core each (ROS-free).

    with CpuLoad(4) as load:   # 4 busy processes for the duration of the block
        run_benchmark()
    load.describe()            # {"processes": 4, "cpus": 16, ...} for the JSON report

The robot computer is rarely idle (drivers, cameras, a browser): `--cpu-load N` of
`pi0-ros bench pipeline` / `pi0-ros eval` measures the pipeline when the scheduler has
other work. Each burner is a plain `python -c` busy loop (no multiprocessing: a fork would
copy the parent's rclpy/DDS threads and signal handlers), stopped with SIGKILL and reaped when
the block ends, exception or not; a burner whose parent died (SIGKILL of the bench) stops on
its own within ~0.1 s instead of burning forever.
"""
from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType

# Busy loop in pure Python (holds one core, allocates nothing); checks every ~10^5 iterations
# whether its parent is still the one that started it.
_BURNER = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(100000):
        pass
"""


class CpuLoad:
    """Context manager: `n` CPU-burning processes while entered (n = 0: none)."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cpu load must be >= 0 processes, got {n}")
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "CpuLoad":
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen([sys.executable, "-S", "-c", _BURNER, str(os.getpid())],
                                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """Kill and reap every burner (idempotent)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()

    def describe(self) -> dict[str, object]:
        """What the JSON reports say about the load."""
        return {"processes": self.n, "kind": "pure-Python busy loop, one core each", "cpus": os.cpu_count()}
