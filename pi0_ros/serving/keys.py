"""Key sets: how an openpi observation dict maps onto the model's camera slots and state (ROS-free).

openpi clients name their inputs per robot family (ALOHA: ``images.cam_high`` (3, H, W) +
``state`` (14,); DROID: ``observation/exterior_image_1_left`` (H, W, 3) + joint and gripper
positions; LIBERO: ``observation/image`` + ``observation/state``). A key set is one small YAML
in config/serving/ (data, not code per robot)::

    name: droid
    images: {base_0_rgb: {key: observation/exterior_image_1_left, layout: hwc}, ...}
    state: [{key: observation/joint_position, slots: [0, 7]}, ...]   # [start, stop) in the padded state
    actions: {slots: [0, 8]}                                           # reply: (horizon, 8)
    prompt: prompt

A "." in a key is a nested dict (``images.cam_high`` = ``obs["images"]["cam_high"]``); a stop
of null means "up to the model's action_dim". The same key set works both ways: the server
decodes observations with it (`decode`, `select_actions`), the client builds them
(`encode`, `place_actions`).

Images may be (H, W, 3) or (3, H, W), uint8 or float in [0, 1] (openpi's convention), or, as
pi0_ros's extension, JPEG/PNG bytes. Shapes: state vectors are (action_dim,) float64, images
(H, W, 3) uint8 RGB, action chunks (horizon, dims).
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pi0_ros.images import decode_compressed, encode_compressed, resize_with_pad
from pi0_ros.model.config import CAMERA_NAMES
from pi0_ros.paths import config_dir

MAX_ENCODED_PIXELS = 4096 * 4096  # a JPEG/PNG header announcing more is refused before decoding
MAX_PROMPT_CHARS = 2000


class KeySetError(ValueError):
    """A bad key-set YAML, or an observation that does not fit its key set."""


@dataclass(frozen=True)
class ImageKey:
    slot: str     # model camera slot (base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb)
    key: str      # observation key, "." for nesting
    layout: str   # what clients send: "chw" or "hwc"


@dataclass(frozen=True)
class StateKey:
    key: str
    start: int
    stop: int | None  # None: up to the model's action_dim


@dataclass(frozen=True)
class KeySet:
    name: str
    images: tuple[ImageKey, ...]
    state: tuple[StateKey, ...]
    actions: tuple[int, int | None]
    prompt: str = "prompt"
    ignore: tuple[str, ...] = ()

    # ------------------------------------------------------------------ info
    def matches(self, obs: Mapping[str, Any]) -> bool:
        """True if every state key and at least one image key of this set is in `obs`."""
        return all(_lookup(obs, s.key) is not None for s in self.state) and any(
            _lookup(obs, i.key) is not None for i in self.images)

    def action_slots(self, action_dim: int) -> tuple[int, int]:
        start, stop = self.actions
        stop = action_dim if stop is None else stop
        if stop > action_dim:
            raise KeySetError(f"key set {self.name} returns action slots [{start}, {stop}) but the model has "
                              f"action_dim {action_dim}")
        return start, stop

    def state_slots(self) -> list[tuple[int, int | None]]:
        return [(s.start, s.stop) for s in self.state]

    def describe(self) -> dict[str, Any]:
        return {"images": {i.slot: i.key for i in self.images}, "state": {s.key: [s.start, s.stop] for s in self.state},
                "actions": list(self.actions), "prompt": self.prompt}

    # ------------------------------------------------------------------ server side
    def decode(self, obs: Mapping[str, Any], action_dim: int,
               slots: tuple[str, ...] = CAMERA_NAMES) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
        """obs -> (slot -> (H, W, 3) uint8 images (only slots in `slots`), (action_dim,) state, prompt)."""
        images = {}
        for ik in self.images:
            value = _lookup(obs, ik.key)
            if value is None or ik.slot not in slots:
                continue
            images[ik.slot] = to_rgb_uint8(value, ik.key)
        state = np.zeros(action_dim, dtype=np.float64)
        for sk in self.state:
            value = _lookup(obs, sk.key)
            if value is None:
                raise KeySetError(f"observation has no '{sk.key}' (key set {self.name})")
            v = _as_float_vector(value, sk.key)
            stop = sk.start + v.size if sk.stop is None else sk.stop
            if v.size != stop - sk.start:
                raise KeySetError(f"'{sk.key}' must have {stop - sk.start} values, got {v.size}")
            if stop > action_dim:
                raise KeySetError(f"'{sk.key}' fills state slots [{sk.start}, {stop}) but the model's action_dim "
                                  f"is {action_dim}")
            state[sk.start:stop] = v
        prompt = _lookup(obs, self.prompt)
        if prompt is None:
            prompt = ""
        if isinstance(prompt, bytes):
            prompt = prompt.decode("utf-8", "replace")
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise KeySetError(f"'{self.prompt}' must be a string of at most {MAX_PROMPT_CHARS} characters")
        return images, state, prompt

    def select_actions(self, padded: np.ndarray) -> np.ndarray:
        """(H, action_dim) model chunk -> (H, n) the reply's actions."""
        start, stop = self.action_slots(padded.shape[-1])
        return np.ascontiguousarray(padded[:, start:stop])

    # ------------------------------------------------------------------ client side
    def encode(self, images: Mapping[str, np.ndarray], state: np.ndarray, prompt: str, *,
               image_size: int | None = 224, jpeg_quality: int = 0,
               slots: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Build the observation dict: `images` slot -> (H, W, 3) uint8, `state` (D,) padded.

        Images are resized with padding to `image_size` (None: as they are) and sent in the
        key's layout, or as JPEG bytes when `jpeg_quality` > 0 (pi0_ros extension). Only
        `slots` (default: all of the key set's) are sent."""
        obs: dict[str, Any] = {}
        state = np.asarray(state, dtype=np.float64)
        for sk in self.state:
            stop = state.size if sk.stop is None else sk.stop
            if stop > state.size:
                raise KeySetError(f"key set {self.name} needs state slots up to {stop}, the state has {state.size}")
            _store(obs, sk.key, np.ascontiguousarray(state[sk.start:stop]))
        covered = np.zeros(state.size, dtype=bool)
        for start, stop in self.state_slots():
            covered[start:(state.size if stop is None else stop)] = True
        if np.any(state[~covered] != 0):
            lost = np.flatnonzero(~covered & (state != 0)).tolist()
            raise KeySetError(f"key set {self.name} has no key for state slots {lost}")
        for ik in self.images:
            img = images.get(ik.slot)
            if img is None or (slots is not None and ik.slot not in slots):
                continue
            if image_size is not None and img.shape[:2] != (image_size, image_size):
                img = resize_with_pad(img, image_size, image_size)
            if jpeg_quality > 0:
                value: Any = encode_compressed(img, "jpeg", jpeg_quality)
            elif ik.layout == "chw":
                value = np.ascontiguousarray(img.transpose(2, 0, 1))
            else:
                value = np.ascontiguousarray(img)
            _store(obs, ik.key, value)
        _store(obs, self.prompt, prompt)
        return obs

    def place_actions(self, actions: np.ndarray, action_dim: int) -> np.ndarray:
        """(H, n) reply actions -> (H, action_dim) padded chunk (zeros outside the key set's slots;
        with an open-ended set, dims beyond action_dim are dropped)."""
        a = np.asarray(actions)
        if a.ndim != 2:
            raise KeySetError(f"actions must be (horizon, dims), got shape {a.shape}")
        start, stop = self.actions
        if stop is None:
            n = min(a.shape[1], action_dim - start)
        else:
            n = stop - start
            if a.shape[1] != n:
                raise KeySetError(f"key set {self.name} expects {n} action dims, got {a.shape[1]}")
            if stop > action_dim:
                raise KeySetError(f"actions fill slots [{start}, {stop}) beyond action_dim {action_dim}")
        out = np.zeros((a.shape[0], action_dim), dtype=np.float64)
        out[:, start:start + n] = a[:, :n]
        return out


# ---------------------------------------------------------------------- values
def to_rgb_uint8(value: Any, name: str = "image") -> np.ndarray:
    """(H, W, 3) / (3, H, W) uint8 or float [0, 1] array, or JPEG/PNG bytes -> (H, W, 3) uint8 RGB."""
    if isinstance(value, (bytes, bytearray)):
        _check_encoded_size(bytes(value), name)
        try:
            return decode_compressed(bytes(value))
        except Exception as e:  # noqa: BLE001 - any decoder failure is the client's bad data
            raise KeySetError(f"'{name}': cannot decode the compressed image: {e}") from e
    if not isinstance(value, np.ndarray):
        raise KeySetError(f"'{name}' must be an image array or JPEG/PNG bytes, got {type(value).__name__}")
    img = value
    if img.ndim != 3 or 3 not in (img.shape[0], img.shape[-1]):
        raise KeySetError(f"'{name}' must be (H, W, 3) or (3, H, W), got shape {img.shape}")
    if img.shape[-1] != 3:   # channel-first, as openpi's ALOHA clients send
        img = img.transpose(1, 2, 0)
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise KeySetError(f"'{name}' has non-finite pixels")
        img = (255 * np.clip(img, 0.0, 1.0)).astype(np.uint8)   # openpi: float images are [0, 1]
    elif img.dtype != np.uint8:
        raise KeySetError(f"'{name}' must be uint8 or float, got {img.dtype}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise KeySetError(f"'{name}' is empty: {img.shape}")
    return np.ascontiguousarray(img)


def _check_encoded_size(data: bytes, name: str) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:   # reads the header only
            w, h = im.size
            fmt = im.format
    except Exception as e:  # noqa: BLE001
        raise KeySetError(f"'{name}': not a JPEG/PNG image: {e}") from e
    if fmt not in ("JPEG", "PNG") or w * h > MAX_ENCODED_PIXELS:
        raise KeySetError(f"'{name}': only JPEG/PNG up to {MAX_ENCODED_PIXELS} pixels, got {fmt} {w}x{h}")


def _as_float_vector(value: Any, name: str) -> np.ndarray:
    if isinstance(value, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        value = np.asarray(value, dtype=np.float64)
    elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        value = np.asarray([value], dtype=np.float64)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf" or value.ndim > 1:
        raise KeySetError(f"'{name}' must be a numeric vector, got {type(value).__name__} "
                          f"{getattr(value, 'shape', '')}")
    v = value.astype(np.float64).reshape(-1)
    if not np.isfinite(v).all():
        raise KeySetError(f"'{name}' has non-finite values")
    return v


def _lookup(obs: Mapping[str, Any], key: str) -> Any:
    if key in obs:
        return obs[key]
    node: Any = obs
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _store(obs: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = obs
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# ---------------------------------------------------------------------- loading
def key_sets_dir() -> Path:
    return config_dir() / "serving"


def list_key_sets() -> list[str]:
    return sorted(p.stem for p in key_sets_dir().glob("*.yaml"))


def load_key_set(name_or_path: str | Path) -> KeySet:
    """A key set by name (config/serving/<name>.yaml) or YAML path."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = key_sets_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            raise KeySetError(f"unknown key set '{name_or_path}'; known: {', '.join(list_key_sets())}")
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KeySetError(f"{p}: cannot read YAML: {e}") from e
    return parse_key_set(data, str(p))


def parse_key_set(data: Any, source: str = "<dict>") -> KeySet:
    def fail(msg: str) -> KeySetError:
        return KeySetError(f"{source}: {msg}")

    def slots(v: Any, where: str) -> tuple[int, int | None]:
        if (not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], int) or v[0] < 0
                or not (v[1] is None or (isinstance(v[1], int) and v[1] > v[0]))):
            raise fail(f"{where}: slots must be [start, stop) with 0 <= start < stop (stop may be null), got {v!r}")
        return int(v[0]), None if v[1] is None else int(v[1])

    if not isinstance(data, dict):
        raise fail("expected a mapping")
    for k in ("name", "images", "state", "actions"):
        if k not in data:
            raise fail(f"missing '{k}'")
    images = []
    if not isinstance(data["images"], dict) or not data["images"]:
        raise fail("images: expected a non-empty mapping slot -> {key, layout}")
    for slot, spec in data["images"].items():
        if slot not in CAMERA_NAMES:
            raise fail(f"images.{slot}: unknown camera slot (known: {', '.join(CAMERA_NAMES)})")
        if not isinstance(spec, dict) or not isinstance(spec.get("key"), str):
            raise fail(f"images.{slot}: expected {{key: ..., layout: chw|hwc}}")
        layout = spec.get("layout", "hwc")
        if layout not in ("chw", "hwc"):
            raise fail(f"images.{slot}.layout must be chw or hwc, got {layout!r}")
        images.append(ImageKey(slot, spec["key"], layout))
    if not isinstance(data["state"], list) or not data["state"]:
        raise fail("state: expected a non-empty list of {key, slots}")
    state, taken = [], []
    for i, spec in enumerate(data["state"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("key"), str):
            raise fail(f"state[{i}]: expected {{key: ..., slots: [start, stop]}}")
        start, stop = slots(spec.get("slots"), f"state[{i}]")
        for s0, s1 in taken:
            if start < (s1 if s1 is not None else 1 << 30) and s0 < (stop if stop is not None else 1 << 30):
                raise fail(f"state[{i}] ({spec['key']}): slots overlap another state key")
        taken.append((start, stop))
        state.append(StateKey(spec["key"], start, stop))
    if not isinstance(data["actions"], dict):
        raise fail("actions: expected {slots: [start, stop]}")
    actions = slots(data["actions"].get("slots"), "actions")
    prompt = data.get("prompt", "prompt")
    ignore = data.get("ignore", []) or []
    if not isinstance(prompt, str) or not isinstance(ignore, list):
        raise fail("prompt must be a key, ignore a list of keys")
    return KeySet(str(data["name"]), tuple(images), tuple(state), actions, prompt, tuple(map(str, ignore)))


def detect(key_sets: list[KeySet], obs: Mapping[str, Any], name: str | None = None) -> KeySet:
    """The key set `obs` is in: `name` if given (pi0_ros extension ``pi0_ros/keys``), else the one
    whose state keys are all present, preferring those with an image present (KeySetError naming
    the candidates otherwise)."""
    if name is not None:
        for k in key_sets:
            if k.name == name:
                return k
        raise KeySetError(f"unknown key set {name!r}; this server has {[k.name for k in key_sets]}")
    by_state = [k for k in key_sets if all(_lookup(obs, s.key) is not None for s in k.state)]
    found = [k for k in by_state if k.matches(obs)] or by_state
    if len(found) == 1:
        return found[0]
    top = sorted(obs)[:12]
    if not found:
        raise KeySetError(f"observation keys {top} match no key set ("
                          + "; ".join(f"{k.name}: state {[s.key for s in k.state]} + an image of "
                                      f"{[i.key for i in k.images]}" for k in key_sets) + ")")
    raise KeySetError(f"observation keys {top} match several key sets: {[k.name for k in found]}")
