"""LoRA fine-tuning of π0 through PEFT: which layers get adapters, and adapter checkpoints.

Recipe (openpi's low-memory `pi0` LoRA config: `gemma_2b_lora` + `gemma_300m_lora`):
- adapters on the attention (q/k/v/o) and MLP (gate/up/down) projections of BOTH Gemma stacks:
  the VLM at rank 16 / alpha 16, the action expert at rank 32 / alpha 32 (openpi's values);
- the small heads that map state/actions/time into and out of the expert (``state_proj``,
  ``action_in_proj``, ``action_time_mlp_*`` or π0.5's ``time_mlp_*``, ``action_out_proj``) train
  in full (PEFT ``modules_to_save``): openpi trains them too, and they are task specific
  (a new robot's action space);
- everything else is frozen, the SigLIP vision tower and projector included. That is our
  choice, not openpi's (openpi's LoRA recipe leaves SigLIP trainable): a frozen tower needs
  no gradients, optimizer state or saved activations for its 400M weights, and it keeps the
  pre-trained visual features that the VLM adapters read;
- ``vlm=False`` (``train --lora --freeze-vlm``): adapters on the action expert only, the VLM
  frozen as a whole.

Training can continue an adapter directory (``train --lora --init ADAPTER_DIR``): the base is
the one the directory names and the adapters (and heads) start from its weights, so stages on
different data refine one set of low-rank adapters instead of merging a new set per stage.

An adapter checkpoint directory holds PEFT's own files (``adapter_config.json`` +
``adapter_model.safetensors``, loadable by ``PeftModel.from_pretrained``) plus ours:
``pi0_ros_lora.json`` (the base checkpoint, relative to the directory when it lies beside it,
and the base's config), the tokenizer and ``assets/`` (norm stats). ``Policy.from_checkpoint``
loads such a directory as base + adapters (merged on load); ``pi0-ros merge-lora`` writes a plain
checkpoint that loads without PEFT.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

LORA_META = "pi0_ros_lora.json"
LORA_FORMAT = "pi0_ros_lora"
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's name
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VLM_LAYERS = r"paligemma_with_expert\.paligemma\.model\.language_model\.layers\.\d+"
EXPERT_LAYERS = r"paligemma_with_expert\.gemma_expert\.model\.layers\.\d+"
HEADS = ("state_proj", "action_in_proj", "action_time_mlp_in", "action_time_mlp_out", "time_mlp_in", "time_mlp_out",
         "action_out_proj")


@dataclass
class LoraSettings:
    """Adapter shapes; defaults are openpi's (gemma_2b_lora, gemma_300m_lora)."""

    rank: int = 16                 # VLM (Gemma 2B) adapters
    alpha: float = 16.0
    expert_rank: int = 32          # action expert (Gemma 300M) adapters
    expert_alpha: float = 32.0
    targets: tuple[str, ...] = PROJECTIONS  # projection names inside each Gemma layer
    dropout: float = 0.0
    vlm: bool = True               # False: adapters on the action expert only (the VLM frozen)

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        unknown = sorted(set(self.targets) - set(PROJECTIONS))
        if unknown or not self.targets:
            raise ValueError(f"LoRA targets must be a non-empty subset of {PROJECTIONS}, got {list(self.targets)}")
        if min(self.rank, self.expert_rank) < 1:
            raise ValueError("LoRA ranks must be >= 1")


def _projections(targets: tuple[str, ...]) -> str:
    """Regex alternatives 'self_attn\\.q_proj|mlp\\.up_proj|...' for the projection names."""
    return "|".join(f"{'mlp' if t in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}\\.{t}" for t in targets)


def lora_config(settings: LoraSettings, model: torch.nn.Module):
    """PEFT LoraConfig for a PI0Model: both Gemma stacks' projections (not SigLIP's), or only the
    expert's (``settings.vlm`` False), heads in full."""
    from peft import LoraConfig

    proj = _projections(settings.targets)
    expert = f"{EXPERT_LAYERS}\\.({proj})"
    stacks = f"({VLM_LAYERS}|{EXPERT_LAYERS})" if settings.vlm else EXPERT_LAYERS
    heads = [h for h in HEADS if isinstance(getattr(model, h, None), torch.nn.Module)]
    # The loss never runs the VLM's last query/output projections and MLP (it reads only that
    # layer's keys/values): adapters there would never get a gradient.
    last = VLM_LAYERS.replace("\\d+", str(model.config.vlm.depth - 1))
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                      # a string is re.fullmatch-ed against each module name
                      target_modules=f"{stacks}\\.({proj})",
                      exclude_modules=f"{last}\\.(self_attn\\.(q_proj|o_proj)|mlp\\.(gate_proj|up_proj|down_proj))",
                      # PEFT matches these as (.*\.)?(key)$: the expert's projections get their own rank/alpha
                      rank_pattern={expert: settings.expert_rank}, alpha_pattern={expert: settings.expert_alpha},
                      modules_to_save=heads)


