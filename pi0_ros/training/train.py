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
  ranks, for full fine-tuning of models that do not fit one GPU; only rank 0 reads (or draws) the
  weights, the other ranks start on the meta device and receive their shards from it. Both
  average gradients over ranks; the loss is the global-batch mean (divided by the global element
  count) times the number of ranks, so the result is the single-process one. Checkpoints are
  written by rank 0 as one plain model.safetensors (FSDP2 gathers the full state first): no
  conversion step.
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

This module holds TrainConfig, the loss's noise/time, the loop and the CLI; the parts it runs live in
data.py (mixture, batches, model inputs), model_setup.py (model, freezing, precision, optimizer,
LoRA), distributed.py (process group, DDP, FSDP2) and checkpointing.py (save, resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros import camera_views
from pi0_ros.training.checkpointing import latest_checkpoint, resume_train_state, save_training_checkpoint
from pi0_ros.training.data import (StepBatches, combined_norm_stats, delta_mask, keep_init_norm_stats, mapping_for,
                                   model_inputs)
from pi0_ros.training.distributed import (
    DISTRIBUTED, dist_env, full_state, shard_fsdp2_from_rank0, start_process_group, wrap_ddp,
)
from pi0_ros.training.lora import PROJECTIONS, LoraSettings
from pi0_ros.training.model_setup import (
    OPTIMIZERS, PRECISIONS, autocast_for, build_model, lr_factor, make_optimizer, setup_lora, store_frozen_in_bf16,
    trainable_parameters,
)

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss.png"


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
    num_cameras: int | None = None     # preset: default 3; --init: widen to this many slots
    log_every: int = 1
    delta_actions: bool = False        # joints as offsets from the current state (openpi's ALOHA recipe)
    state_noise: float = 0.0           # rad: noise on the joint state the model sees (StepBatches)
    episode_start_weight: float = 1.0  # how much more often frames near an episode's start are drawn
    episode_start_s: float = 1.0       # s: what "near the start" means (StepBatches)
    stop_after: int | None = None      # stop (as if interrupted) after this step; tests/debugging
    dataset_map: str | None = None     # mapping YAML / embodiment for LeRobot datasets without meta/pi0_ros.json
    keep_norm_stats: bool = False      # --init's norm stats for the assets it has (continued training)
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



# ------------------------------------------------------------------------------ loss
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
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. Call under torchrun for DDP."""
    rank, world, local_rank = dist_env()
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    own_group = start_process_group(world, device)
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

    if cfg.freeze_vlm and cfg.freeze_vision:
        raise ValueError("freeze_vlm already freezes the vision tower: give one of freeze_vlm, freeze_vision")
    fsdp = world > 1 and cfg.distributed == "fsdp"
    if cfg.distributed not in DISTRIBUTED:
        raise ValueError(f"--distributed must be one of {DISTRIBUTED}, got {cfg.distributed!r}")
    if fsdp and cfg.lora:
        raise ValueError("--distributed fsdp is for full fine-tuning; a LoRA run fits one GPU: use ddp")
    # FSDP2: only rank 0 reads (or draws) the weights; the others build on the meta device and
    # receive their shards from rank 0 (shard_fsdp2_from_rank0).
    on_meta = fsdp and rank != 0
    model, tokenizer = build_model(cfg, device, on_meta=on_meta)
    config = model.config
    datasets = [Pi0Dataset(d, chunk_size=config.chunk_size, convention="model", mapping=mapping_for(d, cfg.dataset_map))
                for d in cfg.datasets]
    for d in datasets:
        extra = sorted(set(d.camera_slots) - set(config.camera_names))
        if extra:
            logger.warning("%s: camera slot(s) %s are not among the model's %s: ignored", d.root, extra, list(config.camera_names))
    norm = combined_norm_stats(datasets, config.action_dim, cfg.delta_actions)
    if cfg.keep_norm_stats:
        if cfg.init is None or cfg.lora:
            raise ValueError("--keep-norm-stats continues a plain --init checkpoint's normalisation (not with "
                             "--preset or --lora)")
        norm, kept = keep_init_norm_stats(norm, cfg.init, cfg.delta_actions)
        if rank == 0:
            logger.info("norm stats of %s kept from %s; from the data: %s", kept or "no asset", cfg.init,
                        sorted(set(norm) - set(kept)) or "none")
    crops = camera_views.crops_by_asset(datasets)  # before any step: conflicting views fail here
    delta = {}
    if cfg.delta_actions:
        for d in datasets:
            m = np.zeros(int(d.slots.max()) + 1, dtype=bool)
            m[d.slots[delta_mask(d)]] = True
            delta[d.asset_id] = m

    start_step = 0
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None and not cfg.lora and not on_meta:
        model.load_state_dict(load_checkpoint(ckpt, device=str(device), dtype=torch.float32).state_dict())
        model.train()
    peft_model, base = None, None
    if cfg.lora:
        if cfg.freeze_vision:
            raise ValueError("--lora keeps the vision tower frozen already (adapters + heads train): drop "
                             "--freeze-vision; --freeze-vlm puts adapters on the action expert only")
        peft_model, base = setup_lora(cfg, model, out, rank, world, device, ckpt)
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        params = trainable_parameters(model, cfg.freeze_vlm, cfg.freeze_vision)
        if cfg.precision == "bf16":
            store_frozen_in_bf16(model)
    if cfg.grad_checkpoint:
        model.set_gradient_checkpointing(True)
    engine: torch.nn.Module = model  # what forward (= the loss) is called on
    if world > 1 and fsdp:
        engine = shard_fsdp2_from_rank0(model, world, rank, device)
        params = [p for p in model.parameters() if p.requires_grad]  # now sharded DTensors
    elif world > 1:
        engine = wrap_ddp(model, device)
    optimizer = make_optimizer(params, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))
    if ckpt is not None:
        start_step = resume_train_state(ckpt, model, optimizer, scheduler, cfg, device, fsdp, rank)
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
                          norm_mode=config.default_norm_mode, state_noise=cfg.state_noise,
                          episode_start_weight=cfg.episode_start_weight, episode_start_s=cfg.episode_start_s)
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
            model_state, optim_state = full_state(model, optimizer)
        if save and rank == 0:
            last_ckpt = save_training_checkpoint(
                out, done, model, tokenizer, norm, optim_state if fsdp else optimizer.state_dict(), scheduler, cfg,
                delta, model_state=model_state, lora=(peft_model, base) if cfg.lora else None, camera_crops=crops)
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
            "digest": weights_digest(full_state(model, all_ranks=True)[0] if fsdp else model.state_dict()),
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
    parser.add_argument("--num-cameras", type=int, default=None, help="camera slots of the model (preset: default 3); with --init, more slots than the checkpoint's "
                             "(add wrist cameras to a top-camera model; no new weights)")
    parser.add_argument("--delta-actions", action="store_true",
                        help="learn joint actions as offsets from the current state (openpi's ALOHA recipe); "
                             "saved as assets/<asset_id>/delta_actions.json, the policy adds the state back")
    parser.add_argument("--state-noise", type=float, default=0.0, metavar="RAD",
                        help="std of Gaussian noise on the joint positions in the state the model is given (the "
                             "labels keep the absolute targets): the state no longer tells where the target is, "
                             "so the policy must aim from the image (see diagnose-grasp --shift)")
    parser.add_argument("--episode-start-weight", type=float, default=1.0, metavar="W",
                        help="draw the frames of each episode's first --episode-start-s seconds W times as often "
                             "as the others (where the image alone decides the chunk: the grasp's early aim)")
    parser.add_argument("--episode-start-s", type=float, default=1.0, metavar="S",
                        help="seconds from an episode's first frame that --episode-start-weight applies to")
    parser.add_argument("--keep-norm-stats", action="store_true",
                        help="continue --init's normalisation: its assets/<asset_id>/norm_stats.json for the robots it "
                             "was trained on (new robots get their data's); for more data of the same robots")
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
                      state_noise=args.state_noise, episode_start_weight=args.episode_start_weight,
                      episode_start_s=args.episode_start_s,
                      dataset_map=args.dataset_map, keep_norm_stats=args.keep_norm_stats, lora=args.lora, lora_rank=args.lora_rank,
                      lora_alpha=args.lora_alpha, lora_expert_rank=args.lora_expert_rank,
                      lora_expert_alpha=args.lora_expert_alpha,
                      lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
                      grad_checkpoint=args.grad_checkpoint, precision=args.precision, optimizer=args.optimizer,
                      distributed=args.distributed)
    summary = train(cfg)
    if dist_env()[0] == 0:
        losses = summary.pop("losses")
        summary["first_loss"] = losses[0] if losses else None
        summary["last_loss"] = losses[-1] if losses else None
        print(json.dumps(summary, indent=2))
    return 0
