"""Where the installed data (config/, launch/) lives, in every install flavour."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "pi0_ros"


def share_dir() -> Path:
    """The directory that holds config/ and launch/.

    Order: $PI0_ROS_SHARE_DIR; the source checkout next to this package (editable / dev);
    the ament index (colcon install); <sys.prefix>/share/pi0_ros (pip wheel data_files).
    """
    env = os.environ.get("PI0_ROS_SHARE_DIR")
    if env:
        return Path(env)
    src = Path(__file__).resolve().parent.parent
    if (src / "config" / "embodiments").is_dir():
        return src
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory(PACKAGE))
        if (p / "config").is_dir():
            return p
    except Exception:  # noqa: BLE001 - not a ROS install, or package not indexed
        pass
    return Path(sys.prefix) / "share" / PACKAGE


def config_dir() -> Path:
    return share_dir() / "config"


def launch_dir() -> Path:
    return share_dir() / "launch"