def apply_lora(model: torch.nn.Module, settings: LoraSettings):
    """Wrap ``model`` (a PI0Model, modified in place) in a PEFT PeftModel; only adapters and heads train."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(settings, model))


def is_adapter_dir(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / LORA_META).is_file() and (d / ADAPTER_CONFIG).is_file()


def load_adapter_weights(peft_model, directory: str | os.PathLike, device: str | torch.device = "cpu") -> None:
    """Copy an adapter directory's weights (adapters and heads) into ``peft_model``'s adapters.

    Adapters that ``peft_model`` has and the directory lacks keep their initial values (e.g. VLM
    adapters added to an expert-only adapter); weights the directory has and ``peft_model``
    lacks are an error, as are shapes that differ (another rank)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(peft_model, load_file(str(Path(directory) / "adapter_model.safetensors"),
                                                             device=str(device)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"{directory}: {len(unexpected)} adapter weights have no place in this model "
                         f"(e.g. {unexpected[0]}): train with the LoRA flags it was trained with")


def save_adapter(peft_model, directory: str | os.PathLike, base: str | os.PathLike, settings: LoraSettings) -> None:
    """PEFT's adapter files + our metadata into ``directory`` (which must exist)."""
    d = Path(directory)
    peft_model.save_pretrained(str(d))
    base = Path(base).resolve()
    # A base inside the run directory (OUT/base, two levels up from OUT/checkpoints/step_N) is
    # recorded relative, so the run directory can move; any other base by its absolute path.
    ref = os.path.relpath(base, d.resolve()) if base.is_relative_to(d.resolve().parent.parent) else str(base)
    core = peft_model.get_base_model()
    meta = {"format": LORA_FORMAT, "base": ref, "base_config": core.config.to_dict(), "lora": asdict(settings)}
    (d / LORA_META).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    meta = json.loads((Path(directory) / LORA_META).read_text())
    if meta.get("format") != LORA_FORMAT:
        raise ValueError(f"{directory}/{LORA_META}: not a pi0_ros LoRA adapter (format {meta.get('format')!r})")
    return meta


def base_path(directory: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """The base checkpoint of an adapter directory: ``base`` if given, else the one it names."""
    if base is not None:
        return Path(base)
    ref = Path(read_meta(directory)["base"])
    return ref if ref.is_absolute() else (Path(directory) / ref).resolve()


def load_base(directory: str | os.PathLike, base: str | os.PathLike | None = None,
              device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """The base checkpoint of an adapter directory as a PI0Model, after checking that its config
    is the one the adapters were trained on."""
    from pi0_ros.model.checkpoint import load_checkpoint

    base_dir = base_path(directory, base)
    model = load_checkpoint(base_dir, device=device, dtype=dtype)
    want = {k: v for k, v in read_meta(directory)["base_config"].items() if k != "dtype"}
    have = {k: v for k, v in model.config.to_dict().items() if k != "dtype"}
    if want != have:  # adapters of the same shapes on another base would load and be wrong
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ValueError(f"{base_dir} is not the base {directory} was trained on (config differs in {diff})")
    return model


def load_lora_model(directory: str | os.PathLike, base: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu", dtype: torch.dtype | None = None, merge: bool = True):
    """Base checkpoint + adapters of ``directory`` -> PI0Model with the adapters merged into its
    weights (``merge=False``: the PeftModel, adapters applied on the fly)."""
    from peft import PeftModel

    model = load_base(directory, base, device=device, dtype=dtype)
    # merge_and_unload adds scale * B @ A to each base weight, in the base weight's dtype.
    peft_model = PeftModel.from_pretrained(model, str(directory), is_trainable=False).to(device)
    if not merge:
        return peft_model.eval()
    merged = peft_model.merge_and_unload()
    return merged.eval()
