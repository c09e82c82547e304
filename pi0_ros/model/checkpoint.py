"""Load and save pi0 / pi0.5 checkpoints in the openpi PyTorch format (safetensors only, never pickle).

A checkpoint directory holds ``model.safetensors`` and ``config.json`` (others add
``assets/`` and tokenizer files; this module never touches them). Accepted weight layouts:

* openpi PyTorch port: ``paligemma_with_expert.paligemma.model.language_model.layers.{i}...``,
  ``paligemma_with_expert.gemma_expert.model.layers.{i}...``, ``state_proj``, ``action_*``.
  The tied text embedding may be stored only as ``paligemma_with_expert.paligemma.lm_head.weight``
  (safetensors deduplication): it is then used as ``embed_tokens``. When both are present,
  ``lm_head`` is ignored (it is the same tensor).
* LeRobot >= 0.4: the same names under a ``model.`` prefix.
* older transformers naming (``paligemma.language_model.model.*``, ``paligemma.vision_tower.*``,
  ``paligemma.multi_modal_projector.*``) is renamed to the above.

π0.5 checkpoints have the same layouts with π0.5's parameters (``time_mlp_in/out`` instead of
``state_proj`` / ``action_time_mlp_*``; the expert's norms as ``...layernorm.dense`` and
``norm.dense``): the key check is against the model the config describes, so a π0 config with
π0.5 weights (or the reverse) fails with the list of differences.

Ignored (unused by pi0): the action expert's ``lm_head.weight`` and ``model.embed_tokens.weight``.
Every other key must match a parameter exactly, with the same shape; otherwise
``CheckpointError`` names every missing, unexpected and misshapen key.

Accepted ``config.json`` formats: ours (``"format": "pi0_ros"``, the PI0Config fields incl.
``family``; older files without it are π0), openpi's converter (``action_dim``,
``action_horizon``, ``paligemma_variant``, ``action_expert_variant``, ``precision``, ``pi05``)
and LeRobot's (``"type": "pi0"`` or ``"pi05"``, ``max_action_dim``, ``chunk_size``,
``tokenizer_max_length``, variants, ``dtype``). The family decides the prompt budget default
(π0 48, π0.5 200 tokens), as in openpi and LeRobot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import DEFAULT_MAX_TOKEN_LEN, GEMMA_VARIANTS, PALIGEMMA_VOCAB_SIZE, SIGLIP_SO400M_14, PI0Config
from .pi0 import TORCH_DTYPES, PI0Model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_NAME = "pi0_ros"
FORMAT_VERSION = 1

EMBED_KEY = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "paligemma_with_expert.paligemma.lm_head.weight"
IGNORED_KEYS = frozenset(
    {
        "paligemma_with_expert.gemma_expert.lm_head.weight",
        "paligemma_with_expert.gemma_expert.model.embed_tokens.weight",
    }
)
LEROBOT_PREFIX = "model."
# (old prefix, new prefix): transformers < 4.52 PaliGemma naming -> current naming
LEGACY_RENAMES = (
    ("paligemma_with_expert.paligemma.language_model.model.", "paligemma_with_expert.paligemma.model.language_model."),
    ("paligemma_with_expert.paligemma.language_model.lm_head.", "paligemma_with_expert.paligemma.lm_head."),
    ("paligemma_with_expert.paligemma.vision_tower.", "paligemma_with_expert.paligemma.model.vision_tower."),
    (
        "paligemma_with_expert.paligemma.multi_modal_projector.",
        "paligemma_with_expert.paligemma.model.multi_modal_projector.",
    ),
)


class CheckpointError(ValueError):
    """A checkpoint directory, config or weight file does not fit the pi0 network."""


# --------------------------------------------------------------------------- config


def _variant(name: str, field: str) -> Any:
    try:
        return GEMMA_VARIANTS[name]
    except KeyError:
        raise CheckpointError(f"config.json: unknown {field} {name!r}; known: {sorted(GEMMA_VARIANTS)}") from None


def config_from_dict(d: dict[str, Any]) -> PI0Config:
    """PI0Config from a config.json dict in our, openpi's or LeRobot's format."""
    try:
        if d.get("format") == FORMAT_NAME or ("vision" in d and "vlm" in d):
            fields = {k: v for k, v in d.items() if k not in ("format", "format_version")}
            return PI0Config.from_dict(fields)
        if "type" in d or "max_action_dim" in d:  # LeRobot
            family = d.get("type", "pi0")
            if family not in ("pi0", "pi05"):
                raise CheckpointError(f"config.json: LeRobot policy type {family!r} is not pi0 or pi05")
            res = d.get("image_resolution") or (SIGLIP_SO400M_14.image_size,) * 2
            if res[0] != res[1]:
                raise CheckpointError(f"config.json: non-square image_resolution {res}")
            dtype = d.get("dtype", "float32")
            return PI0Config(
                vision=SIGLIP_SO400M_14.__class__(**{**SIGLIP_SO400M_14.__dict__, "image_size": int(res[0])}),
                vlm=_variant(d.get("paligemma_variant", "gemma_2b"), "paligemma_variant"),
                expert=_variant(d.get("action_expert_variant", "gemma_300m"), "action_expert_variant"),
                vocab_size=PALIGEMMA_VOCAB_SIZE,
                action_dim=int(d.get("max_action_dim", 32)),
                chunk_size=int(d.get("chunk_size", 50)),
                max_token_len=int(d.get("tokenizer_max_length", DEFAULT_MAX_TOKEN_LEN[family])),
                dtype=dtype if dtype in TORCH_DTYPES else "float32",
                family=family,
            )
        if "action_horizon" in d or "paligemma_variant" in d:  # openpi converter
            family = "pi05" if d.get("pi05", False) else "pi0"
            precision = d.get("precision", "bfloat16")
            return PI0Config(
                vision=SIGLIP_SO400M_14,
                vlm=_variant(d.get("paligemma_variant", "gemma_2b"), "paligemma_variant"),
                expert=_variant(d.get("action_expert_variant", "gemma_300m"), "action_expert_variant"),
                vocab_size=PALIGEMMA_VOCAB_SIZE,
                action_dim=int(d.get("action_dim", 32)),
                chunk_size=int(d.get("action_horizon", 50)),
                max_token_len=int(d.get("max_token_len", DEFAULT_MAX_TOKEN_LEN[family])),
                dtype=precision if precision in TORCH_DTYPES else "bfloat16",
                family=family,
            )
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"config.json: invalid pi0 config: {exc}") from exc
    raise CheckpointError(
        "config.json: unrecognised format (expected pi0_ros, openpi or LeRobot pi0 config); "
        f"keys: {sorted(d)}"
    )


# --------------------------------------------------------------------------- weights


def normalize_keys(keys: list[str]) -> dict[str, str | None]:
    """Map checkpoint keys to our parameter names (None = deliberately ignored)."""
    lerobot = any(k.startswith(LEROBOT_PREFIX + "paligemma_with_expert.") for k in keys)
    mapping: dict[str, str | None] = {}
    for key in keys:
        name = key[len(LEROBOT_PREFIX) :] if lerobot and key.startswith(LEROBOT_PREFIX) else key
        for old, new in LEGACY_RENAMES:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        mapping[key] = name
    renamed = set(mapping.values())
    for key, name in mapping.items():
        if name in IGNORED_KEYS:
            mapping[key] = None
        elif name == LM_HEAD_KEY:
            # tied embedding stored only as lm_head -> use it as embed_tokens
            mapping[key] = None if EMBED_KEY in renamed else EMBED_KEY
    return mapping


def load_config(directory: str | Path, dtype: torch.dtype | None = None) -> PI0Config:
    """The PI0Config of a checkpoint directory (its config.json); ``dtype`` as in load_checkpoint."""
    config_path = Path(directory) / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {directory}: missing {CONFIG_NAME}")
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: cannot read JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    config = config_from_dict(raw)
    if dtype is not None:
        names = {v: k for k, v in TORCH_DTYPES.items()}
        if dtype not in names:
            raise CheckpointError(f"unsupported dtype {dtype}; use one of {list(TORCH_DTYPES.values())}")
        config = config.replace(dtype=names[dtype])
    return config


def load_checkpoint(
    directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> PI0Model:
    """Build a PI0Model from ``directory`` (config.json + model.safetensors).

    ``dtype`` overrides the dtype of the big matrices (e.g. torch.float32 to run a bf16
    checkpoint on CPU); by default the config's dtype is used. Norms, patch/position
    embeddings and the action/state projections are always float32.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory}: missing {path.name}")
    config = load_config(directory, dtype)

    model = PI0Model(config, device="meta")
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    device = torch.device(device)
    try:
        f = safe_open(str(weights_path), framework="pt", device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{weights_path}: not a readable safetensors file: {exc}") from exc
    with f:
        keys = list(f.keys())
        mapping = normalize_keys(keys)
        sources: dict[str, str] = {}
        duplicated = []
        for key, name in mapping.items():
            if name is None:
                continue
            if name in sources:
                duplicated.append(f"{key} (also {sources[name]})")
            sources[name] = key
        missing = sorted(set(expected) - set(sources))
        unexpected = sorted(k for n, k in sources.items() if n not in expected)
        shapes = {n: tuple(f.get_slice(k).get_shape()) for n, k in sources.items() if n in expected}
        misshapen = sorted(
            f"{sources[n]}: checkpoint {shape} vs model {expected[n][0]}"
            for n, shape in shapes.items()
            if shape != expected[n][0]
        )
        if missing or unexpected or misshapen or duplicated:
            parts = [f"checkpoint {weights_path} does not fit the {config.family} config in {config_path.name}"]
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("misshapen keys", misshapen),
                ("keys mapping to the same parameter", duplicated),
            ):
                if items:
                    parts.append(f"{len(items)} {label}: " + ", ".join(items))
            raise CheckpointError("; ".join(parts))
        state = {}
        for name, (_, want_dtype) in expected.items():
            t = f.get_tensor(sources[name])
            if not t.is_floating_point():
                raise CheckpointError(f"{sources[name]}: expected a floating point tensor, got {t.dtype}")
            state[name] = t.to(device=device, dtype=want_dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def save_checkpoint(model: PI0Model, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model.safetensors`` (openpi key names) and ``config.json`` into ``directory``.

    ``state_dict``: the weights to write instead of ``model.state_dict()`` (e.g. gathered from
    an FSDP2-sharded model, whose own state dict holds shards)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in (state_dict or model.state_dict()).items()}
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_NAME)
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **model.config.to_dict()}
    tmp = directory / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, directory / CONFIG_NAME)
