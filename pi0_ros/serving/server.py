"""`pi0-ros serve`: a pi0_ros `Policy` behind openpi's websocket protocol (ROS-free).

Protocol (openpi `serving/websocket_policy_server.py`, `openpi_client.websocket_client_policy`):

- websocket, default port 8000, binary frames of msgpack with numpy arrays (`protocol`);
- on connect the server sends one metadata dict;
- then each client message is one observation dict, each reply one dict with ``actions``
  (horizon, dims) plus ``policy_timing`` and ``server_timing`` (ms);
- errors: one text frame with the reason, then the server closes the connection
  (1008 for a bad request, 1011 for a server-side failure; 1009 for a message over the size bound);
- ``GET /healthz`` on the same port answers 200.

Observations are mapped onto the model's camera slots and padded state by key sets
(`keys`, config/serving/*.yaml: aloha, droid, libero, pi0_ros), detected per request.
Normalisation, delta actions and image resizing happen here, server-side (`Policy.infer`).

pi0_ros extensions (ignored by openpi clients, never needed by them):
- ``pi0_ros/noise``: (chunk_size, action_dim) float array, the sampler's starting noise
  (deterministic inference: equal to a local ``Policy.infer(obs, noise)``);
- ``pi0_ros/guide``: ``{"actions": (chunk_size, dims), "weights": (chunk_size,)}`` the
  real-time-chunking guide, in the key set's action dims;
- ``pi0_ros/keys``: the key set's name (otherwise detected from the keys present);
- images as JPEG/PNG bytes instead of arrays.

Concurrency: several clients may connect (at most ``max_clients``; more are refused with HTTP
503); their requests queue for the one model, one inference at a time, in arrival order of the
lock. The time a request waited is ``server_timing.queue_ms``.
"""
from __future__ import annotations

import argparse
import http
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from pi0_ros.serving.keys import KeySet, KeySetError, detect, list_key_sets, load_key_set
from pi0_ros.serving.protocol import ProtocolError, packb, unpackb

logger = logging.getLogger(__name__)

EXT_NOISE = "pi0_ros/noise"
EXT_GUIDE = "pi0_ros/guide"
EXT_KEYS = "pi0_ros/keys"
EXTENSIONS = (EXT_NOISE, EXT_GUIDE, EXT_KEYS, "jpeg_images")
DEFAULT_PORT = 8000
DEFAULT_MAX_REQUEST_BYTES = 16 << 20   # 3 cameras at 224x224 uint8 are 0.45 MB
CLOSE_BAD_REQUEST, CLOSE_INTERNAL = 1008, 1011
API_KEY_ENV = "PI0_ROS_API_KEY"


class BadRequest(ValueError):
    """The client's message cannot be served (malformed, wrong keys, bad shapes)."""


def _crops_metadata(crops: dict[str, Any] | None) -> dict[str, list[float] | None] | None:
    if crops is None:
        return None
    return {slot: None if c is None else [float(v) for v in c] for slot, c in crops.items()}


