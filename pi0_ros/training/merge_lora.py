"""`pi0-ros merge-lora`: a LoRA adapter directory -> a plain checkpoint that loads without PEFT.

    pi0-ros merge-lora runs/lora/checkpoints/step_001000 --out checkpoints/my_task
    pi0-ros merge-lora ADAPTER_DIR --base checkpoints/pi0_base --out merged --dtype bfloat16

The base weights plus each adapter's scaled product (W + alpha/r * B A) are written as
model.safetensors + config.json, with the adapter directory's tokenizer and assets/ (norm stats,
delta-action masks) and its inference.json (the settings it was validated with, if any) copied
beside them: a directory `Policy.from_checkpoint`, the policy node and `pi0-ros serve` load like
any other.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from pi0_ros import inference_settings as isettings


def merge_lora(adapter_dir: str | Path, out: str | Path, base: str | Path | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Merge ``adapter_dir``'s adapters into its base and write a plain checkpoint to ``out``."""
    from pi0_ros.model.checkpoint import save_checkpoint
    from pi0_ros.model.tokenizer import TOKENIZER_FILENAME
    from pi0_ros.policy import ASSETS_DIRNAME
    from pi0_ros.training.lora import is_adapter_dir, load_lora_model

    adapter_dir, out = Path(adapter_dir), Path(out)
    if not is_adapter_dir(adapter_dir):
        raise FileNotFoundError(f"{adapter_dir} is not a pi0_ros LoRA adapter directory (pi0-ros train --lora)")
    # The settings the adapter was validated with hold for the merged weights (the same function).
    # Checked first, so a broken file fails here, before any work, and not on the robot.
    settings = isettings.load(adapter_dir)
    model = load_lora_model(adapter_dir, base=base, dtype=dtype)
    save_checkpoint(model, out)
    if (adapter_dir / TOKENIZER_FILENAME).is_file():
        shutil.copy2(adapter_dir / TOKENIZER_FILENAME, out / TOKENIZER_FILENAME)
    if (adapter_dir / ASSETS_DIRNAME).is_dir():
        shutil.copytree(adapter_dir / ASSETS_DIRNAME, out / ASSETS_DIRNAME, dirs_exist_ok=True)
    if settings:
        shutil.copy2(settings.path, isettings.settings_path(out))
    else:  # merged into an older directory: its settings were validated for other weights
        isettings.settings_path(out).unlink(missing_ok=True)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", help="adapter directory written by pi0-ros train --lora")
    parser.add_argument("--out", required=True, help="directory of the merged checkpoint")
    parser.add_argument("--base", default=None, help="base checkpoint (default: the one the adapter names)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="dtype of the big matrices in the output (default: the base's config)")


def run(args: argparse.Namespace) -> int:
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, None: None}[args.dtype]
    out = merge_lora(args.adapter, args.out, base=args.base, dtype=dtype)
    print(json.dumps({"merged": str(out)}))
    return 0
