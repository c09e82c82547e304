"""The inference settings a checkpoint was validated with: ``<checkpoint>/inference.json`` (ROS-free).

A policy's success rate depends on how it is run, not only on its weights: the shipped sim
checkpoint picks up the named cube in 96 % of episodes with real-time chunking and deterministic
sampling, in 56 % with the paper's plain chunking. So a checkpoint may carry those settings::

    {
      "realtime_chunking": true,     # policy node: each chunk continues the previous one
      "noise_scale": 0.0,            # policy node: std of the sampler's starting noise, in [0, 1]
      "execute_steps": 25,           # executor node: actions executed per chunk, >= 1
      "num_steps": 10,               # policy node: flow-matching Euler steps, >= 1 (optional)
      "validated": {                 # optional, free-form: where these settings were measured
        "embodiment": "trossen_bimanual", "task": "pick_cube", "success_rate": 0.96,
        "successes": 48, "episodes": 50, "seeds": "1000-1049", "command": "pi0-ros eval ..."
      }
    }

Every key is optional; any other key is an error (a typo must not be silently ignored).

Precedence (:func:`resolve`), for the policy node, the executor node, ``pi0-ros eval``,
``demo`` and ``serve`` alike: a value the user gave explicitly (a node parameter that was set:
``-p``, a parameters file, a launch argument; a command-line option) > the checkpoint's
``inference.json`` > the code default. Training never writes this file (it cannot know how
the result behaves closed loop); ``pi0-ros merge-lora`` copies an adapter directory's.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

FILENAME = "inference.json"
SETTINGS = ("realtime_chunking", "noise_scale", "execute_steps", "num_steps")
VALIDATED = "validated"
# Code defaults where neither the user nor the checkpoint says (execute_steps: the embodiment's).
DEFAULTS: dict[str, Any] = {"realtime_chunking": False, "noise_scale": 1.0, "num_steps": 10}
# Which node applies each setting (ROS parameter names are the setting names).
NODE_OF = {"realtime_chunking": "policy", "noise_scale": "policy", "num_steps": "policy", "execute_steps": "executor"}


class InferenceSettingsError(ValueError):
    """An invalid inference.json or setting value."""


def check_value(name: str, value: Any, where: str = "") -> Any:
    """``value`` of setting ``name`` normalised (noise_scale a float), or InferenceSettingsError."""
    at = f"{where}: " if where else ""
    if name == "realtime_chunking":
        if not isinstance(value, bool):
            raise InferenceSettingsError(f"{at}realtime_chunking must be true or false, got {value!r}")
        return value
    if name == "noise_scale":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= value <= 1.0:
            raise InferenceSettingsError(f"{at}noise_scale must be a number within [0, 1], got {value!r}")
        return float(value)
    if name in ("execute_steps", "num_steps"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InferenceSettingsError(f"{at}{name} must be an integer >= 1, got {value!r}")
        return int(value)
    raise InferenceSettingsError(f"{at}unknown setting '{name}'; known: {', '.join(SETTINGS)}")


@dataclass(frozen=True)
class CheckpointSettings:
    """What a checkpoint's inference.json says: ``values`` holds only the keys it sets."""

    values: dict[str, Any] = field(default_factory=dict)
    validated: dict[str, Any] | None = None
    path: Path | None = None          # None: the checkpoint has no inference.json (or there is no checkpoint)

    def __bool__(self) -> bool:
        return self.path is not None

    def validation(self, embodiment: str | None = None) -> str:
        """One line on where the settings were validated, '' when the file does not say.

        A multi-robot file keeps one result per robot under ``embodiments``; with ``embodiment``
        the line gives that robot's (real time, and lockstep when measured)."""
        v = self.validated or {}
        if not v:
            return ""
        parts = []
        per_robot = v.get("embodiments")
        result = dict(v)
        if embodiment and isinstance(per_robot, dict) and isinstance(per_robot.get(embodiment), dict):
            result = {"episodes": v.get("episodes"), "task": v.get("task"), **per_robot[embodiment],
                      "embodiment": embodiment}
        if isinstance(result.get("success_rate"), (int, float)):
            rate = f"{result['success_rate'] * 100:.0f} %"
            if result.get("successes") is not None and result.get("episodes") is not None:
                rate += f" ({result['successes']}/{result['episodes']})"
            parts.append(f"success {rate}")
        if isinstance(result.get("lockstep_success_rate"), (int, float)):
            parts.append(f"{result['lockstep_success_rate'] * 100:.0f} % in lockstep")
        if embodiment and isinstance(per_robot, dict) and embodiment not in per_robot:
            parts.append(f"not on {embodiment} (on {', '.join(sorted(per_robot))})")
        where = " ".join(str(result[k]) for k in ("embodiment", "task") if result.get(k))
        if where:
            parts.append(f"on {where}")
        if v.get("seeds") is not None:
            parts.append(f"seeds {v['seeds']}")
        return ", ".join(parts) or json.dumps(v, sort_keys=True)


def parse(data: Any, where: str = FILENAME) -> CheckpointSettings:
    """Validate the decoded contents of an inference.json (``where`` names it in errors)."""
    if not isinstance(data, dict):
        raise InferenceSettingsError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SETTINGS) - {VALIDATED})
    if unknown:
        raise InferenceSettingsError(f"{where}: unknown keys {unknown}; known: {', '.join(SETTINGS)}, {VALIDATED}")
    validated = data.get(VALIDATED)
    if validated is not None and not isinstance(validated, dict):
        raise InferenceSettingsError(f"{where}: '{VALIDATED}' must be an object, got {type(validated).__name__}")
    values = {k: check_value(k, data[k], where) for k in SETTINGS if k in data}
    return CheckpointSettings(values=values, validated=validated)


