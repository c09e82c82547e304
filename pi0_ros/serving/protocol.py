"""openpi's wire format: msgpack, numpy arrays as ext-like maps, never pickle.

An array travels as the map ``{b"__ndarray__": True, b"data": <raw bytes>, b"dtype": "<f4",
b"shape": [..]}`` and a numpy scalar as ``{b"__npgeneric__": True, b"data": <item>, b"dtype":
"<f8"}``; the map keys are msgpack *bin* (bytes), as `openpi_client.msgpack_numpy` writes them,
so openpi servers and clients decode what this module encodes and vice versa. Decoding accepts
str keys as well.

Decoding is defensive (the bytes come from the network): only plain numeric/bool dtypes are
accepted (no object, void, string or datetime dtypes: nothing that could unpickle or
reference memory), the shape must be a list of non-negative ints whose product matches the
data length exactly, and arrays are read-only views of the received bytes (no copy).
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

NDARRAY, NPGENERIC = b"__ndarray__", b"__npgeneric__"
ALLOWED_KINDS = frozenset("biuf")  # bool, signed/unsigned int, float
MAX_NDIM = 8


class ProtocolError(ValueError):
    """A message that is not valid openpi msgpack (malformed, unsupported dtype, bad shape)."""


def _check_dtype(dt: Any) -> np.dtype:
    if isinstance(dt, bytes):
        dt = dt.decode("ascii", "replace")
    if not isinstance(dt, str) or len(dt) > 8:
        raise ProtocolError(f"array dtype must be a short numpy dtype string, got {dt!r}")
    try:
        d = np.dtype(dt)
    except TypeError as e:
        raise ProtocolError(f"unknown dtype {dt!r}") from e
    if d.kind not in ALLOWED_KINDS or d.fields is not None or d.subdtype is not None:
        raise ProtocolError(f"unsupported dtype {dt!r} (only bool, int, uint and float arrays)")
    return d


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise TypeError(f"cannot send arrays of dtype {obj.dtype}")
        return {NDARRAY: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise TypeError(f"cannot send scalars of dtype {obj.dtype}")
        return {NPGENERIC: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _get(obj: dict, key: bytes) -> Any:
    return obj[key] if key in obj else obj.get(key.decode())


def _decode(obj: dict) -> Any:
    if _get(obj, NDARRAY) is not None:
        d = _check_dtype(_get(obj, b"dtype"))
        data, shape = _get(obj, b"data"), _get(obj, b"shape")
        if not isinstance(data, bytes):
            raise ProtocolError("array data must be msgpack bin")
        if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise ProtocolError(f"array shape must be a list of at most {MAX_NDIM} non-negative ints, got {shape!r}")
        n = 1
        for s in shape:
            n *= s
        if n * d.itemsize != len(data):
            raise ProtocolError(f"array of shape {list(shape)} and dtype {d.str} needs {n * d.itemsize} bytes, "
                                f"got {len(data)}")
        return np.frombuffer(data, dtype=d).reshape(shape)
    if _get(obj, NPGENERIC) is not None:
        d = _check_dtype(_get(obj, b"dtype"))
        value = _get(obj, b"data")
        if not isinstance(value, (bool, int, float)):
            raise ProtocolError(f"numpy scalar data must be a number, got {type(value).__name__}")
        try:
            return d.type(value)
        except (OverflowError, ValueError) as e:
            raise ProtocolError(f"numpy scalar {value!r} does not fit {d.str}") from e
    return obj


def packb(obj: Any) -> bytes:
    """Serialize dicts/lists/str/numbers/bytes and numpy arrays (openpi-compatible bytes)."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Deserialize one message; raises ProtocolError for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected a binary message, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except ProtocolError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as e:
        raise ProtocolError(f"not a valid msgpack message: {type(e).__name__}: {e}") from e
