"""Training checkpoints: OUT/checkpoints/step_N (a policy directory plus train_state/), the
``latest`` pointer, and restoring the optimizer (also FSDP2's, sharded) on --resume."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from pi0_ros.model.normalize import NormStats

if TYPE_CHECKING:
    from pi0_ros.training.train import TrainConfig

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAIN_STATE = "train_state"


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step_{step:06d}"


def latest_checkpoint(out: Path) -> Path | None:
    f = out / CHECKPOINTS / LATEST
    if not f.is_file():
        return None
    p = out / CHECKPOINTS / f.read_text().strip()
    return p if p.is_dir() else None


def save_training_checkpoint(out: Path, step: int, model, tokenizer, norm: dict[str, dict[str, NormStats]],
                             optimizer_state: dict[str, Any], scheduler, cfg: TrainConfig,
                             delta: dict[str, np.ndarray] | None = None,
                             model_state: dict[str, torch.Tensor] | None = None,
                             lora: tuple[Any, Path] | None = None,
                             camera_crops: dict[str, dict] | None = None) -> Path:
    """OUT/checkpoints/step_N: a policy directory + train_state/. model_state: the full weights
    when ``model`` is sharded (FSDP2); lora: (PeftModel, base checkpoint) to write an adapter
    directory instead of full weights; camera_crops: asset_id -> the camera views its datasets were
    converted with (assets/<asset_id>/camera_views.json, pi0_ros.camera_views)."""
    from pi0_ros import camera_views
    from pi0_ros.model.normalize import save_norm_stats
    from pi0_ros.policy import ASSETS_DIRNAME, save_delta_mask, save_policy_checkpoint
    from pi0_ros.training.lora import save_adapter

    d = checkpoint_dir(out, step)
    tmp = d.with_name(d.name + ".tmp")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    assets = list(norm)
    if lora is None:
        save_policy_checkpoint((model, tokenizer), tmp, asset_id=assets[0], norm_stats=norm[assets[0]],
                               state_dict=model_state)
    else:
        from pi0_ros.model.tokenizer import TOKENIZER_FILENAME
        tmp.mkdir(parents=True)
        save_adapter(lora[0], tmp, lora[1], cfg.lora_settings())
        tokenizer.save(tmp / TOKENIZER_FILENAME)
        save_norm_stats(tmp / ASSETS_DIRNAME / assets[0], norm[assets[0]])
    for a in assets[1:]:
        save_norm_stats(tmp / ASSETS_DIRNAME / a, norm[a])
    for a, m in (delta or {}).items():
        save_delta_mask(tmp / ASSETS_DIRNAME / a, m)
    for a, crops in (camera_crops or {}).items():
        camera_views.save(tmp / ASSETS_DIRNAME / a, crops)
    ts = tmp / TRAIN_STATE
    ts.mkdir()
    torch.save(optimizer_state, ts / "optimizer.pt")
    save_safetensors({"torch_cpu": torch.get_rng_state()}, str(ts / "rng.safetensors"))
    (ts / "trainer.json").write_text(json.dumps({"step": step, "scheduler_last_epoch": scheduler.last_epoch,
                                                 "config": cfg.__dict__}, indent=2, default=str))
    if d.exists():
        import shutil
        shutil.rmtree(d)
    os.replace(tmp, d)
    (out / CHECKPOINTS / LATEST).write_text(d.name + "\n")
    return d


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path,
                         device: torch.device, fsdp: bool, rank: int) -> None:
    """Restore ``optimizer`` from a checkpoint's train_state/optimizer.pt.

    Two formats: ``optimizer.state_dict()`` of a single-process or DDP run (keyed by parameter
    index), and the full state keyed by parameter name that an FSDP2 run writes through
    ``get_optimizer_state_dict``. Name-keyed states, and every state an FSDP2 run loads, go
    through ``set_optimizer_state_dict`` (torch.distributed.checkpoint.state_dict), which splits
    them into this run's shards. Under FSDP2 only rank 0 reads the file (it held the full state
    when saving too) and the library broadcasts it one tensor at a time (``broadcast_from_rank0``);
    each rank keeps its shard. So an FSDP2 run resumes as FSDP2, DDP or one process, and a
    single-process or DDP run can be continued with FSDP2."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state: dict[str, Any] = {}
    if not fsdp or rank == 0:
        state = torch.load(path, map_location="cpu" if fsdp else device, weights_only=True)
    by_index = bool(state) and not any(isinstance(k, str) for k in state.get("state", {}))
    if by_index and not fsdp:
        optimizer.load_state_dict(state)
        return
    if by_index:  # the index is the position among the trainable parameters, in optimizer order
        state = _by_name(state, [n for n, p in model.named_parameters() if p.requires_grad])
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=fsdp))


def _by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """An ``optimizer.state_dict()`` (parameters by index) keyed by parameter name instead."""
    ids = [i for g in state["param_groups"] for i in g["params"]]
    if len(ids) != len(names):
        raise ValueError(f"the checkpoint's optimizer holds {len(ids)} parameters, this run trains {len(names)}: "
                         "resume with the same freeze/LoRA flags")
    name = dict(zip(ids, names))
    return {"state": {name[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [name[i] for i in g["params"]]} for g in state["param_groups"]]}


def resume_train_state(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                       cfg: TrainConfig, device: torch.device, fsdp: bool, rank: int) -> int:
    """Restore optimizer, scheduler and torch's CPU RNG from ``ckpt``/train_state; -> the step it ends at."""
    from pi0_ros.training.model_setup import lr_factor

    ts = ckpt / TRAIN_STATE
    load_optimizer_state(model, optimizer, ts / "optimizer.pt", device, fsdp, rank)
    meta = json.loads((ts / "trainer.json").read_text())
    start_step = int(meta["step"])
    scheduler.last_epoch = int(meta["scheduler_last_epoch"])
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # noqa: SLF001 - LambdaLR reads it for get_last_lr
    for g in optimizer.param_groups:
        g["lr"] = cfg.lr * lr_factor(start_step, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
    torch.set_rng_state(load_safetensors(str(ts / "rng.safetensors"))["torch_cpu"])
    return start_step
