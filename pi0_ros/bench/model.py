"""`pi0-ros bench model`: latency and memory of one π0 or π0.5 action chunk.

Weights are random (latency does not depend on their values). Per run it measures:
- the model alone, split into the prefix pass (SigLIP + VLM over images and prompt, plus π0's
  state token, building the K/V cache) and the Euler steps (action expert only);
- the end-to-end `Policy.infer` (resize_with_pad of 480x640 camera frames, tokenizer,
  normalisation, model, unnormalisation).
Medians are reported. With `--compare-transformers` the same configuration is built as
transformers' `PI0ForConditionalGeneration` and its `sample_actions` is timed in the same
process, with the same threads and inputs (π0 only: no transformers release has π0.5 yet).

`--family pi05` benchmarks π0.5 at the preset's geometry (pi05_full == --preset full --family
pi05). Its prompt carries the state as text: with the tiny tokenizer (digits split, as Gemma's
tokenizer splits them) the 32-dim state adds about 130 prompt tokens; the JSON reports
`prompt_tokens`.

Usage (also `python -m pi0_ros.bench.model`):
    pi0-ros bench model --preset tiny --cameras 2 --runs 20 --threads 2 --json --compare-transformers
    pi0-ros bench model --preset full --runs 1 --warmup 0 --json
    pi0-ros bench model --preset full --family pi05 --runs 1 --warmup 0 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

PROMPT = "pick up the red cube and place it in the box"
FRAME_HW = (480, 640)  # camera frames as a robot delivers them; resized inside Policy.infer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `bench model` options on `parser`."""
    parser.add_argument("--preset", default="tiny", help="model preset: tiny, small, full, ... (default: tiny)")
    parser.add_argument("--family", choices=("pi0", "pi05"), default=None,
                        help="model family at the preset's geometry (default: the preset's)")
    parser.add_argument("--cameras", type=int, default=None, help="cameras fed to the model, 1..3 (default: preset's)")
    parser.add_argument("--runs", type=int, default=10, help="timed chunks (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed chunks first (default: 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=10, help="Euler integration steps per chunk (default: 10)")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="override the preset's dtype"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")
    parser.add_argument("--model-only", action="store_true", help="skip the end-to-end Policy.infer timing")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--compare-transformers",
        action="store_true",
        help="also time transformers' PI0ForConditionalGeneration at the same config",
    )


# ----------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return device


def _make_input(policy, cameras: int, seed: int):
    from pi0_ros.policy import PolicyInput

    rng = np.random.default_rng(seed)
    images = {
        name: rng.integers(0, 256, size=(*FRAME_HW, 3), dtype=np.uint8) for name in policy.camera_names[:cameras]
    }
    state = rng.standard_normal(policy.action_dim)
    noise = rng.standard_normal((policy.chunk_size, policy.action_dim)).astype(np.float32)
    return PolicyInput(images=images, state=state, prompt=PROMPT), noise


def _has_split_hooks(model) -> bool:
    return all(hasattr(model, n) for n in ("build_prefix_cache", "_denoise_step", "_drop_missing_cameras"))


def _timed_split(
    model, inputs, noise: torch.Tensor, num_steps: int, device: torch.device
) -> tuple[float, float, torch.Tensor]:
    """One chunk through the model's own hooks: (prefix_ms, steps_ms, actions). Mirrors sample_actions."""
    from pi0_ros.model.pi0 import euler_times, sinusoidal_time_embedding

    _sync(device)
    t0 = time.perf_counter()
    cache = model.build_prefix_cache(model._drop_missing_cameras(inputs))
    _sync(device)
    t1 = time.perf_counter()
    x_t = noise
    times = torch.tensor(euler_times(num_steps), dtype=torch.float32, device=device)
    time_embs = sinusoidal_time_embedding(times, model.config.expert.width)
    dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=device)
    step = model._step_fn() if hasattr(model, "_step_fn") else model._denoise_step
    for k in range(len(times)):
        x_t = x_t + dt * step(cache, x_t, time_embs[k : k + 1].expand(x_t.shape[0], -1))
    _sync(device)
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, x_t


