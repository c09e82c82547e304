#!/usr/bin/env bash
# Build this package's ROS 2 interfaces (msg/, srv/) with CMake against the ROS 2 PyPI wheels
# and install them into the virtualenv prefix (the pip world; colcon users never run this).
#
# Usage: tools/build_interfaces.sh <venv>
set -euo pipefail
venv=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"

# The wheels' CMake exports name the build host's Python/numpy include dirs
# (/opt/python/cp311-cp311/...). Point them at this venv's real ones (idempotent).
py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
{ grep -rlF '/opt/python/cp311-cp311/' "$venv/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g" "$f"
done

build="$here/build/interfaces"
mkdir -p "$build"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
cmake -S "$here" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPI0_ROS_INSTALL_PYTHON=OFF \
  -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=Release -Wno-dev >"$build/configure.log" 2>&1 \
  || { tail -40 "$build/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 || { tail -60 "$build/build.log"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -40 "$build/install.log"; exit 1; }
# The generated pi0_ros/__init__.py would make site-packages/pi0_ros a regular package that
# shadows the editable source tree. Without it, site-packages/pi0_ros is only a portion that
# the source package's __init__ adds to its __path__ (pkgutil.extend_path), so
# pi0_ros.msg / pi0_ros.srv resolve there and everything else to the source.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$site/pi0_ros/__init__.py" "$site/pi0_ros/__pycache__"
echo "interfaces installed into $venv"
