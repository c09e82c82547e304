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


# ------------------------------------------------------------------ integrity (mcap CRCs, sqlite)
MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_CHUNK, _OP_FOOTER = 0x06, 0x02


class BagCorruptError(ValueError):
    """A bag file is damaged; the message names the file and the byte offset."""


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

    if compression not in DECOMPRESSORS:
        raise ValueError(f"unsupported chunk compression {compression!r}")
    return DECOMPRESSORS[compression](data, size)


def verify_mcap(path: str | Path) -> dict[str, int]:
    """Walk every record of an mcap file; check each chunk's size and CRC (rosbag2 writes them).

    Returns {"chunks": n, "chunks_without_crc": m}. Raises BagCorruptError naming the file and
    the byte offset of the first damaged record. A chunk written without a CRC (crc 0) cannot
    be checked; the caller decides whether to warn.
    """
    import struct
    from binascii import crc32

    path = Path(path)
    size = path.stat().st_size
    out = {"chunks": 0, "chunks_without_crc": 0}
    with path.open("rb") as f:
        if f.read(8) != MCAP_MAGIC:
            raise BagCorruptError(f"{path}: byte offset 0: not an mcap file (bad magic)")
        off = 8
        while off < size:
            head = f.read(9)
            if len(head) < 9:
                raise BagCorruptError(f"{path}: byte offset {off}: truncated record header")
            op, length = head[0], struct.unpack_from("<Q", head, 1)[0]
            if op == 0 or op > 0x10 or off + 9 + length > size:
                raise BagCorruptError(f"{path}: byte offset {off}: invalid record (opcode 0x{op:02x}, "
                                      f"length {length}, file size {size})")
            if op == _OP_FOOTER:
                f.seek(off + 9 + length)
                if f.read(8) != MCAP_MAGIC:
                    raise BagCorruptError(f"{path}: byte offset {off + 9 + length}: bad magic after the footer")
                return out
            if op == _OP_CHUNK:
                body = f.read(length)
                try:
                    _t0, _t1, usize, crc = struct.unpack_from("<QQQI", body, 0)
                    clen = struct.unpack_from("<I", body, 28)[0]
                    compression = body[32:32 + clen].decode()
                    rlen = struct.unpack_from("<Q", body, 32 + clen)[0]
                    records = body[40 + clen:40 + clen + rlen]
                    if len(records) != rlen:
                        raise ValueError(f"records length {rlen} runs past the chunk")
                    raw = _decompress(records, compression, usize)
                except Exception as e:  # noqa: BLE001 - any parse failure is corruption
                    raise BagCorruptError(f"{path}: byte offset {off}: damaged chunk record: {e}") from e
                out["chunks"] += 1
                if len(raw) != usize:
                    raise BagCorruptError(f"{path}: byte offset {off}: chunk holds {len(raw)} bytes, its header says {usize}")
                if crc == 0:
                    out["chunks_without_crc"] += 1
                elif crc32(raw) != crc:
                    raise BagCorruptError(f"{path}: byte offset {off}: chunk checksum mismatch "
                                          f"(chunk of {length + 9} bytes at {off}..{off + 9 + length})")
            else:
                f.seek(off + 9 + length)
            off += 9 + length
    raise BagCorruptError(f"{path}: byte offset {size}: the file ends without a footer (truncated; "
                          f"`ros2 bag reindex` cannot fix a truncated mcap either)")


def verify_sqlite3(path: str | Path) -> None:
    """SQLite's own integrity check of a .db3 file."""
    import sqlite3

    path = Path(path)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute("PRAGMA integrity_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise BagCorruptError(f"{path}: not a readable sqlite3 database: {e}") from e
    if rows != [("ok",)]:
        raise BagCorruptError(f"{path}: sqlite3 integrity check failed: {'; '.join(str(r[0]) for r in rows[:3])}")


def bag_files(bag: str | Path) -> list[Path]:
    """The storage files of a bag directory (or the file itself)."""
    bag = Path(bag)
    if bag.is_file():
        return [bag]
    return sorted(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def verify_bag(bag: str | Path) -> dict[str, int]:
    """Check every storage file of a bag; returns mcap chunk counts (see verify_mcap)."""
    total = {"chunks": 0, "chunks_without_crc": 0}
    for f in bag_files(bag):
        if f.suffix == ".mcap":
            for k, v in verify_mcap(f).items():
                total[k] += v
        else:
            verify_sqlite3(f)
    return total


# ------------------------------------------------------------------ rosbag2-faithful writing
def ros_distro() -> str:
    """The ROS distribution recorded in metadata.yaml: $ROS_DISTRO, else the typestore's (kilted)."""
    import os

    return os.environ.get("ROS_DISTRO") or "kilted"


def _faithful_writer_class():
    """A rosbags Writer whose mcap files match rosbag2: chunk CRCs, channel topic_type_hash, ros_distro."""
    from binascii import crc32
    from io import BytesIO
    import struct

    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string

    distro = ros_distro()

    class _McapWriter(McapWriter):
        def add_connection(self, connection, offered_qos_profiles: str) -> None:  # noqa: ANN001
            meta = BytesIO()  # rosbag2's channel metadata map: both keys
            write_string(meta, "offered_qos_profiles")
            write_string(meta, offered_qos_profiles)
            write_string(meta, "topic_type_hash")
            write_string(meta, connection.digest or "")
            self.channels.append(Channel(connection.id, connection.msgtype, connection.topic,
                                         connection.ext.serialization_format, meta.getvalue()))
            self.channel_stats[connection.id] = 0
            write_channel(self.chunk.bio, self.channels[-1], self.schemas)

        def close_chunk(self) -> None:
            start = self.bio.tell()
            crc = crc32(self.chunk.bio.getvalue())
            super().close_chunk()
            end = self.bio.tell()
            self.bio.seek(start + 9 + 24)  # opcode, length, start/end time, uncompressed size
            self.bio.write(struct.pack("<I", crc))
            self.bio.seek(end)

        def close(self, version: int, metadata: str) -> None:
            super().close(version, metadata.replace("ros_distro: rosbags", f"ros_distro: {distro}"))

    class FaithfulWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _McapWriter}

        def close(self) -> None:
            super().close()
            text = self.metapath.read_text()
            self.metapath.write_text(text.replace("ros_distro: rosbags", f"ros_distro: {distro}"))

    return FaithfulWriter


@lru_cache(maxsize=1)
def writer_class():
    return _faithful_writer_class()


def open_writer(path: str | Path, storage: str = "mcap"):
    """A rosbag2 v9 writer (not yet opened) that writes what rosbag2 writes."""
    return writer_class()(Path(path), version=9, storage_plugin=storage_plugin(storage))