def _differential(total_n: float, total_1: float | None, n: int) -> tuple[float | None, float | None]:
    """(prefix, step) estimated from T(n) and T(1): n - 1 extra steps cost T(n) - T(1)."""
    if total_1 is None or n < 2:
        return None, None
    step = max(0.0, (total_n - total_1) / (n - 1))
    return max(0.0, total_n - n * step), step


def _timed_sample(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


# ------------------------------------------------------------------- transformers comparison


def transformers_config(config):
    """transformers' PI0Config with the same shapes as our PI0Config (for timing only)."""
    from transformers import PI0Config as HFPI0Config

    vocab = config.vocab_size
    vlm = {
        "model_type": "paligemma",
        "text_config": {
            "model_type": "gemma",
            "hidden_size": config.vlm.width,
            "num_hidden_layers": config.vlm.depth,
            "intermediate_size": config.vlm.mlp_dim,
            "num_attention_heads": config.vlm.num_heads,
            "num_key_value_heads": config.vlm.num_kv_heads,
            "head_dim": config.vlm.head_dim,
            "vocab_size": vocab,
            "rms_norm_eps": config.vlm.rms_norm_eps,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": config.vision.width,
            "num_hidden_layers": config.vision.depth,
            "intermediate_size": config.vision.mlp_dim,
            "num_attention_heads": config.vision.num_heads,
            "patch_size": config.vision.patch_size,
            "image_size": config.vision.image_size,
            "vision_use_head": False,
        },
        "projection_dim": config.vlm.width,
        "image_token_id": vocab,  # outside the text vocabulary, as in the real model
    }
    dit = {
        "model_type": "gemma",
        "hidden_size": config.expert.width,
        "num_hidden_layers": config.expert.depth,
        "intermediate_size": config.expert.mlp_dim,
        "num_attention_heads": config.expert.num_heads,
        "num_key_value_heads": config.expert.num_kv_heads,
        "head_dim": config.expert.head_dim,
        "rms_norm_eps": config.expert.rms_norm_eps,
    }
    return HFPI0Config(
        vlm_config=vlm,
        dit_config=dit,
        chunk_size=config.chunk_size,
        max_state_dim=config.action_dim,
        max_action_dim=config.action_dim,
    )


def transformers_sampler(config, inputs, noise, seed: int, device: torch.device, torch_dtype):
    """Build transformers' PI0ForConditionalGeneration at `config`; return (info, sample(num_steps))."""
    import transformers  # optional dependency: only for this comparison
    from transformers import PI0ForConditionalGeneration

    hf_config = transformers_config(config)
    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(torch_dtype)  # build directly in the target dtype (full: no fp32 copy)
        try:
            model = PI0ForConditionalGeneration(hf_config)
        finally:
            torch.set_default_dtype(default_dtype)
    model = model.to(device=device, dtype=torch_dtype).eval()
    n_cam = inputs.images.shape[1]
    tokens_per_image = config.vision.tokens_per_image
    image_ids = torch.full((1, n_cam * tokens_per_image), config.vocab_size, dtype=torch.long, device=device)
    input_ids = torch.cat((image_ids, inputs.tokens), dim=1)
    attention_mask = torch.cat(
        (inputs.image_masks.repeat_interleave(tokens_per_image, dim=1), inputs.token_masks), dim=1
    ).long()
    kwargs = dict(
        state=inputs.state.to(torch_dtype),
        input_ids=input_ids,
        pixel_values=inputs.images.to(torch_dtype),
        pixel_attention_mask=inputs.image_masks,
        attention_mask=attention_mask,
    )

    def sample(num_steps: int) -> torch.Tensor:
        return model.sample_actions(noise=noise.to(torch_dtype), num_steps=num_steps, **kwargs)

    with torch.inference_mode():
        out = sample(2)
    if tuple(out.shape) != tuple(noise.shape) or not torch.isfinite(out).all():
        raise RuntimeError(f"transformers PI0 returned {tuple(out.shape)} / non-finite values")
    # its Gemma expert carries an unused token embedding (vocab x expert width); ours has none
    info = {"version": transformers.__version__, "params": sum(p.numel() for p in model.parameters())}
    return info, sample


# ---------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; print a report (or JSON with --json). Returns the exit code."""
    from pi0_ros.model.config import DEFAULT_MAX_TOKEN_LEN, get_preset
    from pi0_ros.model.pi0 import TORCH_DTYPES, PI0Model
    from pi0_ros.model.tokenizer import tiny_tokenizer
    from pi0_ros.policy import Policy

    if args.runs < 1 or args.warmup < 0 or args.steps < 1:
        print("bench model: --runs and --steps must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        device = _resolve_device(args.device)
        overrides: dict[str, Any] = {}
        if args.cameras is not None:
            if not 1 <= args.cameras <= 3:
                raise ValueError(f"--cameras must be 1..3, got {args.cameras}")
            overrides["num_cameras"] = args.cameras
        if args.dtype is not None:
            overrides["dtype"] = args.dtype
        config = get_preset(args.preset, **overrides)
        if args.family is not None and args.family != config.family:
            # the other family at the same geometry, with that family's prompt budget
            config = config.replace(family=args.family, max_token_len=DEFAULT_MAX_TOKEN_LEN[args.family])
        if args.compare_transformers and config.is_pi05:
            raise ValueError("--compare-transformers: transformers has no π0.5 model (pi0 only)")
    except ValueError as e:
        print(f"bench model: {e}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cameras = config.num_cameras

    t_build = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = PI0Model(config, device=device)
    build_s = time.perf_counter() - t_build
    policy = Policy(model, tiny_tokenizer(max_len=config.max_token_len), device=device, num_steps=args.steps)
    inp, noise_np = _make_input(policy, cameras, args.seed)
    with torch.inference_mode():
        inputs = policy.make_inputs(inp)
    noise = torch.from_numpy(noise_np).to(device)[None]

    split = _has_split_hooks(model)
    if not split:
        logger.warning("PI0Model has no prefix/step hooks: prefix and step estimated from T(n)-T(1)")
    with torch.inference_mode():
        for _ in range(args.warmup):
            policy.infer(inp, noise=noise_np)
    peak_rss_ours = _peak_rss_mb()
    hf_info = hf_sample = None
    if args.compare_transformers:
        try:
            hf_info, hf_sample = transformers_sampler(
                config, inputs, noise, args.seed, device, TORCH_DTYPES[config.dtype]
            )
        except ImportError as e:
            print(f"bench model: --compare-transformers needs transformers with PI0 ({e})", file=sys.stderr)
            return 3

    split_verified = None
    with torch.inference_mode():
        for _ in range(args.warmup if hf_sample is not None else 0):
            hf_sample(args.steps)
        # Interleaved: ours and theirs see the same machine load within each run.
        prefix_ms, steps_ms, model_ms, ones, e2e, hf_ms, hf_ones = [], [], [], [], [], [], []
        for _ in range(args.runs):
            if split:
                p, s, split_actions = _timed_split(model, inputs, noise, args.steps, device)
                prefix_ms.append(p)
                steps_ms.append(s)
                model_ms.append(p + s)
            else:
                model_ms.append(_timed_sample(lambda: model.sample_actions(inputs, noise, args.steps), device))
                ones.append(_timed_sample(lambda: model.sample_actions(inputs, noise, 1), device))
            if not args.model_only:
                out = policy.infer(inp, noise=noise_np)
                e2e.append(out.timing)
                if split:  # the hooks are private API: check they still reproduce sample_actions
                    ok = np.allclose(split_actions[0].float().cpu().numpy(), out.actions, atol=1e-4)
                    split_verified = ok if split_verified is None else split_verified and ok
            if hf_sample is not None:
                hf_ms.append(_timed_sample(lambda: hf_sample(args.steps), device))
                if args.steps > 1:
                    hf_ones.append(_timed_sample(lambda: hf_sample(1), device))
    if split_verified is False:
        logger.warning("prefix/step split through the model's hooks differs from Policy.infer's actions")
    if split:
        prefix, step = _median(prefix_ms), _median(steps_ms) / args.steps
    else:
        prefix, step = _differential(_median(model_ms), _median(ones), args.steps)
    peak_rss = _peak_rss_mb()
    result: dict[str, Any] = {
        "preset": args.preset,
        "family": config.family,
        "prompt_tokens": int(inputs.token_masks.sum()),
        "params": model.num_parameters(),
        "cameras": cameras,
        "threads": threads,
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "cpu": platform.processor() or platform.machine(),
        "dtype": config.dtype,
        "runs": args.runs,
        "warmup": args.warmup,
        "num_steps": args.steps,
        "prefix_ms": prefix,
        "step_ms": step,
        "model_total_ms": _median(model_ms),
        "model_total_min_ms": min(model_ms),  # the least disturbed run, for shared/noisy machines
        "total_ms": _median([t["total"] for t in e2e]),  # end-to-end Policy.infer
        "preprocess_ms": _median([t["preprocess"] for t in e2e]),
        "postprocess_ms": _median([t["postprocess"] for t in e2e]),
        "split_method": "hooks" if split else "differential",
        "split_verified": split_verified,  # hooks' actions == Policy.infer's (None: not checked)
        "build_s": build_s,
        "peak_rss_mb": peak_rss,  # whole process (includes the transformers model if compared)
        "peak_rss_mb_ours": peak_rss_ours,  # after our first chunk, before any transformers model
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "torch": torch.__version__,
        # per run, so that a run on a loaded machine can be told apart (prefix/steps: hooks only)
        "samples_ms": {"model_total": model_ms, "prefix": prefix_ms, "steps": steps_ms,
                       "total": [t["total"] for t in e2e]},
        "transformers": None,
    }
    if hf_info is not None:
        hf_total = _median(hf_ms)
        hf_prefix, hf_step = _differential(hf_total, _median(hf_ones), args.steps)
        result["transformers"] = {
            **hf_info,
            "model_total_ms": hf_total,
            "prefix_ms_est": hf_prefix,
            "step_ms_est": hf_step,
            "split_method": "differential" if hf_ones else None,
            "model_total_min_ms": min(hf_ms),
            "ratio_ours_over_theirs": result["model_total_ms"] / hf_total,
            "ratio_min_ours_over_theirs": min(model_ms) / min(hf_ms),
            "samples_ms": hf_ms,
        }
    _report(result, args.json)
    return 0


def _fmt(x: float | None, unit: str = " ms") -> str:
    return "-" if x is None else f"{x:.2f}{unit}"


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    r = result
    print(
        f"{r['family']} {r['preset']}: {r['params'] / 1e6:.2f}M params, {r['dtype']}, {r['device']}, {r['threads']} threads, "
        f"{r['cameras']} cameras, {r['prompt_tokens']} prompt tokens, {r['num_steps']} steps, median of {r['runs']} runs"
    )
    print(f"  prefix        {_fmt(r['prefix_ms'])}")
    print(f"  per step      {_fmt(r['step_ms'])}")
    print(f"  model total   {_fmt(r['model_total_ms'])}  (min {_fmt(r['model_total_min_ms'])})")
    print(f"  Policy.infer  {_fmt(r['total_ms'])}  (preprocess {_fmt(r['preprocess_ms'])})")
    print(f"  peak RSS      {_fmt(r['peak_rss_mb'], ' MB')}")
    if r["peak_gpu_mb"] is not None:
        print(f"  peak GPU      {_fmt(r['peak_gpu_mb'], ' MB')}")
    hf = r["transformers"]
    if hf:
        print(
            f"  transformers {hf['version']} PI0: {_fmt(hf['model_total_ms'])} "
            f"(prefix ~{_fmt(hf['prefix_ms_est'])}, step ~{_fmt(hf['step_ms_est'])}); "
            f"ours/theirs = {hf['ratio_ours_over_theirs']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pi0-ros bench model", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