class PolicyServer:
    """Serves `policy` (a pi0_ros Policy) to openpi-protocol clients.

    Args:
        key_sets: the observation layouts accepted (default: every config/serving YAML).
        host, port: bind address; port 0 picks a free port (see `.port`).
        max_request_bytes: larger messages close the connection with 1009.
        max_clients: connections served at once; more are refused with HTTP 503.
        api_key: if set, clients must send ``Authorization: Api-Key <key>`` (openpi-client's api_key).
    """

    def __init__(self, policy: Any, key_sets: list[KeySet] | None = None, *, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_clients: int = 4,
                 api_key: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self.policy = policy
        self.key_sets = key_sets if key_sets is not None else [load_key_set(n) for n in list_key_sets()]
        if not self.key_sets:
            raise ValueError("no key sets to serve")
        self.host, self._port = host, int(port)
        self.max_request_bytes = int(max_request_bytes)
        self.max_clients = int(max_clients)
        self.api_key = api_key or None
        self._extra_metadata = dict(metadata or {})
        self._lock = threading.Lock()          # one inference at a time: the request queue
        self._count_lock = threading.Lock()
        self._active = 0
        self._connections: set[Any] = set()
        self._server = None
        self._thread: threading.Thread | None = None
        self.requests = 0
        self.errors = 0

    # ------------------------------------------------------------------ info
    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.socket.getsockname()[1])
        return self._port

    @property
    def uri(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def metadata(self) -> dict[str, Any]:
        p = self.policy
        size = getattr(getattr(getattr(p, "config", None), "vision", None), "image_size", None)
        return {
            "server": "pi0_ros", "version": __import__("pi0_ros").__version__,
            "action_dim": int(p.action_dim), "chunk_size": int(p.chunk_size),
            "camera_slots": list(p.camera_names), "image_size": None if size is None else int(size),
            "random_weights": bool(getattr(p, "random_weights", False)),
            # The camera views the checkpoint was trained on: the server does not crop, the client
            # sends each slot's region of interest ([top, left, height, width] fractions; None: whole frame).
            "camera_crops": _crops_metadata(getattr(p, "camera_crops", None)),
            "noise_scale": float(getattr(p, "noise_scale", 1.0)),
            "key_sets": {k.name: k.describe() for k in self.key_sets},
            "extensions": list(EXTENSIONS), "max_request_bytes": self.max_request_bytes,
            **self._extra_metadata,
        }

    # ------------------------------------------------------------------ one request (no sockets)
    def handle(self, obs: Any) -> dict[str, Any]:
        """One decoded observation dict -> the reply dict (raises BadRequest for client errors)."""
        from pi0_ros.policy import PolicyInput
        from pi0_ros.realtime_chunking import ChunkGuide

        if not isinstance(obs, dict):
            raise BadRequest(f"an observation must be a map, got {type(obs).__name__}")
        p = self.policy
        try:
            name = obs.get(EXT_KEYS)
            if name is not None and not isinstance(name, str):
                raise BadRequest(f"{EXT_KEYS} must be a key set name")
            ks = detect(self.key_sets, obs, name)
            images, state, prompt = ks.decode(obs, p.action_dim, tuple(p.camera_names))
            noise = obs.get(EXT_NOISE)
            if noise is not None:
                expected = (p.chunk_size, p.action_dim)
                if not isinstance(noise, np.ndarray) or noise.shape != expected or noise.dtype.kind != "f" \
                        or not np.isfinite(noise).all():
                    raise BadRequest(f"{EXT_NOISE} must be a finite float array of shape {expected}")
                noise = noise.astype(np.float32)
            guide = None
            g = obs.get(EXT_GUIDE)
            if g is not None:
                if not isinstance(g, dict) or not isinstance(g.get("actions"), np.ndarray) \
                        or not isinstance(g.get("weights"), np.ndarray):
                    raise BadRequest(f"{EXT_GUIDE} must be {{actions: (H, dims) array, weights: (H,) array}}")
                ga = ks.place_actions(g["actions"].astype(np.float64), p.action_dim)
                if ga.shape[0] != p.chunk_size:
                    raise BadRequest(f"{EXT_GUIDE} actions must have {p.chunk_size} rows, got {ga.shape[0]}")
                guide = ChunkGuide(ga, np.array(g["weights"], dtype=np.float64))  # writable copy
        except (KeySetError, ValueError) as e:
            raise BadRequest(str(e)) from e
        t0 = time.perf_counter()
        with self._lock:
            t1 = time.perf_counter()
            out = p.infer(PolicyInput(images=images, state=state, prompt=prompt, guide=guide), noise=noise)
            t2 = time.perf_counter()
        self.requests += 1
        timing = out.timing
        return {
            "actions": ks.select_actions(out.actions),
            "policy_timing": {"infer_ms": timing.get("total", (t2 - t1) * 1e3), "model_ms": timing.get("model", 0.0),
                              "preprocess_ms": timing.get("preprocess", 0.0),
                              "postprocess_ms": timing.get("postprocess", 0.0)},
            "server_timing": {"infer_ms": (t2 - t1) * 1e3, "queue_ms": (t1 - t0) * 1e3},
            "key_set": ks.name,
        }

    # ------------------------------------------------------------------ websocket
    def _process_request(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.api_key is not None:
            got = request.headers.get("Authorization", "")
            if got != f"Api-Key {self.api_key}":
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong Api-Key\n")
        with self._count_lock:
            if self._active >= self.max_clients:
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                          f"busy: {self._active} clients connected (max {self.max_clients})\n")
        return None

    def _handler(self, ws) -> None:
        import websockets

        with self._count_lock:
            self._active += 1
            self._connections.add(ws)
        peer = ws.remote_address
        logger.info("client %s connected", peer)
        prev_total_ms = None
        try:
            ws.send(packb(self.metadata()))
            while True:
                msg = ws.recv()
                t0 = time.perf_counter()
                try:
                    if isinstance(msg, str):
                        raise BadRequest("observations must be binary msgpack frames, got a text frame")
                    try:
                        obs = unpackb(msg)
                    except ProtocolError as e:
                        raise BadRequest(str(e)) from e
                    t1 = time.perf_counter()
                    reply = self.handle(obs)
                    reply["server_timing"]["decode_ms"] = (t1 - t0) * 1e3
                    if prev_total_ms is not None:
                        reply["server_timing"]["prev_total_ms"] = prev_total_ms
                    data = packb(reply)
                except BadRequest as e:
                    self.errors += 1
                    logger.warning("client %s: bad request: %s", peer, e)
                    ws.send(f"pi0-ros serve: bad request: {e}")
                    ws.close(CLOSE_BAD_REQUEST, "bad request (reason in the previous frame)")
                    return
                except Exception as e:  # noqa: BLE001 - report, close this connection, keep serving
                    self.errors += 1
                    logger.exception("client %s: inference failed", peer)
                    ws.send(f"pi0-ros serve: internal error: {type(e).__name__}: {e}")
                    ws.close(CLOSE_INTERNAL, "internal server error (reason in the previous frame)")
                    return
                ws.send(data)
                prev_total_ms = (time.perf_counter() - t0) * 1e3
        except websockets.ConnectionClosed:
            pass
        finally:
            with self._count_lock:
                self._active -= 1
                self._connections.discard(ws)
            logger.info("client %s disconnected", peer)

    def bind(self) -> PolicyServer:
        """Open the listening socket (port 0: a free port, see `.port`)."""
        from websockets.sync.server import serve

        self._server = serve(self._handler, self.host, self._port, compression=None,
                             max_size=self.max_request_bytes, process_request=self._process_request,
                             server_header="pi0_ros", ping_interval=20, ping_timeout=60)
        return self

    def serve_forever(self) -> None:
        if self._server is None:
            self.bind()
        self._server.serve_forever()

    def start(self) -> PolicyServer:
        """Bind and serve on a background thread."""
        self.bind()
        self._thread = threading.Thread(target=self._server.serve_forever, name="pi0_serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        with self._count_lock:
            conns = list(self._connections)
        for c in conns:
            c.close(1001, "server shutting down")
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._server = None

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="", help="checkpoint directory ('' = tiny preset, RANDOM weights)")
    parser.add_argument("--asset-id", default="", help="norm stats asset (default: the checkpoint's only one)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default=None, help="model dtype (float32, bfloat16, ...; default: checkpoint's)")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="flow-matching Euler steps (default: the checkpoint's inference.json, else 10)")
    parser.add_argument("--noise-scale", type=float, default=None,
                        help="std of the sampler's starting noise, 1 = the paper's N(0, I), 0 = deterministic "
                             "(default: the checkpoint's inference.json, else 1)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0 = a free one, printed)")
    parser.add_argument("--keys", default="", help=f"comma-separated key sets (default all: {', '.join(list_key_sets())})")
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                        help="larger messages close the connection (1009)")
    parser.add_argument("--max-clients", type=int, default=4, help="connections at once; requests queue for the model")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV, ""),
                        help=f"require 'Authorization: Api-Key KEY' (default ${API_KEY_ENV})")
    parser.add_argument("--warmup", type=int, default=1, help="dummy inferences before accepting clients")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch default")


