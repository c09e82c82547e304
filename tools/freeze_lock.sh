#!/usr/bin/env bash
# Regenerate requirements/lock.txt from the working .venv. The ROS 2 wheels also register
# egg-info names without the "ros-" prefix (sensor_msgs, rclpy, ...) that are not PyPI
# distributions: keep only the ros-* names, and drop torch (installed first, separately) and us.
set -euo pipefail
venv=${1:-.venv}
"$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | "$venv/bin/python" -c '
import sys
lines = [l.strip() for l in sys.stdin if "==" in l]
names = {l.split("==")[0].lower().replace("_", "-") for l in lines}
for l in lines:
    n = l.split("==")[0].lower().replace("_", "-")
    if n in ("torch", "pi0-ros") or (not n.startswith("ros-") and "ros-" + n in names):
        continue
    print(l)
' > requirements/lock.txt
wc -l requirements/lock.txt
