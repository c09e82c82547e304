"""Message <-> numpy conversions shared by the nodes (the only place that knows both)."""
from __future__ import annotations

import array
import importlib
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from pi0_ros.images import decode_compressed, decode_raw


def stamp_to_sec(t: Time) -> float:
    return t.sec + t.nanosec * 1e-9


def sec_to_stamp(s: float) -> Time:
    ns = int(round(s * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """sensor_msgs Image (any common encoding) or CompressedImage -> (H, W, 3) uint8 RGB."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.data)
    return decode_raw(msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian), msg.data)


def rgb_to_image(rgb: np.ndarray, stamp: Time | None = None, frame_id: str = "") -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    # array.array takes rclpy's fast path for uint8[] (bytes would be validated element-wise).
    msg.data = array.array("B", np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    return msg


def message_class(type_name: str) -> Any:
    """'pkg/msg/Type' -> the Python message class (ImportError when not installed)."""
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class CvBridge:
    """The cv_bridge API subset we use. The real cv_bridge is used when it works (ROS installs);
    PyPI's cv-bridge 1.13 is a ROS 1 copy that crashes under numpy 2, so this falls back to
    our own converter. Images come out in the requested encoding ("rgb8" or "bgr8")."""

    def __init__(self) -> None:
        self._real = None
        try:
            from cv_bridge import CvBridge as _Real  # type: ignore[import-not-found]

            real = _Real()
            real.cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8), "rgb8")  # the PyPI copy fails here
            self._real = real
        except Exception:  # noqa: BLE001 - not installed, or the broken ROS 1 copy
            self._real = None

    def imgmsg_to_cv2(self, msg: Image, desired_encoding: str = "rgb8") -> np.ndarray:
        if self._real is not None:
            return self._real.imgmsg_to_cv2(msg, desired_encoding)
        rgb = image_to_rgb(msg)
        return rgb if desired_encoding in ("rgb8", "passthrough") else rgb[..., ::-1].copy()

    def compressed_imgmsg_to_cv2(self, msg: CompressedImage, desired_encoding: str = "rgb8") -> np.ndarray:
        rgb = decode_compressed(msg.data)
        return rgb if desired_encoding in ("rgb8", "passthrough") else rgb[..., ::-1].copy()

    def cv2_to_imgmsg(self, img: np.ndarray, encoding: str = "rgb8") -> Image:
        if self._real is not None:
            return self._real.cv2_to_imgmsg(img, encoding)
        return rgb_to_image(img if encoding == "rgb8" else img[..., ::-1])
