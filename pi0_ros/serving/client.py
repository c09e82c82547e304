"""`RemotePolicy`: the `Policy` interface backed by an openpi-protocol server (ROS-free).

The policy node calls ``infer(PolicyInput) -> PolicyOutput`` exactly as on a local `Policy`;
this class turns the input into the server's observation dict with a key set
(config/serving/*.yaml), sends it, and validates the reply before anything is returned:

- the connection is opened lazily and re-opened after any failure, with exponential backoff
  (``backoff_min`` doubling up to ``backoff_max`` s; a call inside the backoff window fails at
  once with the last reason, it never blocks the caller for long);
- every failure raises `RemotePolicyError` with the reason (server down, timeout, an error
  text frame, garbage): the caller publishes nothing;
- a reply whose ``actions`` is not a finite (horizon, dims) numeric array is garbage.

Against pi0-ros serve (its metadata says ``"server": "pi0_ros"``) the key set defaults to
``pi0_ros`` (every padded dim, exact local equality), images go at the model's input size, and
the real-time-chunking guide and the sampler noise travel as extensions. Against another
openpi server pass its key set (``aloha``, ``droid``, ``libero``); the guide is then applied
here, after the fact: the returned chunk is blended towards the guide by its weights (the
frozen prefix is kept exactly, the rest fades to the new chunk).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np

from pi0_ros.serving.keys import KeySet, KeySetError, load_key_set
from pi0_ros.serving.protocol import ProtocolError, packb, unpackb
from pi0_ros.serving.server import API_KEY_ENV, EXT_GUIDE, EXT_KEYS, EXT_NOISE

logger = logging.getLogger(__name__)
MAX_REPLY_BYTES = 64 << 20
MAX_HORIZON = 10_000


class RemotePolicyError(RuntimeError):
    """The remote policy gave no usable chunk; the message says why."""


class RemotePolicy:
    """A client of an openpi-protocol policy server with the `Policy` interface.

    Args:
        uri: ``ws://host:port`` (``host:port`` gets ``ws://``).
        keys: key set name or YAML path; "" = ``pi0_ros`` for pi0-ros serve (required otherwise).
        api_key: sent as ``Authorization: Api-Key <key>`` ("" = $PI0_ROS_API_KEY, if set).
        connect_timeout, request_timeout: s for the handshake + metadata, and for one reply.
        image_size: images are resized with padding to this before sending (None = as given);
            default: the server's model input size if it says, else 224.
        jpeg_quality: > 0 sends JPEG bytes (pi0-ros serve only).
        action_dim: padded width of the returned chunk until the server says its own.
        embodiment: the robot whose camera views are sent (an Embodiment); a pi0-ros server whose
            checkpoint was trained on other views (its metadata's ``camera_crops``) is refused.
    """

    def __init__(self, uri: str = "ws://127.0.0.1:8000", keys: str = "", *, api_key: str = "",
                 connect_timeout: float = 5.0, request_timeout: float = 5.0, image_size: int | None = 0,
                 jpeg_quality: int = 0, action_dim: int = 32, backoff_min: float = 0.5,
                 backoff_max: float = 10.0, embodiment: Any = None) -> None:
        self.uri = uri if uri.startswith(("ws://", "wss://")) else f"ws://{uri}"
        self._keys_arg = keys
        self.key_set: KeySet | None = load_key_set(keys) if keys else None
        self.api_key = api_key or os.environ.get(API_KEY_ENV, "")
        self.connect_timeout, self.request_timeout = float(connect_timeout), float(request_timeout)
        self._image_size_arg = image_size
        self.jpeg_quality = int(jpeg_quality)
        self._fallback_action_dim = int(action_dim)
        self.backoff_min, self.backoff_max = float(backoff_min), float(backoff_max)
        self.metadata: dict[str, Any] | None = None
        self.embodiment = embodiment
        self.random_weights = False
        self._ws = None
        self._lock = threading.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self.bytes_sent = 0          # of the last request
        self.bytes_received = 0      # of the last reply
        self.reconnects = 0

    # ------------------------------------------------------------------ info (Policy interface)
    @property
    def is_pi0_ros(self) -> bool:
        return bool(self.metadata) and self.metadata.get("server") == "pi0_ros"

    @property
    def action_dim(self) -> int:
        if self.is_pi0_ros and isinstance(self.metadata.get("action_dim"), int):
            return int(self.metadata["action_dim"])
        if self.key_set is not None and self.key_set.actions[1] is not None:
            return max(self._fallback_action_dim, self.key_set.actions[1])
        return self._fallback_action_dim

    @property
    def chunk_size(self) -> int | None:
        return int(self.metadata["chunk_size"]) if self.is_pi0_ros else None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def __repr__(self) -> str:
        ks = self.key_set.name if self.key_set else "auto"
        server = (self.metadata or {}).get("server", "?") if self.metadata else "not connected"
        return f"RemotePolicy({self.uri}, keys={ks}, server={server}, action_dim={self.action_dim})"

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        from websockets.sync.client import connect

        now = time.monotonic()
        if now < self._next_attempt:
            raise RemotePolicyError(f"{self._last_error}; next attempt in {self._next_attempt - now:.1f} s")
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        try:
            ws = connect(self.uri, compression=None, max_size=MAX_REPLY_BYTES, additional_headers=headers,
                         open_timeout=self.connect_timeout, proxy=None, close_timeout=1.0, legacy=True)
            try:
                meta = unpackb(ws.recv(timeout=self.connect_timeout))
            except BaseException:
                ws.close()
                raise
            try:
                if not isinstance(meta, dict):
                    raise ProtocolError(f"metadata must be a map, got {type(meta).__name__}")
                self._use_metadata(meta)
            except BaseException:
                ws.close()
                raise
        except RemotePolicyError as e:   # connected, but the server cannot be used as configured
            self._failed(f"{self.uri}: {e}")
        except Exception as e:  # noqa: BLE001 - any failure: back off and say why
            self._failed(f"cannot connect to {self.uri}: {_reason(e)}")
        self._ws = ws
        self.reconnects += 1
        self._backoff = 0.0
        logger.info("connected to %s: %s", self.uri, {k: meta.get(k) for k in ("server", "action_dim", "chunk_size")})

    def _use_metadata(self, meta: dict[str, Any]) -> None:
        self.metadata = meta
        self.random_weights = bool(meta.get("random_weights", False))
        if self.key_set is None:
            if meta.get("server") != "pi0_ros":
                raise RemotePolicyError("the server is not pi0-ros serve: set the key set it expects "
                                        "(aloha, droid, libero or a YAML path)")
            self.key_set = load_key_set("pi0_ros")
        if self.embodiment is not None and meta.get("server") == "pi0_ros" and meta.get("camera_crops") is not None:
            from pi0_ros import camera_views

            try:
                camera_views.check(camera_views.parse_crops(meta["camera_crops"], "server metadata"), self.embodiment,
                                   f"the served checkpoint {meta.get('checkpoint', '')}".rstrip(),
                                   slots=meta.get("camera_slots"))
            except ValueError as e:   # CameraViewMismatch, or malformed crops
                raise RemotePolicyError(str(e)) from None

    def _failed(self, reason: str) -> None:
        """Drop the connection, schedule the next attempt, raise with `reason`."""
        self._drop()
        self._backoff = min(self.backoff_max, max(self.backoff_min, 2 * self._backoff))
        self._next_attempt = time.monotonic() + self._backoff
        self._last_error = reason
        raise RemotePolicyError(reason)

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()

    def warmup(self, n: int = 1) -> list[dict[str, float]]:
        """Connect (and fetch the server's metadata) if the server is up; never raises: a server
        that is down is reported by `infer` and retried with backoff."""
        with self._lock:
            if self._ws is None:
                try:
                    self._connect()
                except RemotePolicyError as e:
                    logger.warning("remote policy: %s (will retry)", e)
        return []

    # ------------------------------------------------------------------ inference
    def image_size(self) -> int | None:
        if self._image_size_arg is None:
            return None
        if self._image_size_arg > 0:
            return int(self._image_size_arg)
        if self.is_pi0_ros and self.metadata.get("image_size"):
            return int(self.metadata["image_size"])
        return 224

    def build_request(self, inp, noise: np.ndarray | None = None) -> dict[str, Any]:
        """The observation dict for `inp` (a PolicyInput) in the key set's layout."""
        ks = self.key_set
        slots = tuple(self.metadata["camera_slots"]) if self.is_pi0_ros and self.metadata.get("camera_slots") else None
        obs = ks.encode(inp.images, inp.state, inp.prompt, image_size=self.image_size(),
                        jpeg_quality=self.jpeg_quality if self.is_pi0_ros else 0, slots=slots)
        if self.is_pi0_ros:
            obs[EXT_KEYS] = ks.name
            if noise is not None:
                obs[EXT_NOISE] = np.ascontiguousarray(np.asarray(noise, dtype=np.float32).reshape(
                    self.metadata["chunk_size"], self.metadata["action_dim"]))
            if inp.guide is not None:
                start, stop = ks.action_slots(inp.guide.actions.shape[1])
                obs[EXT_GUIDE] = {"actions": np.ascontiguousarray(inp.guide.actions[:, start:stop]),
                                  "weights": np.ascontiguousarray(inp.guide.weights)}
        return obs

    def infer(self, inp, noise: np.ndarray | None = None):
        """One chunk from the server -> PolicyOutput (actions (H, action_dim) float64, timing in ms)."""
        from pi0_ros.policy import PolicyOutput

        with self._lock:
            t0 = time.perf_counter()
            if self._ws is None:
                self._connect()
            try:
                data = packb(self.build_request(inp, noise))
            except (KeySetError, ValueError, TypeError) as e:
                raise RemotePolicyError(f"cannot build the request: {e}") from e
            self.bytes_sent = len(data)
            t1 = time.perf_counter()
            try:
                self._ws.send(data)
                reply = self._ws.recv(timeout=self.request_timeout)
            except TimeoutError:
                self._failed(f"no reply from {self.uri} within {self.request_timeout:.1f} s")
            except Exception as e:  # noqa: BLE001 - connection lost
                self._failed(f"connection to {self.uri} lost: {_reason(e)}")
            t2 = time.perf_counter()
            if isinstance(reply, str):
                self._failed(f"server error: {reply.strip()[:500]}")
            self.bytes_received = len(reply)
            try:
                out = unpackb(reply)
                actions = self._check_actions(out)
            except (ProtocolError, KeySetError, ValueError) as e:
                self._failed(f"garbage reply from {self.uri}: {e}")
        if inp.guide is not None and not self.is_pi0_ros:
            actions = _blend(actions, inp.guide)
        t3 = time.perf_counter()
        pt = out.get("policy_timing") if isinstance(out.get("policy_timing"), dict) else {}
        st = out.get("server_timing") if isinstance(out.get("server_timing"), dict) else {}
        server_ms = _num(st.get("infer_ms"), _num(pt.get("infer_ms"), 0.0))
        timing = {"model": _num(pt.get("model_ms"), server_ms), "server": server_ms,
                  "encode": (t1 - t0) * 1e3, "roundtrip": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3,
                  "total": (t3 - t0) * 1e3}
        timing["overhead"] = timing["total"] - timing["model"]
        return PolicyOutput(actions=actions, timing=timing)

    def _check_actions(self, out: Any) -> np.ndarray:
        if not isinstance(out, dict) or "actions" not in out:
            raise ValueError("no 'actions' in the reply")
        a = out["actions"]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "iuf" or a.ndim != 2 \
                or not 1 <= a.shape[0] <= MAX_HORIZON or a.shape[1] < 1:
            raise ValueError(f"'actions' must be a (horizon, dims) numeric array, got "
                             f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
        if not np.isfinite(a).all():
            raise ValueError("'actions' has non-finite values")
        return self.key_set.place_actions(a.astype(np.float64), self.action_dim)


def _blend(actions: np.ndarray, guide) -> np.ndarray:
    """Client-side real-time chunking for servers that cannot take the guide: a = w g + (1 - w) a."""
    h = min(actions.shape[0], guide.actions.shape[0])
    d = min(actions.shape[1], guide.actions.shape[1])
    w = guide.weights[:h, None]
    out = actions.copy()
    out[:h, :d] = w * guide.actions[:h, :d] + (1 - w) * actions[:h, :d]
    return out


def _num(v: Any, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else default


def _reason(e: BaseException) -> str:
    s = str(e) or type(e).__name__
    return f"{type(e).__name__}: {s}" if type(e).__name__ not in s else s
