#!/usr/bin/env bash
# Build the third-party interface packages pi0_ros can command (tools/interfaces/*: the
# control_msgs, interbotix_xs_msgs and franka_msgs subsets, field for field as upstream) with CMake against
# the ROS 2 PyPI wheels and install them into <prefix> (default: the venv). These packages are
# not on PyPI. Skipped per package when it is already importable (a colcon/apt ROS install or a
# previous build), so a real ROS environment always keeps its own copy.
#
# Usage: tools/build_extra_interfaces.sh <venv> [<prefix>]   (PI0_FORCE_INTERFACES=1 rebuilds)
set -euo pipefail
venv=$(cd "$1" && pwd)
prefix=${2:-$venv}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
site_rel=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib", vars={"base": "", "platbase": ""}).lstrip("/"))')
export AMENT_PREFIX_PATH="$prefix:$venv" CMAKE_PREFIX_PATH="$prefix:$venv" PATH="$venv/bin:$PATH"
export PYTHONPATH="$prefix/$site_rel${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for pkg in control_msgs interbotix_xs_msgs franka_msgs; do
  src="$here/tools/interfaces/$pkg"
  sum=$(cat "$src"/CMakeLists.txt "$src"/package.xml "$src"/*/* | sha256sum | cut -c1-16)
  stamp="$prefix/share/$pkg/.pi0_ros-subset"
  if [ "${PI0_FORCE_INTERFACES:-0}" != 1 ] && (cd /tmp && "$py" -c "import $pkg.msg") 2>/dev/null; then
    # Ours and unchanged, or somebody else's (a ROS install): keep it.
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" = "$sum" ]; then continue; fi
  fi
  build="$here/build/interfaces_$pkg"
  mkdir -p "$build"
  echo "building $pkg (tools/interfaces/$pkg) into $prefix"
  cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$prefix" -DPython3_EXECUTABLE="$py" \
    -DPYTHON_EXECUTABLE="$py" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -Wno-dev \
    >"$build/configure.log" 2>&1 || { tail -40 "$build/configure.log"; exit 1; }
  cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 || { tail -60 "$build/build.log"; exit 1; }
  cmake --install "$build" >"$build/install.log" 2>&1 || { tail -40 "$build/install.log"; exit 1; }
  echo "$sum" > "$stamp"
done