def sampler_settings(args: argparse.Namespace) -> dict:
    """noise_scale and num_steps: the option when given, else the checkpoint's inference.json,
    else the defaults (name -> inference_settings.Setting)."""
    from pi0_ros import inference_settings as isettings

    names = ("noise_scale", "num_steps")
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    return isettings.resolve(names, given, isettings.load(args.checkpoint), isettings.DEFAULTS, given_as="option")


def build_policy(args: argparse.Namespace):
    from pi0_ros import inference_settings as isettings
    from pi0_ros.policy import Policy

    settings = sampler_settings(args)
    logger.info("inference settings: %s", isettings.describe(settings))
    noise_scale, num_steps = settings["noise_scale"].value, settings["num_steps"].value
    if args.checkpoint:
        return Policy.from_checkpoint(args.checkpoint, asset_id=args.asset_id or None, device=args.device,
                                      num_steps=num_steps, dtype=args.dtype, noise_scale=noise_scale)
    policy = Policy.tiny_random(device=args.device, num_steps=num_steps)
    policy.noise_scale = noise_scale
    return policy


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="[serve] %(message)s")
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    policy = build_policy(args)
    policy.warmup(max(0, args.warmup))
    key_sets = [load_key_set(n.strip()) for n in args.keys.split(",") if n.strip()] or None
    server = PolicyServer(policy, key_sets, host=args.host, port=args.port,
                          max_request_bytes=int(args.max_request_mb * 2**20), max_clients=args.max_clients,
                          api_key=args.api_key or None, metadata={"checkpoint": args.checkpoint or "tiny-random"})
    server.bind()
    print(f"pi0-ros serve: listening on {server.uri} ({policy!r}; key sets "
          f"{', '.join(k.name for k in server.key_sets)}; health http://{server.host}:{server.port}/healthz)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
