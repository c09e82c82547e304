"""The ROS way: `colcon build` of the ament_cmake package against the ROS 2 wheels installs the
node executables (ros2 run), launch/ and config/ (share/pi0_ros) and an importable package with
its generated messages. Runs tools/colcon_check.sh (also `make colcon-check`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_colcon_build_installs_a_working_package(tmp_path):
    venv = Path(sys.prefix)
    out = subprocess.run(["bash", str(ROOT / "tools" / "colcon_check.sh"), str(venv), str(tmp_path / "ws")],
                         capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "colcon install OK" in out.stdout
