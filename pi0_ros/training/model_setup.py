"""The model side of training: building the model from --init or --preset, which parameters
train (freezing), frozen weights in bf16, the optimizer and its learning-rate schedule, the
autocast of a --precision, and LoRA adapters."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from pi0_ros.training.train import TrainConfig

BASE_DIR = "base"  # OUT/base: the frozen base weights of a LoRA run started from --preset
PRECISIONS = ("auto", "fp32", "bf16-autocast", "bf16")
OPTIMIZERS = ("adamw", "adamw-fused", "adamw-8bit")
FROZEN_PREFIX = "paligemma_with_expert.paligemma."  # vision tower + projector + Gemma VLM
# --freeze-vision: the image encoder and the prompt embedding stay; the VLM's transformer layers
# train with the expert (they compute the keys/values the expert reads at every layer).
VISION_PREFIXES = ("paligemma_with_expert.paligemma.model.vision_tower.",
                   "paligemma_with_expert.paligemma.model.multi_modal_projector.",
                   "paligemma_with_expert.paligemma.model.language_model.embed_tokens.")


def build_model(cfg: TrainConfig, device: torch.device, on_meta: bool = False):
    """(model, tokenizer) from --init or --preset: fp32, except a LoRA run in --precision bf16,
    whose frozen base is built directly in bf16 (a 3.3B fp32 copy alone would take 13 GB).

    --init of a LoRA adapter directory: its base (a LoRA run adds the adapters in setup_lora and
    starts them from the directory's), or base + adapters merged (full fine-tuning).

    on_meta: the same architecture on the meta device, no weights read or drawn (only config.json
    and the tokenizer): an FSDP2 rank other than 0, whose shards rank 0 fills after sharding
    (distributed.shard_fsdp2_from_rank0)."""
    from pi0_ros.model.checkpoint import load_checkpoint, load_config
    from pi0_ros.model.config import get_preset
    from pi0_ros.model.pi0 import PI0Model
    from pi0_ros.model.tokenizer import TOKENIZER_FILENAME, PromptTokenizer, tiny_tokenizer
    from pi0_ros.training.lora import base_path, is_adapter_dir, load_base, load_lora_model

    bf16_base = cfg.lora and cfg.precision == "bf16"
    if cfg.init:
        dtype = torch.bfloat16 if bf16_base else torch.float32
        if on_meta:  # a merged adapter directory has its base's architecture
            arch = base_path(cfg.init) if is_adapter_dir(cfg.init) else cfg.init
            model = PI0Model(load_config(arch, dtype=dtype), device="meta")
        elif not is_adapter_dir(cfg.init):
            model = load_checkpoint(cfg.init, device=str(device), dtype=dtype)
        elif cfg.lora:
            model = load_base(cfg.init, device=str(device), dtype=dtype)
        else:
            model = load_lora_model(cfg.init, device=str(device), dtype=dtype)
        if cfg.chunk_size or cfg.action_dim:
            raise ValueError("--chunk-size/--action-dim apply to --preset only; a checkpoint keeps its own")
        if cfg.num_cameras:
            model.config = with_more_cameras(model.config, cfg.num_cameras, cfg.init)
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
            model = PI0Model(config, device="meta" if on_meta else device)
        tokenizer = tiny_tokenizer(max_len=config.max_token_len)
    model.train()
    return model, tokenizer


def with_more_cameras(config, num_cameras: int, init: str):
    """--num-cameras with --init: the checkpoint's config with more camera slots (e.g. the wrists
    beside a top camera). No weights change: every slot goes through the same vision tower, and a
    slot missing from the whole batch is skipped, so the widened model answers exactly as before
    until it is given the new cameras. Fewer slots than the checkpoint's would drop views it was
    trained on: refused."""
    import dataclasses

    if num_cameras < config.num_cameras:
        raise ValueError(f"--num-cameras {num_cameras}: {init} has {config.num_cameras} camera slots; a checkpoint's "
                         "slots can be added to, not removed")
    return dataclasses.replace(config, num_cameras=num_cameras)


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


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a --precision: bf16 matmuls under autocast, or none."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    on = precision in ("bf16-autocast", "bf16") or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def setup_lora(cfg: TrainConfig, model, out: Path, rank: int, world: int, device: torch.device,
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
