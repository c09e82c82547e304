"""`pi0-ros bench train`: memory and speed of training steps, measured, with the breakdown.

Runs a few optimizer steps of `pi0-ros train`'s step (flow-matching loss, AdamW, the same
LoRA / checkpointing / precision code) on random weights and a synthetic batch, one fresh
process per batch size so each peak is its own. Per batch size it reports:
- peak_rss_bytes: the process's peak resident memory (ru_maxrss), everything included;
- seconds_per_step: median over the steps after the first (the first one allocates);
- parameters, trainable_parameters;
- breakdown (bytes): weights (all parameters and buffers as stored), gradients (of the trainable
  parameters), optimizer_state (AdamW moments after a step), activations (what the forward
  leaves alive for backward, estimated as the growth of RSS across the forward, median over
  the timed steps: approximate, as the allocator reuses freed memory), and other = peak RSS
  minus those and the process's RSS before the model was built (temporaries of backward, the
  recomputed layer of activation checkpointing, the allocator). activations + other is exact;
  the split between them is not;
- gpu_estimate_bytes: weights + gradients + optimizer state + activations + the measured
  "other" per-step temporaries, i.e. what a GPU holds for the same step (bf16 autocast there
  too); the CUDA context (~0.5 GB) and allocator fragmentation come on top.

Usage:
    pi0-ros bench train --preset tiny --batch-sizes 1 2 --steps 2 --json
    pi0-ros bench train --preset full --lora --json        # bf16, grad checkpoint, 3 cameras, batch 1 and 4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="model preset (tiny, small, full, pi05_full, ...)")
    parser.add_argument("--lora", action="store_true", help="LoRA with the default (openpi) ranks and targets")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="one measurement each")
    parser.add_argument("--cameras", type=int, default=3, help="camera images per sample")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per batch size (first one untimed)")
    parser.add_argument("--precision", choices=("fp32", "bf16-autocast", "bf16"), default="bf16",
                        help="as pi0-ros train --precision (default bf16)")
    parser.add_argument("--no-grad-checkpoint", dest="grad_checkpoint", action="store_false",
                        help="keep all activations (default: checkpoint per layer)")
    parser.add_argument("--optimizer", default="adamw", help="as pi0-ros train --optimizer")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child: this process measures


def measure(preset: str, batch_size: int, lora: bool = False, cameras: int = 3, steps: int = 3,
            precision: str = "bf16", grad_checkpoint: bool = True, optimizer: str = "adamw",
            seed: int = 0) -> dict[str, Any]:
    """Run ``steps`` training steps in this process and measure them (peak RSS is the process's)."""
    import peft  # noqa: F401 - imported before the baseline, like the rest of the code
    from pi0_ros.model.config import get_preset
    from pi0_ros.model.inputs import ModelInputs
    from pi0_ros.model.pi0 import PI0Model
    from pi0_ros.training.lora import LoraSettings, apply_lora
    from pi0_ros.training.model_setup import autocast_for, make_optimizer, trainable_parameters
    from pi0_ros.training.train import TrainConfig, masked_loss, sample_time, step_generator

    rss_start = _rss_bytes()  # Python + torch + our code: not part of the training step
    torch.manual_seed(seed)
    # bf16: build the frozen matrices directly in bf16 (a 3.3B fp32 copy would not fit the budget)
    dtype = "bfloat16" if precision == "bf16" else "float32"
    config = get_preset(preset, dtype=dtype, num_cameras=cameras)
    model = PI0Model(config)
    model.train()
    if lora:
        for p in model.parameters():
            p.requires_grad_(False)
        apply_lora(model, LoraSettings())
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        params = trainable_parameters(model, freeze_vlm=False)
        for p in params:  # trainable weights are the optimizer's fp32 master copy
            p.data = p.data.float()
    model.set_gradient_checkpointing(grad_checkpoint)
    device = torch.device("cpu")
    cfg = TrainConfig(datasets=[], out="", optimizer=optimizer, precision=precision)
    opt = make_optimizer(params, cfg, device)
    autocast = autocast_for(precision, device)

    g = torch.Generator().manual_seed(seed)
    B, H, D, S = batch_size, config.chunk_size, config.action_dim, config.vision.image_size
    n_tok = 20  # a typical prompt; the rest of the token budget is padding
    tokens = torch.randint(0, config.vocab_size, (B, config.max_token_len), generator=g)
    token_masks = torch.arange(config.max_token_len)[None].expand(B, -1) < n_tok
    inputs = ModelInputs(images=torch.rand(B, cameras, 3, S, S, generator=g) * 2 - 1,
                         image_masks=torch.ones(B, cameras, dtype=torch.bool), tokens=tokens,
                         token_masks=token_masks, state=torch.randn(B, D, generator=g))
    actions = torch.randn(B, H, D, generator=g)
    mask = torch.ones(B, H, D, dtype=torch.bool)
    times, losses, acts = [], [], []
    for step in range(steps):
        t0 = time.perf_counter()
        gs = step_generator(seed, step)
        noise, t = torch.randn((B, H, D), generator=gs), sample_time(B, gs)
        opt.zero_grad(set_to_none=True)  # last step's gradients are not part of this forward
        rss0 = _rss_bytes()
        with autocast:
            per_elem = model(inputs, actions, noise=noise, time=t)
        acts.append(_rss_bytes() - rss0)
        loss = masked_loss(per_elem.float(), mask, mask.sum())
        loss.backward()
        grads = sum(p.grad.nbytes for p in params if p.grad is not None)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    weights = sum(p.nbytes for p in model.parameters()) + sum(b.nbytes for b in model.buffers())
    optim = sum(v.nbytes for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    activations = int(statistics.median(acts[1:] or acts))
    peak = _peak_rss_bytes()
    other = peak - rss_start - weights - grads - optim - activations
    return {
        "preset": preset, "batch_size": B, "cameras": cameras, "lora": lora, "precision": precision,
        "grad_checkpoint": grad_checkpoint, "optimizer": optimizer, "steps": steps,
        "seconds_per_step": statistics.median(times[1:] or times), "first_step_s": times[0],
        "losses": losses, "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in params),
        "peak_rss_bytes": peak, "rss_before_model_bytes": rss_start,
        "breakdown_bytes": {"weights": weights, "gradients": grads, "optimizer_state": optim,
                            "activations": activations, "other": other},
        "gpu_estimate_bytes": weights + grads + optim + activations + max(other, 0),
        "threads": torch.get_num_threads(),
    }


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(lora=args.lora, cameras=args.cameras, steps=args.steps, precision=args.precision,
                  grad_checkpoint=args.grad_checkpoint, optimizer=args.optimizer, seed=args.seed)
    if args.one:
        print(json.dumps(measure(args.preset, args.batch_sizes[0], **common)))
        return 0
    results = []
    for b in args.batch_sizes:  # a fresh process each: ru_maxrss is a per-process peak
        cmd = [sys.executable, "-m", "pi0_ros.bench.train", "--one", "--preset", args.preset, "--batch-sizes", str(b),
               "--cameras", str(args.cameras), "--steps", str(args.steps), "--precision", args.precision,
               "--optimizer", args.optimizer, "--seed", str(args.seed)]
        cmd += ["--lora"] if args.lora else []
        cmd += [] if args.grad_checkpoint else ["--no-grad-checkpoint"]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            sys.stderr.write(res.stderr)
            raise RuntimeError(f"bench train at batch {b} failed (exit {res.returncode})")
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0]},
              "runs": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            gb = 1 / 2**30
            bd = {k: round(v * gb, 2) for k, v in r["breakdown_bytes"].items()}
            print(f"batch {r['batch_size']}: peak RSS {r['peak_rss_bytes'] * gb:.2f} GiB, {r['seconds_per_step']:.2f} s/step, "
                  f"trainable {r['trainable_parameters']:,} of {r['parameters']:,}; GiB {bd}; "
                  f"GPU estimate {r['gpu_estimate_bytes'] * gb:.2f} GiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pi0-ros bench train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
