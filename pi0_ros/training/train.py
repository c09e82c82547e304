"""`pi0-ros train`: fine-tune π0 on bag2dataset datasets with the flow-matching loss.

    pi0-ros train --dataset datasets/pick --preset tiny --out runs/tiny --steps 200
    pi0-ros train --dataset ds/a ds/b --init checkpoints/pi0_base --out runs/ft --freeze-vlm
    torchrun --nproc-per-node 2 -m pi0_ros.cli train --dataset ds --preset small --out runs/ddp

Recipe (openpi's pi0 fine-tuning defaults unless said):
- loss: PI0Model.loss per element, averaged over the REAL elements only: padded action steps
  (past the episode end, ``action_is_pad``) and padded dims (slots the embodiment does not
  use) are masked out. With several ranks the mean is over the global batch.
- flow-matching time t = Beta(1.5, 1) * 0.999 + 0.001 and noise ~ N(0, 1), drawn for the
  global batch from a generator seeded by (seed, step) and passed to the model, so a step is
  a pure function of (weights, optimizer state, step): resuming gives the uninterrupted result.
- data: each step draws its global batch from the dataset mixture with weights n^0.43
  (n = frames of a dataset), from a generator seeded by (seed, step); rank r takes its slice.
- AdamW (betas 0.9/0.95, eps 1e-8, weight decay 1e-10), linear warm-up from lr/(warmup+1),
  cosine decay to 0.1 * lr at the last step, gradient clipping at norm 1.0, bf16 autocast on
  CUDA only (weights stay fp32).
- normalisation: z-score with the datasets' statistics (state/actions in MODEL convention,
  grippers in [0, 1], slot layout), saved as assets/<asset_id>/norm_stats.json.
- checkpoints: OUT/checkpoints/step_NNNNNN/ is a policy directory (`Policy.from_checkpoint`
  loads it: model.safetensors, config.json, tokenizer.model, assets/) plus train_state/
  (optimizer.pt loaded with weights_only=True, trainer.json with step/scheduler, rng.safetensors).
  OUT/checkpoints/latest names the newest. Logs: OUT/train_log.jsonl and OUT/loss.png.
- parameters the loss never reaches are frozen (no gradient, no optimizer state): the VLM's
  last layer only provides keys/values to the action expert, so its query and output
  projections, MLP and the VLM's final norm get no gradient (``loss_unused_prefixes``).
- distributed (torchrun, WORLD_SIZE > 1; gloo on CPU, nccl on GPU), PyTorch's engines:
  ``--distributed ddp`` (default): DistributedDataParallel, every rank holds the model and
  gradients are all-reduced in buckets while backward runs; ``--distributed fsdp``: FSDP2
  (``torch.distributed.fsdp.fully_shard``) shards weights, gradients and optimizer state across
  ranks, for full fine-tuning of models that do not fit one GPU. Both average gradients over
  ranks; the loss is the global-batch mean (divided by the global element count) times the
  number of ranks, so the result is the single-process one. Checkpoints are written by rank 0
  as one plain model.safetensors (FSDP2 gathers the full state first): no conversion step.
  FSDP2's optimizer state is saved in full, keyed by parameter name (``get_optimizer_state_dict``),
  and --resume splits it into the shards again (``set_optimizer_state_dict``,
  ``load_optimizer_state``): resuming gives the uninterrupted run's result, as for one process.
- LoRA (``--lora``, PEFT; see lora.py): adapters on both Gemma stacks (the expert's only with
  ``--freeze-vlm``), heads in full, the rest (vision tower included) frozen; checkpoints are
  PEFT adapter directories. ``--init ADAPTER_DIR`` continues that adapter on its base (with
  ``--lora``) or fine-tunes the merged model in full (without).
- memory levers: ``--grad-checkpoint`` (recompute each transformer layer in backward),
  ``--precision`` (fp32, bf16-autocast, bf16: frozen weights stored in bf16, trainable ones
  stay fp32 as the optimizer's master copy), ``--optimizer`` (adamw, adamw-fused, adamw-8bit).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros.model.normalize import NormStats, Normalizer
from pi0_ros.training.lora import PROJECTIONS, LoraSettings

logger = logging.getLogger(__name__)

MIXTURE_EXPONENT = 0.43
CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAIN_STATE = "train_state"
LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss.png"
BASE_DIR = "base"  # OUT/base: the frozen base weights of a LoRA run started from --preset
PRECISIONS = ("auto", "fp32", "bf16-autocast", "bf16")
OPTIMIZERS = ("adamw", "adamw-fused", "adamw-8bit")
DISTRIBUTED = ("ddp", "fsdp")
FROZEN_PREFIX = "paligemma_with_expert.paligemma."  # vision tower + projector + Gemma VLM
# --freeze-vision: the image encoder and the prompt embedding stay; the VLM's transformer layers
# train with the expert (they compute the keys/values the expert reads at every layer).
VISION_PREFIXES = ("paligemma_with_expert.paligemma.model.vision_tower.",
                   "paligemma_with_expert.paligemma.model.multi_modal_projector.",
                   "paligemma_with_expert.paligemma.model.language_model.embed_tokens.")


@dataclass
class TrainConfig:
    datasets: list[str]
    out: str
    preset: str | None = None
    init: str | None = None
    steps: int = 1000
    batch_size: int = 8                # GLOBAL batch (split across ranks)
    lr: float = 2.5e-5
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 1e-10
    clip: float = 1.0
    seed: int = 0
    freeze_vlm: bool = False
    freeze_vision: bool = False        # freeze only the vision tower, projector and token embedding
    save_every: int = 0                # 0: only at the end
    resume: bool = False
    device: str = "auto"
    num_workers: int = 0
    chunk_size: int | None = None      # preset only (checkpoints keep theirs)
    action_dim: int | None = None      # preset only
    num_cameras: int | None = None     # preset only (default 3)
    log_every: int = 1
    delta_actions: bool = False        # joints as offsets from the current state (openpi's ALOHA recipe)
    stop_after: int | None = None      # stop (as if interrupted) after this step; tests/debugging
    dataset_map: str | None = None     # mapping YAML / embodiment for LeRobot datasets without meta/pi0_ros.json
    lora: bool = False                 # PEFT LoRA adapters instead of full fine-tuning (lora.py)
    lora_rank: int = 16                # openpi gemma_2b_lora
    lora_alpha: float = 16.0
    lora_expert_rank: int = 32         # openpi gemma_300m_lora
    lora_expert_alpha: float = 32.0
    lora_targets: tuple[str, ...] = PROJECTIONS
    grad_checkpoint: bool = False      # activation checkpointing per transformer layer
    precision: str = "auto"            # auto: bf16 autocast on CUDA, fp32 on CPU (see PRECISIONS)
    optimizer: str = "adamw"           # see OPTIMIZERS
    distributed: str = "ddp"           # engine under torchrun: ddp or fsdp (FSDP2)

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha, expert_rank=self.lora_expert_rank,
                            expert_alpha=self.lora_expert_alpha, targets=tuple(self.lora_targets),
                            vlm=not self.freeze_vlm)


# ------------------------------------------------------------------------------ maths
def mixture_weights(sizes: Sequence[int], exponent: float = MIXTURE_EXPONENT) -> np.ndarray:
    """Sampling probability of each dataset: n^exponent, normalised."""
    w = np.asarray(sizes, dtype=np.float64) ** exponent
    return w / w.sum()


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, step, rank, 7]).generate_state(1, np.uint64)[0] >> 1))
    return g


def sample_time(batch: int, g: torch.Generator) -> torch.Tensor:
    """t = Beta(1.5, 1) * 0.999 + 0.001 via the inverse CDF (x^1.5 = u)."""
    u = torch.rand(batch, generator=g, dtype=torch.float64)
    return (u ** (1 / 1.5) * 0.999 + 0.001).float()


def masked_loss(per_elem: torch.Tensor, mask: torch.Tensor, denom: torch.Tensor | float) -> torch.Tensor:
    """sum(per_elem * mask) / denom; mask (B, H, D) bool."""
    return (per_elem * mask).sum() / denom


def _mapping_for(root: str, dataset_map: str | None) -> str | None:
    """--dataset-map applies to datasets bag2dataset did not write (no meta/pi0_ros.json)."""
    if dataset_map is None or (Path(root) / "meta" / "pi0_ros.json").is_file():
        return None
    return dataset_map


def delta_mask(dataset: Pi0Dataset) -> np.ndarray:
    """(n,) True for joint dims (delta actions); grippers and base velocities stay absolute."""
    return np.array([d["kind"] == "joint" for d in dataset.dims])


def chunk_deltas(d: Pi0Dataset, stride: int = 5) -> np.ndarray:
    """Action chunks minus the state they start from, on joint dims: (frames/stride * H, n)."""
    mask = delta_mask(d)
    rows = []
    for i in range(0, len(d), stride):
        acts, _ = d.action_chunk(i)
        a = acts.astype(np.float64).copy()
        a[:, mask] -= d.state[i, mask]
        rows.append(a)
    return np.concatenate(rows)


def combined_norm_stats(datasets: Sequence[Pi0Dataset], action_dim: int,
                        delta_actions: bool = False) -> dict[str, dict[str, NormStats]]:
    """{asset_id: {"state", "actions"}} over all frames of the datasets of each asset (slot layout).

    With delta_actions the action stats are those of the chunks relative to their start state."""
    by_asset: dict[str, list[Pi0Dataset]] = {}
    for d in datasets:
        by_asset.setdefault(d.asset_id, []).append(d)
    out = {}
    for asset, ds in by_asset.items():
        slots = ds[0].slots
        if any(not np.array_equal(d.slots, slots) for d in ds):
            raise ValueError(f"datasets of asset '{asset}' disagree on their dims/slots")
        width = int(slots.max()) + 1
        if width > action_dim:
            raise ValueError(f"asset '{asset}' uses slots up to {width - 1}; the model's action_dim is {action_dim}")
        stats = {}
        for key, attr in (("state", "state"), ("actions", "action")):
            if key == "actions" and delta_actions:
                x = np.concatenate([chunk_deltas(d) for d in ds])
            else:
                x = np.concatenate([getattr(d, attr) for d in ds]).astype(np.float64)
            vec = {}
            for k, fn, fill in (("mean", lambda a: a.mean(0), 0.0), ("std", lambda a: a.std(0), 1.0),
                                ("q01", lambda a: np.quantile(a, 0.01, axis=0), -1.0),
                                ("q99", lambda a: np.quantile(a, 0.99, axis=0), 1.0)):
                v = np.full(width, fill)
                v[slots] = fn(x)
                vec[k] = v
            stats[key] = NormStats(**vec)
        out[asset] = stats
    return out


# ------------------------------------------------------------------------------ data
class StepBatches(TorchDataset):
    """Item ``step`` = this rank's part of the global batch of that step (deterministic)."""

    def __init__(self, datasets: Sequence[Pi0Dataset], norm: dict[str, dict[str, NormStats]], batch_size: int,
                 rank: int, world: int, seed: int, action_dim: int, camera_names: Sequence[str], image_size: int,
                 total_steps: int, delta_actions: bool = False, norm_mode: str = "zscore") -> None:
        if batch_size % world:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the number of ranks {world}")
        self.datasets = list(datasets)
        self.normalizers = {a: Normalizer(s, mode=norm_mode) for a, s in norm.items()}
        self.probs = mixture_weights([len(d) for d in datasets])
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.local = batch_size // world
        self.action_dim = action_dim
        self.camera_names = list(camera_names)
        self.image_size = image_size
        self.total_steps = total_steps
        self.delta_actions = delta_actions

    def __len__(self) -> int:
        return self.total_steps

    def indices(self, step: int) -> list[tuple[int, int]]:
        """[(dataset, frame)] of the GLOBAL batch of ``step``."""
        rng = np.random.default_rng([self.seed, step, 11])
        which = rng.choice(len(self.datasets), size=self.batch_size, p=self.probs)
        return [(int(d), int(rng.integers(len(self.datasets[d])))) for d in which]

    def __getitem__(self, step: int) -> dict[str, Any]:
        mine = self.indices(step)[self.rank * self.local:(self.rank + 1) * self.local]
        B, H, D, S = self.local, self.datasets[0].chunk_size, self.action_dim, self.image_size
        images = np.zeros((B, len(self.camera_names), S, S, 3), dtype=np.uint8)
        image_masks = np.zeros((B, len(self.camera_names)), dtype=bool)
        state = np.zeros((B, D), dtype=np.float32)
        actions = np.zeros((B, H, D), dtype=np.float32)
        mask = np.zeros((B, H, D), dtype=bool)
        prompts = []
        state_dims = []  # π0.5 writes the state's first state_dims (the asset's slot width) into the prompt
        for b, (di, fi) in enumerate(mine):
            ds = self.datasets[di]
            s = ds[fi]
            slots = ds.slots
            norm = self.normalizers[ds.asset_id]
            st = np.zeros(D)
            st[slots] = s["state"].numpy()
            state[b] = norm.normalize(st, "state")
            state_dims.append(norm.stats["state"].dim if norm.stats is not None else D)
            act = np.zeros((H, D))
            act[:, slots] = s["actions"].numpy()
            if self.delta_actions:
                js = slots[delta_mask(ds)]
                act[:, js] -= st[js]
            act = norm.normalize(act, "actions")
            act[:, np.setdiff1d(np.arange(D), slots)] = 0.0  # padding dims stay exactly zero
            actions[b] = act
            mask[b][:, slots] = ~s["action_is_pad"].numpy()[:, None]
            for c, name in enumerate(self.camera_names):
                img = s["images"].get(name)
                if img is None:
                    continue
                img = img.numpy()
                if img.shape[:2] != (S, S):
                    from pi0_ros.model.preprocess import resize_with_pad
                    img = resize_with_pad(img, S, S)
                images[b, c] = img
                image_masks[b, c] = True
            prompts.append(s["prompt"])
        return {"step": step, "images": torch.from_numpy(images), "image_masks": torch.from_numpy(image_masks),
                "state": torch.from_numpy(state), "actions": torch.from_numpy(actions), "mask": torch.from_numpy(mask),
                "prompts": prompts, "state_dims": state_dims}