def settings_path(checkpoint: str | os.PathLike) -> Path:
    return Path(checkpoint) / FILENAME


def load(checkpoint: str | os.PathLike | None) -> CheckpointSettings:
    """The inference settings of a checkpoint (or LoRA adapter) directory; empty when there is no
    checkpoint or it has no inference.json. An unreadable or invalid file raises
    InferenceSettingsError: a checkpoint must not quietly run with other settings than it says."""
    if not checkpoint:
        return CheckpointSettings()
    path = settings_path(checkpoint)
    if not path.is_file():
        return CheckpointSettings()
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InferenceSettingsError(f"{path}: cannot read: {e}") from e
    s = parse(data, str(path))
    return CheckpointSettings(values=s.values, validated=s.validated, path=path)


def write(checkpoint: str | os.PathLike, values: Mapping[str, Any],
          validated: Mapping[str, Any] | None = None) -> Path:
    """Write ``<checkpoint>/inference.json`` (validated first; keys in SETTINGS order)."""
    data: dict[str, Any] = {k: check_value(k, values[k]) for k in SETTINGS if k in values}
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise InferenceSettingsError(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    if validated:
        data[VALIDATED] = dict(validated)
    path = settings_path(checkpoint)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str     # e.g. "parameter", "option", "checkpoint <path>", "default"


def resolve(names: Iterable[str], given: Mapping[str, Any], checkpoint: CheckpointSettings,
            defaults: Mapping[str, Any], given_as: str = "parameter") -> dict[str, Setting]:
    """Each setting in ``names``: ``given`` (what the user set explicitly, only those keys) wins
    over the checkpoint's file, which wins over ``defaults``. Given values are checked too."""
    out = {}
    for name in names:
        if name in given and given[name] is not None:
            out[name] = Setting(check_value(name, given[name], given_as), given_as)
        elif name in checkpoint.values:
            out[name] = Setting(checkpoint.values[name], f"checkpoint {checkpoint.path}")
        else:
            out[name] = Setting(defaults[name], "default")
    return out


def as_given(settings: Mapping[str, Setting], given: Iterable[str], given_as: str) -> dict[str, Setting]:
    """``settings`` with the source of those in ``given`` relabelled (a node reports an option that
    `eval` passed it as "parameter")."""
    given = set(given)
    return {k: Setting(s.value, given_as) if k in given else s for k, s in settings.items()}


def describe(settings: Mapping[str, Setting]) -> str:
    """'realtime_chunking true (checkpoint …/inference.json), noise_scale 1.0 (default)'."""
    def fmt(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    return ", ".join(f"{k} {fmt(s.value)} ({s.source})" for k, s in settings.items())


def embodiment_mismatch(checkpoint: CheckpointSettings, embodiment: str) -> str:
    """A warning when the file says it was validated on another embodiment, else ''."""
    validated_on = (checkpoint.validated or {}).get("embodiment")
    if checkpoint and validated_on and validated_on != embodiment:
        return (f"{checkpoint.path} was validated on '{validated_on}', this is '{embodiment}': its settings "
                f"(execute_steps at that control rate) may not fit")
    return ""


# ---------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--realtime-chunking/--no-realtime-chunking, --noise-scale, --num-steps, --execute-steps,
    all defaulting to None: not given = the checkpoint's inference.json, else the code default."""
    unset = "default: the checkpoint's inference.json, else "
    parser.add_argument("--realtime-chunking", action=argparse.BooleanOptionalAction, default=None,
                        help=f"each chunk continues the rest of the previous one ({unset}off)")
    parser.add_argument("--noise-scale", type=float, default=None,
                        help=f"std of the sampler's starting noise, 1 = the paper's N(0, I), 0 = deterministic ({unset}1)")
    parser.add_argument("--num-steps", type=int, default=None, help=f"flow-matching Euler steps ({unset}10)")
    parser.add_argument("--execute-steps", type=int, default=None,
                        help=f"actions executed per chunk ({unset}the embodiment's)")


def given_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (add_arguments), checked."""
    return {k: check_value(k, getattr(args, k), f"--{k.replace('_', '-')}") for k in SETTINGS
            if getattr(args, k, None) is not None}


def node_params(given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Given settings as node parameters: {"policy": {...}, "executor": {...}} (only what was given,
    so the nodes still take the rest from the checkpoint)."""
    out: dict[str, dict[str, Any]] = {"policy": {}, "executor": {}}
    for k, v in given.items():
        out[NODE_OF[k]][k] = v
    return out


def inference_threads(requested: int, cpu_count: int | None) -> int | None:
    """Intra-op threads for inference: `requested` > 0 as given, -1 torch's default (None: leave
    it), 0 auto = half the cores, at least 1.

    Why not one per core (torch's default): an OpenMP forward pass waits at every parallel op
    for its slowest thread, so ONE busy core elsewhere (a training job, even at nice 19) stalls
    every op by a scheduler slice. Measured on the 2-core box beside a nice-19 training job:
    real-time success of the shipped checkpoint 0-1/8 with 2 threads, 8/8 with 1."""
    if requested > 0:
        return requested
    if requested == -1:
        return None
    if requested != 0:
        raise ValueError(f"torch_threads must be > 0, 0 (auto) or -1 (torch default), got {requested}")
    return max(1, (cpu_count or 1) // 2)
