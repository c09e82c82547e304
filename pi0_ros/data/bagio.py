"""rosbags helpers shared by the recorder and the converter (ROS-free: no rclpy).

`typestore()` is the ROS 2 Kilted store plus this package's own messages (msg/*.msg), so
bags holding pi0_ros/msg/ActionChunk can be written and read without a ROS install.
"""
from __future__ import annotations

import logging
import sys
from functools import lru_cache
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from pi0_ros.paths import share_dir

logger = logging.getLogger(__name__)

PACKAGE = "pi0_ros"
STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def msg_dirs() -> list[Path]:
    """Where our .msg files live: the source checkout, a colcon/pip install share dir."""
    cands = [share_dir() / "msg", Path(__file__).resolve().parents[2] / "msg", Path(sys.prefix) / "share" / PACKAGE / "msg"]
    out: list[Path] = []
    for c in cands:
        if c.is_dir() and c not in out:
            out.append(c)
    return out


def own_types() -> dict:
    """{'pi0_ros/msg/<Name>': parsed definition} for every msg/*.msg found."""
    types: dict = {}
    for d in msg_dirs():
        for f in sorted(d.glob("*.msg")):
            name = f"{PACKAGE}/msg/{f.stem}"
            if name not in types:
                types.update(get_types_from_msg(f.read_text(), name))
    return types


@lru_cache(maxsize=1)
def _base_store() -> Typestore:
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(own_types())
    return store


def typestore(connections=()) -> Typestore:
    """The Kilted typestore + our messages + any type a bag brings that the store lacks.

    ``connections``: rosbags Connection objects of an open bag; types they define in msg
    format and that are unknown here are registered from the bag's own definitions.
    """
    store = _base_store()
    extra: dict = {}
    for c in connections:
        if c.msgtype in store.fielddefs or c.msgtype in extra:
            continue
        fmt = getattr(c.msgdef, "format", None)
        data = getattr(c.msgdef, "data", "")
        if data and getattr(fmt, "name", "") == "MSG":
            try:
                extra.update(get_types_from_msg(data, c.msgtype))
            except Exception as e:  # noqa: BLE001 - a bad definition only matters if the topic is used
                logger.warning("cannot parse the definition of %s on %s: %s", c.msgtype, c.topic, e)
    if not extra:
        return store
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(own_types())
    store.register(extra)
    return store


def storage_plugin(name: str) -> StoragePlugin:
    try:
        return STORAGE_PLUGINS[name]
    except KeyError:
        raise ValueError(f"unknown rosbag2 storage '{name}'; use one of {sorted(STORAGE_PLUGINS)}") from None
