#!/usr/bin/env bash
# Build pi0_ros the ROS way — `colcon build` of the ament_cmake package in a workspace —
# against the ROS 2 PyPI wheels in <venv>, and check what a ROS user gets: executables in
# lib/pi0_ros (for `ros2 run`), launch/ and config/ in share/pi0_ros, the Python package
# and its generated messages importable from the install space.
# Usage: tools/colcon_check.sh <venv> [workspace]
set -euo pipefail
venv=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
ws=${2:-$here/build/colcon_ws}
rm -rf "$ws" && mkdir -p "$ws/src"
# colcon needs a real copy (the source tree's own build/ must not be crawled).
tar -C "$here" --exclude=./build --exclude=./.venv --exclude=./outputs --exclude=./.git -cf - . | (mkdir -p "$ws/src/pi0_ros" && tar -C "$ws/src/pi0_ros" -xf -)
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
cd "$ws"
colcon build --packages-select pi0_ros --event-handlers console_direct- \
  --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF -Wno-dev >"$ws/colcon.log" 2>&1 \
  || { tail -50 "$ws/colcon.log"; exit 1; }
inst="$ws/install/pi0_ros"
for exe in observation_node policy_node executor_node viz_node sim_node recorder_node; do
  [ -x "$inst/lib/pi0_ros/$exe" ] || { echo "missing executable lib/pi0_ros/$exe"; exit 1; }
done
for f in launch/pi0.launch.py launch/sim.launch.py config/pi0.rviz config/embodiments/ur5e.yaml config/params/franka.yaml package.xml; do
  [ -f "$inst/share/pi0_ros/$f" ] || { echo "missing share/pi0_ros/$f"; exit 1; }
done
site=$(find "$inst/lib" -maxdepth 3 -type d -name site-packages | head -1)
# Import from the install space only (not the source tree), as `ros2 run` would.
(cd /tmp && PYTHONPATH="$site" AMENT_PREFIX_PATH="$inst:$venv" PI0_ROS_SHARE_DIR= "$venv/bin/python" - <<'PY'
import pi0_ros, pi0_ros.msg, pi0_ros.srv
from pi0_ros.paths import share_dir
from pi0_ros.robots.embodiment import list_embodiments
assert "/install/pi0_ros/" in pi0_ros.__file__, pi0_ros.__file__
assert "/install/pi0_ros/share/pi0_ros" in str(share_dir()), share_dir()
assert len(list_embodiments()) == 7
m = pi0_ros.msg.ActionChunk(chunk_size=50)
print("colcon install OK:", pi0_ros.__file__, "| share:", share_dir(), "| msgs:", type(m).__name__)
PY
)
