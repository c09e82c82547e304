"""openpi's wire format: byte-exact fixtures, compatibility with openpi-client, hostile input."""
from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest

from pi0_ros.serving.protocol import ProtocolError, packb, unpackb

# Hand-written from openpi_client/msgpack_numpy.py's documented layout: {"a": int16 [1, 2]} is
# a 1-map; key "a" (fixstr); value a 4-map with bin keys __ndarray__ -> true, data -> 4 raw
# bytes, dtype -> "<i2" (str), shape -> [2].
FIXTURE = bytes([0x81, 0xA1, 0x61, 0x84,
                 0xC4, 0x0B, *b"__ndarray__", 0xC3,
                 0xC4, 0x04, *b"data", 0xC4, 0x04, 0x01, 0x00, 0x02, 0x00,
                 0xC4, 0x05, *b"dtype", 0xA3, *b"<i2",
                 0xC4, 0x05, *b"shape", 0x91, 0x02])


def test_array_encoding_matches_openpi_byte_for_byte():
    assert packb({"a": np.array([1, 2], dtype="<i2")}) == FIXTURE
    out = unpackb(FIXTURE)
    assert out["a"].dtype == np.dtype("<i2") and out["a"].tolist() == [1, 2]


def openpi_examples():
    rng = np.random.default_rng(0)
    aloha = {"state": np.ones((14,)), "prompt": "do something",
             "images": {k: rng.integers(256, size=(3, 224, 224), dtype=np.uint8)
                        for k in ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")}}
    droid = {"observation/exterior_image_1_left": rng.integers(256, size=(224, 224, 3), dtype=np.uint8),
             "observation/wrist_image_left": rng.integers(256, size=(224, 224, 3), dtype=np.uint8),
             "observation/joint_position": rng.random(7), "observation/gripper_position": rng.random(1),
             "prompt": "do something"}
    libero = {"observation/state": rng.random(8), "prompt": "do something",
              "observation/image": rng.integers(256, size=(224, 224, 3), dtype=np.uint8),
              "observation/wrist_image": rng.integers(256, size=(224, 224, 3), dtype=np.uint8)}
    reply = {"actions": rng.normal(size=(50, 14)), "server_timing": {"infer_ms": 12.5},
             "policy_timing": {"infer_ms": 11.0}, "scalar": np.float32(1.5)}
    return {"aloha": aloha, "droid": droid, "libero": libero, "reply": reply}


def _same(a, b):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (np.ndarray, np.generic)):
        assert type(a) is type(b) or isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b) and np.array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("name", ["aloha", "droid", "libero", "reply"])
def test_same_bytes_as_openpi_client_and_both_decode_each_other(name):
    from openpi_client import msgpack_numpy as openpi

    msg = openpi_examples()[name]
    ours = packb(msg)
    assert ours == openpi.packb(msg)
    _same(msg, unpackb(openpi.packb(msg)))
    _same(msg, openpi.unpackb(ours))


def _ndarray(dtype, shape, data):
    return msgpack.packb({"x": {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}},
                         use_bin_type=True)


@pytest.mark.parametrize("dtype", ["|O", "|V8", "<U2", "<c16", "<M8[s]", "|S4"])
def test_unsafe_or_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(ProtocolError, match="dtype"):
        unpackb(_ndarray(dtype, [1], b"\0" * np.dtype(dtype).itemsize))


@pytest.mark.parametrize("shape,data", [([3], b"\0" * 8), ([-1], b""), ([2, "a"], b""), ("12", b""),
                                        ([1] * 9, b"\0"), ([1 << 40, 1 << 40], b"\0")])
def test_shapes_must_match_the_data(shape, data):
    with pytest.raises(ProtocolError):
        unpackb(_ndarray("|u1", shape, data))


def test_never_unpickles():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    for payload in (pickle.dumps(Boom()), _ndarray("|O", [1], pickle.dumps(Boom()))):
        with pytest.raises(ProtocolError):
            unpackb(payload)


@pytest.mark.parametrize("data", [b"", b"\xc1", FIXTURE[:-3], FIXTURE + b"\x00", "a text frame", b"\x81\x01\x02"])
def test_malformed_messages_raise_protocol_error(data):
    with pytest.raises(ProtocolError):
        unpackb(data)


def test_decoded_arrays_are_read_only_views_and_scalars_round_trip():
    out = unpackb(packb({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int64(-3), "t": np.bool_(True)}))
    assert out["a"].shape == (2, 3) and not out["a"].flags.writeable
    assert out["s"] == -3 and out["s"].dtype == np.int64 and out["t"].dtype == np.bool_
    with pytest.raises(TypeError):
        packb({"o": np.array([object()])})