# ------------------------------------------------------------------------------ model
def build_model(cfg: TrainConfig, device: torch.device):
    """(model, tokenizer) from --init or --preset: fp32, except a LoRA run in --precision bf16,
    whose frozen base is built directly in bf16 (a 3.3B fp32 copy alone would take 13 GB).

    --init of a LoRA adapter directory: its base (a LoRA run adds the adapters in _setup_lora and
    starts them from the directory's), or base + adapters merged (full fine-tuning)."""
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.model.config import get_preset
    from pi0_ros.model.pi0 import PI0Model
    from pi0_ros.model.tokenizer import TOKENIZER_FILENAME, PromptTokenizer, tiny_tokenizer
    from pi0_ros.training.lora import is_adapter_dir, load_base, load_lora_model

    bf16_base = cfg.lora and cfg.precision == "bf16"
    if cfg.init:
        dtype = torch.bfloat16 if bf16_base else torch.float32
        if not is_adapter_dir(cfg.init):
            model = load_checkpoint(cfg.init, device=str(device), dtype=dtype)
        elif cfg.lora:
            model = load_base(cfg.init, device=str(device), dtype=dtype)
        else:
            model = load_lora_model(cfg.init, device=str(device), dtype=dtype)
        if cfg.chunk_size or cfg.action_dim or cfg.num_cameras:
            raise ValueError("--chunk-size/--action-dim/--num-cameras apply to --preset only; a checkpoint keeps its own")
        tok_file = Path(cfg.init) / TOKENIZER_FILENAME
        if not tok_file.is_file():
            raise FileNotFoundError(f"{cfg.init}: no {TOKENIZER_FILENAME}")
        tokenizer = PromptTokenizer(tok_file, max_len=model.config.max_token_len)
    else:
        overrides: dict[str, Any] = {"dtype": "bfloat16" if bf16_base else "float32"}
        if cfg.chunk_size:
            overrides["chunk_size"] = cfg.chunk_size
        if cfg.action_dim:
            overrides["action_dim"] = cfg.action_dim
        if cfg.num_cameras:
            overrides["num_cameras"] = cfg.num_cameras
        config = get_preset(cfg.preset, **overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = PI0Model(config, device=device)
        tokenizer = tiny_tokenizer(max_len=config.max_token_len)
    model.train()
    return model, tokenizer


def loss_unused_prefixes(model) -> tuple[str, ...]:
    """Parameters the flow-matching loss never reaches: the loss reads only the action expert's
    output, so the VLM's last layer contributes just its keys and values (input norm, k/v
    projections); its query/output projections, MLP and the VLM's final norm are never run."""
    last = f"paligemma_with_expert.paligemma.model.language_model.layers.{model.config.vlm.depth - 1}."
    return (f"{last}self_attn.q_proj.", f"{last}self_attn.o_proj.", f"{last}post_attention_layernorm.",
            f"{last}mlp.", "paligemma_with_expert.paligemma.model.language_model.norm.")


def trainable_parameters(model: torch.nn.Module, freeze_vlm: bool,
                         freeze_vision: bool = False) -> list[torch.nn.Parameter]:
    """Set requires_grad for full fine-tuning (optionally VLM or vision frozen); -> the trainable ones."""
    frozen = ((FROZEN_PREFIX,) if freeze_vlm else VISION_PREFIXES if freeze_vision else ()) + loss_unused_prefixes(model)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
        if p.requires_grad:
            params.append(p)
    return params


def store_frozen_in_bf16(model: torch.nn.Module) -> None:
    """--precision bf16: frozen weights in bf16 (half their memory); trainable ones stay fp32, the
    optimizer's master copy. Norms, patch/position embeddings and heads keep fp32 as everywhere."""
    from pi0_ros.model.pi0 import keeps_fp32

    for name, p in model.named_parameters():
        if not p.requires_grad and p.is_floating_point() and not keeps_fp32(name):
            p.data = p.data.to(torch.bfloat16)


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (openpi betas/eps); fused: one kernel for all parameters (CUDA and CPU); 8-bit:
    bitsandbytes' AdamW8bit, moments in 8 bits (1/4 of the state memory; CUDA only)."""
    kw = dict(lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kw)
    if cfg.optimizer == "adamw-fused":
        return torch.optim.AdamW(params, fused=True, **kw)
    if cfg.optimizer == "adamw-8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise RuntimeError("--optimizer adamw-8bit needs bitsandbytes (pip install bitsandbytes)") from exc
        if device.type != "cuda":
            raise RuntimeError("--optimizer adamw-8bit runs on CUDA only; use adamw or adamw-fused here")
        return bnb.optim.AdamW8bit(params, **kw)
    raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a --precision: bf16 matmuls under autocast, or none."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    on = precision in ("bf16-autocast", "bf16") or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def shard_fsdp2(model: torch.nn.Module, world: int, device: torch.device) -> torch.nn.Module:
    """FSDP2 over all ranks: one shard group per module that is called as a module in forward
    (SigLIP layers, each Gemma layer's q/k/v/o projections and MLP, the token embedding), then
    the rest at the root. The mixture layer runs two stacks' layers together, which is why the
    groups are the projections and MLPs rather than whole decoder layers."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    for layer in model.vision.vision_model.encoder.layers:
        fully_shard(layer, mesh=mesh)
    for stack in (model.vlm, model.expert):
        if stack.embed_tokens is not None:
            fully_shard(stack.embed_tokens, mesh=mesh)
        for layer in stack.layers:
            a = layer.self_attn
            for m in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.mlp):
                fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def model_inputs(batch: dict[str, Any], tokenizer, device: torch.device, state_in_prompt: bool = False):
    """state_in_prompt: π0.5, whose prompt carries the normalised state as text (tokenizer.py)."""
    from pi0_ros.model.inputs import ModelInputs

    if state_in_prompt:
        states = batch["state"].numpy()
        dims = batch.get("state_dims") or [states.shape[1]] * len(batch["prompts"])
        toks, tmask = zip(*(tokenizer.encode(p, states[b, :dims[b]]) for b, p in enumerate(batch["prompts"])))
    else:
        toks, tmask = zip(*(tokenizer.encode(p) for p in batch["prompts"]))
    images = batch["images"].to(device).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (B, N, 3, S, S) in [-1, 1]
    return ModelInputs(images=images, image_masks=batch["image_masks"].to(device),
                       tokens=torch.from_numpy(np.stack(toks)).to(device),
                       token_masks=torch.from_numpy(np.stack(tmask)).to(device),
                       state=batch["state"].to(device))


# ------------------------------------------------------------------------------ checkpoints
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
                             lora: tuple[Any, Path] | None = None) -> Path:
    """OUT/checkpoints/step_N: a policy directory + train_state/. model_state: the full weights
    when ``model`` is sharded (FSDP2); lora: (PeftModel, base checkpoint) to write an adapter
    directory instead of full weights."""
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


def write_plot(out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], lw=0.8, label="loss")
    if len(rows) >= 10:
        k = max(len(rows) // 20, 2)
        sm = np.convolve([r["loss"] for r in rows], np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], sm, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOT_FILE, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------ loop
def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. Call under torchrun for DDP."""
    rank, world, local_rank = _dist_env()
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    own_group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        own_group = True
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if (cfg.init is None) == (cfg.preset is None):
        raise ValueError("give exactly one of --init CHECKPOINT or --preset NAME")
    out = Path(cfg.out)
    try:
        return _train(cfg, out, device, rank, world)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, out: Path, device: torch.device, rank: int, world: int) -> dict[str, Any]:
    from pi0_ros.model.checkpoint import load_checkpoint

    model, tokenizer = build_model(cfg, device)
    config = model.config
    datasets = [Pi0Dataset(d, chunk_size=config.chunk_size, convention="model", mapping=_mapping_for(d, cfg.dataset_map))
                for d in cfg.datasets]
    for d in datasets:
        extra = sorted(set(d.camera_slots) - set(config.camera_names))
        if extra:
            logger.warning("%s: camera slot(s) %s are not among the model's %s: ignored", d.root, extra, list(config.camera_names))
    norm = combined_norm_stats(datasets, config.action_dim, cfg.delta_actions)
    delta = {}
    if cfg.delta_actions:
        for d in datasets:
            m = np.zeros(int(d.slots.max()) + 1, dtype=bool)
            m[d.slots[delta_mask(d)]] = True
            delta[d.asset_id] = m

    start_step = 0
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None and not cfg.lora:
        model.load_state_dict(load_checkpoint(ckpt, device=str(device), dtype=torch.float32).state_dict())
        model.train()
    if cfg.freeze_vlm and cfg.freeze_vision:
        raise ValueError("freeze_vlm already freezes the vision tower: give one of freeze_vlm, freeze_vision")
    fsdp = world > 1 and cfg.distributed == "fsdp"
    if cfg.distributed not in DISTRIBUTED:
        raise ValueError(f"--distributed must be one of {DISTRIBUTED}, got {cfg.distributed!r}")
    if fsdp and cfg.lora:
        raise ValueError("--distributed fsdp is for full fine-tuning; a LoRA run fits one GPU: use ddp")
    peft_model, base = None, None
    if cfg.lora:
        if cfg.freeze_vision:
            raise ValueError("--lora keeps the vision tower frozen already (adapters + heads train): drop "
                             "--freeze-vision; --freeze-vlm puts adapters on the action expert only")
        peft_model, base = _setup_lora(cfg, model, out, rank, world, device, ckpt)
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        params = trainable_parameters(model, cfg.freeze_vlm, cfg.freeze_vision)
        if cfg.precision == "bf16":
            store_frozen_in_bf16(model)
    if cfg.grad_checkpoint:
        model.set_gradient_checkpointing(True)
    engine: torch.nn.Module = model  # what forward (= the loss) is called on
    if world > 1 and fsdp:
        engine = shard_fsdp2(model, world, device)
        params = [p for p in model.parameters() if p.requires_grad]  # now sharded DTensors
    elif world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        engine = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(params, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))
    if ckpt is not None:
        ts = ckpt / TRAIN_STATE
        load_optimizer_state(model, optimizer, ts / "optimizer.pt", device, fsdp, rank)
        meta = json.loads((ts / "trainer.json").read_text())
        start_step = int(meta["step"])
        scheduler.last_epoch = int(meta["scheduler_last_epoch"])
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # noqa: SLF001 - LambdaLR reads it for get_last_lr
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr * lr_factor(start_step, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
        torch.set_rng_state(load_safetensors(str(ts / "rng.safetensors"))["torch_cpu"])
        if rank == 0:
            logger.info("resuming from %s at step %d", ckpt, start_step)
    elif cfg.resume and rank == 0:
        logger.info("--resume: no checkpoint in %s, starting from scratch", out)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log = out / LOG_FILE
        if start_step and log.is_file():  # drop entries logged after the checkpoint we resume from
            keep = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start_step]
            log.write_text("".join(k + "\n" for k in keep))
        elif not start_step:
            log.write_text("")
        (out / "train_config.json").write_text(json.dumps({**cfg.__dict__, "world_size": world,
                                                           "model": config.to_dict()}, indent=2, default=str))

    batches = StepBatches(datasets, norm, cfg.batch_size, rank, world, cfg.seed, config.action_dim,
                          config.camera_names, config.vision.image_size, cfg.steps, cfg.delta_actions,
                          norm_mode=config.default_norm_mode)
    loader = DataLoader(batches, batch_size=None, sampler=range(start_step, cfg.steps), num_workers=cfg.num_workers,
                        persistent_workers=False, prefetch_factor=2 if cfg.num_workers else None)
    autocast = autocast_for(cfg.precision, device)
    losses: list[float] = []
    step_times: list[float] = []
    step = start_step
    last_ckpt = None
    t_last = time.perf_counter()
    for batch in loader:
        step = int(batch["step"])
        inputs = model_inputs(batch, tokenizer, device, state_in_prompt=config.is_pi05)
        actions = batch["actions"].to(device)
        mask = batch["mask"].to(device)
        # Noise and time of the GLOBAL batch from (seed, step); this rank takes its slice, so a
        # DDP run computes exactly the single-process batch.
        g = step_generator(cfg.seed, step)
        B, H, D = actions.shape
        noise = torch.randn((B * world, H, D), generator=g)[rank * B:(rank + 1) * B].to(device)
        t = sample_time(B * world, g)[rank * B:(rank + 1) * B].to(device)
        count = mask.sum().to(torch.float64)
        if world > 1:
            dist.all_reduce(count)
        denom = count.clamp(min=1.0).float()
        with autocast:
            per_elem = engine(inputs, actions, noise=noise, time=t)  # PI0Model.forward: the loss per element
        loss = masked_loss(per_elem.float(), mask, denom)
        optimizer.zero_grad(set_to_none=True)
        # DDP and FSDP2 average gradients over ranks; the loss is already the global mean.
        (loss * world).backward()
        loss_value = loss.detach().clone()
        if world > 1:
            dist.all_reduce(loss_value)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip))
        optimizer.step()
        scheduler.step()
        done = step + 1
        now = time.perf_counter()
        step_times.append(now - t_last)
        t_last = now
        losses.append(float(loss_value))
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            with (out / LOG_FILE).open("a") as f:
                f.write(json.dumps({"step": done, "loss": float(loss_value), "lr": optimizer.param_groups[0]["lr"],
                                    "grad_norm": grad_norm, "step_time_s": round(step_times[-1], 4),
                                    "samples_per_s": round(cfg.batch_size / max(step_times[-1], 1e-9), 2)}) + "\n")
        save = done == cfg.steps or (cfg.save_every and done % cfg.save_every == 0)
        model_state, optim_state = None, None
        if save and fsdp:  # collectives: every rank takes part, rank 0 receives the full tensors
            model_state, optim_state = _full_state(model, optimizer)
        if save and rank == 0:
            last_ckpt = save_training_checkpoint(
                out, done, model, tokenizer, norm, optim_state if fsdp else optimizer.state_dict(), scheduler, cfg,
                delta, model_state=model_state, lora=(peft_model, base) if cfg.lora else None)
            write_plot(out)
        if save and world > 1:
            dist.barrier()
        if cfg.stop_after is not None and done >= cfg.stop_after:
            break
    steady = step_times[1:] or step_times
    peak = {"peak_rss_gb": round(_peak_rss_bytes() / 1e9, 3)}
    if device.type == "cuda":
        peak["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
    return {"out": str(out), "start_step": start_step, "end_step": step + 1 if losses else start_step,
            "losses": losses, "checkpoint": str(last_ckpt) if last_ckpt else None,
            "step_time_s_median": float(np.median(steady)) if steady else None,
            "parameters": model.num_parameters(), "trainable_parameters": sum(p.numel() for p in params),
            "digest": weights_digest(_full_state(model, all_ranks=True)[0] if fsdp else model.state_dict()),
            "world_size": world, "device": str(device), "train_time_s": round(sum(step_times), 2), **peak}


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's bytes of a state dict (ranks of a distributed run must agree)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(state.items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, all_ranks: bool = False):
    """(full model state dict, full optimizer state dict or None) of an FSDP2 model, on CPU;
    on rank 0 only (the others get empty dicts) unless all_ranks.

    A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks)
    model_state = get_model_state_dict(model, options=opts)
    optim_state = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
    return model_state, optim_state


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


def _setup_lora(cfg: TrainConfig, model, out: Path, rank: int, world: int, device: torch.device,
                ckpt: Path | None):
    """Freeze the base, add PEFT adapters; -> (PeftModel, base checkpoint directory).

    The base is --init, the base an --init adapter directory names (whose adapters and heads are
    the starting point), or (from --preset) OUT/base, written here once by rank 0."""
    from pi0_ros.model.checkpoint import save_checkpoint
    from pi0_ros.model.pi0 import keeps_fp32
    from pi0_ros.training.lora import apply_lora, base_path, is_adapter_dir, load_adapter_weights

    if cfg.precision == "bf16":  # the base is frozen as a whole: bf16 except what always stays fp32
        for name, p in model.named_parameters():
            if p.is_floating_point() and not keeps_fp32(name):
                p.data = p.data.to(torch.bfloat16)
    init_adapter = bool(cfg.init) and is_adapter_dir(cfg.init)
    if cfg.init:
        base = base_path(cfg.init) if init_adapter else Path(cfg.init)
    else:
        base = out / BASE_DIR
        if rank == 0 and not (cfg.resume and (base / "model.safetensors").is_file()):
            save_checkpoint(model, base)
        if world > 1:
            dist.barrier()
    with torch.random.fork_rng(devices=[]):  # adapters' random init from --seed, like the model's
        torch.manual_seed(cfg.seed + 1)
        peft_model = apply_lora(model, cfg.lora_settings())
    if ckpt is not None or init_adapter:  # resume: this run's checkpoint; else continue the --init adapter
        load_adapter_weights(peft_model, ckpt if ckpt is not None else cfg.init, device)
    model.train()
    return peft_model, base


# ---------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", nargs="+", action="extend", required=True, metavar="DIR",
                        help="bag2dataset or LeRobot v3.0 dataset directories (mixed with weights n^0.43)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--init", metavar="CHECKPOINT",
                     help="start from this pi0 checkpoint directory; a LoRA adapter directory is continued "
                          "(with --lora: same base, adapters and heads start from it) or merged (without)")
    src.add_argument("--preset", help="start from random weights of this preset (tiny, small, full)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, log, plot)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size (split across ranks)")
    parser.add_argument("--lr", type=float, default=2.5e-5, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decay ends at lr * this")
    parser.add_argument("--weight-decay", type=float, default=1e-10, help="AdamW weight decay (openpi 1e-10)")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    parser.add_argument("--seed", type=int, default=0)
    freeze = parser.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-vlm", action="store_true",
                        help="train only the action expert and projections (with --lora: adapters on the action "
                             "expert only)")
    freeze.add_argument("--freeze-vision", action="store_true",
                        help="freeze the vision tower, projector and token embedding; train the VLM's layers and "
                             "the action expert")
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end only)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--chunk-size", type=int, default=None, help="preset only: actions per chunk (default 50)")
    parser.add_argument("--action-dim", type=int, default=None, help="preset only: padded action width (default 32)")
    parser.add_argument("--num-cameras", type=int, default=None, help="preset only: camera slots of the model (default 3)")
    parser.add_argument("--delta-actions", action="store_true",
                        help="learn joint actions as offsets from the current state (openpi's ALOHA recipe); "
                             "saved as assets/<asset_id>/delta_actions.json, the policy adds the state back")
    parser.add_argument("--log-every", type=int, default=1, help="write a log line every N steps")
    parser.add_argument("--dataset-map", default=None, metavar="YAML|EMBODIMENT",
                        help="for LeRobot datasets not written by bag2dataset: a mapping YAML (LeRobot feature names "
                             "-> camera slots, dims) or an embodiment name/YAML; see pi0_ros/data/dataset.py")
    lora = parser.add_argument_group("LoRA (PEFT; defaults: openpi's gemma_2b_lora + gemma_300m_lora)")
    lora.add_argument("--lora", action="store_true",
                      help="train LoRA adapters on both Gemma stacks' attention and MLP projections plus the "
                           "state/action/time heads; the rest (vision tower included) stays frozen. Checkpoints "
                           "are PEFT adapter directories (pi0-ros merge-lora makes a plain one)")
    lora.add_argument("--lora-rank", type=int, default=16, help="rank of the VLM (Gemma 2B) adapters")
    lora.add_argument("--lora-alpha", type=float, default=16.0, help="alpha of the VLM adapters (scale alpha/rank)")
    lora.add_argument("--lora-expert-rank", type=int, default=32, help="rank of the action expert's adapters")
    lora.add_argument("--lora-expert-alpha", type=float, default=32.0, help="alpha of the action expert's adapters")
    lora.add_argument("--lora-targets", default=",".join(PROJECTIONS),
                      help="comma-separated projections that get adapters (default: all seven)")
    mem = parser.add_argument_group("memory and speed")
    mem.add_argument("--grad-checkpoint", action="store_true",
                     help="activation checkpointing per transformer layer: keeps each layer's input only and "
                          "recomputes the layer in backward (about 1/3 more compute, activations ~ layers x "
                          "residual stream instead of all intermediates)")
    mem.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="fp32; bf16-autocast (fp32 weights, bf16 matmuls); bf16 (also frozen weights stored in "
                          "bf16, trainable ones fp32 as the optimizer's master copy); auto: bf16-autocast on "
                          "CUDA, fp32 on CPU")
    mem.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                     help="adamw; adamw-fused (one fused kernel, same maths); adamw-8bit (bitsandbytes, CUDA, "
                          "8-bit moments: 1/4 of the optimizer memory)")
    parser.add_argument("--distributed", choices=DISTRIBUTED, default="ddp",
                        help="under torchrun: ddp (DistributedDataParallel, model replicated) or fsdp (FSDP2 "
                             "fully_shard: weights, gradients and optimizer state sharded, for full fine-tuning)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = TrainConfig(datasets=list(args.dataset), out=args.out, preset=args.preset, init=args.init, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, min_lr_ratio=args.min_lr_ratio,
                      weight_decay=args.weight_decay, clip=args.clip, seed=args.seed, freeze_vlm=args.freeze_vlm,
                      freeze_vision=args.freeze_vision,
                      save_every=args.save_every, resume=args.resume, device=args.device,
                      num_workers=args.num_workers, chunk_size=args.chunk_size, action_dim=args.action_dim,
                      num_cameras=args.num_cameras, log_every=args.log_every, delta_actions=args.delta_actions,
                      dataset_map=args.dataset_map, lora=args.lora, lora_rank=args.lora_rank,
                      lora_alpha=args.lora_alpha, lora_expert_rank=args.lora_expert_rank,
                      lora_expert_alpha=args.lora_expert_alpha,
                      lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
                      grad_checkpoint=args.grad_checkpoint, precision=args.precision, optimizer=args.optimizer,
                      distributed=args.distributed)
    summary = train(cfg)
    if _dist_env()[0] == 0:
        losses = summary.pop("losses")
        summary["first_loss"] = losses[0] if losses else None
        summary["last_loss"] = losses[-1] if losses else None
        print(json.dumps(summary, indent=2))
    return 0
