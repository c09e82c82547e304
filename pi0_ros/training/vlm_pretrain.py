"""`pi0-ros pretrain-vlm`: give a from-scratch π0 the visual grounding PaliGemma would bring.

π0 starts from PaliGemma, whose pre-training includes localisation ("detect ..."). A small π0
trained from scratch on a few hundred demonstrations has no such prior: the flow-matching loss
is first lowered by ignoring the camera (the joint state predicts most of a chunk), and the
policy never learns where the named object is. This stage supplies the prior from the
simulator's ground truth, before `pi0-ros train --init`:

- images: the top camera (``base_0_rgb``) over random task layouts (``n_layouts`` seeds), the
  robot at home, rendered and preprocessed exactly as the policy sees them;
- prompts: each image with the task's prompt for every cube (the cube it names to act on: the
  one picked, or the one moved onto the other);
- target: the named cube's (x, y) and the other cubes' (x, y), scaled to [-1, 1] over the
  workspace;
- head: a linear layer on the mean of the VLM's prefix states *before its last layer*. The
  action expert reads every layer's keys/values, and the last layer's keys/values are computed
  from exactly those states; a mean is what its attention computes before it has learned to
  look anywhere in particular.

Only the vision tower, projector, token embedding and the VLM's layers below the last train; the
head is dropped. The output is a complete π0 checkpoint (action expert as initialised) with the
tokenizer, i.e. a valid ``--init`` for `pi0-ros train`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def render_layouts(embodiment: str, task: str, n_layouts: int, seed: int, image_size: int,
                   slot: str = "base_0_rgb") -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Images (n, S, S, 3) uint8 of ``slot`` as the policy sees it, cube (x, y) per colour
    ((n, 2) in [-1, 1] over the workspace) and the colours."""
    from pi0_ros.images import model_image
    from pi0_ros.sim.env import SimEnv
    from pi0_ros.sim.tasks import cube_name

    env = SimEnv(embodiment, task=task, image_size=224)
    try:
        colors = list(env.task.colors)
        (x0, x1), (y0, y1) = env.scene.workspace
        lo, hi = np.array([x0, y0]), np.array([x1, y1])
        crop = next((c.crop for c in env.embodiment.cameras if c.slot == slot), None)
        images = np.zeros((n_layouts, image_size, image_size, 3), dtype=np.uint8)
        pos = {c: np.zeros((n_layouts, 2), dtype=np.float32) for c in colors}
        for i in range(n_layouts):
            env.reset(seed + i)
            images[i] = model_image(env.render([slot])[slot], crop, image_size)
            for c in colors:
                xy = env.object_position(cube_name(c))[:2]
                pos[c][i] = 2.0 * (xy - lo) / (hi - lo) - 1.0
        return images, pos, colors
    finally:
        env.close()


def shares(n: int, k: int) -> list[int]:
    """``n`` split as evenly as possible into ``k`` parts, the first ones one larger."""
    return [n // k + (1 if j < n % k else 0) for j in range(k)]


def render_layout_set(embodiments: list[str], task: str, n_layouts: int, holdout: int, layout_seed: int,
                      image_size: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[str], np.ndarray, np.ndarray]:
    """The rendered layouts of all ``embodiments``: ``n_layouts`` training and ``holdout`` held-out ones, each
    count split evenly across the embodiments (each its own scene, top camera and workspace scale).

    Returns images, positions per colour (each in [-1, 1] over its own embodiment's workspace), colours,
    ``half`` (n_layouts + holdout, 2): m per unit of each row's scale, and ``group``: the embodiment index of
    each row. Rows: the training layouts of embodiment 0, 1, ..., then the held-out ones in the same order.
    Embodiment j renders the seeds from ``layout_seed`` + (layouts of embodiments before it) on, so one
    embodiment renders exactly what ``render_layouts(embodiment, task, n_layouts + holdout, layout_seed)``
    does, and no two embodiments share a seed (their cube layouts would be the same in workspace units).
    """
    from pi0_ros.sim.env import SimEnv

    train_parts, test_parts, first = [], [], layout_seed
    colors: list[str] | None = None
    for j, (e, n, h) in enumerate(zip(embodiments, shares(n_layouts, len(embodiments)),
                                      shares(holdout, len(embodiments)))):
        images, pos, cols = render_layouts(e, task, n + h, first, image_size)
        first += n + h
        if colors is None:
            colors = cols
        elif cols != colors:
            raise ValueError(f"{e}: task colours {cols} differ from {embodiments[0]}'s {colors}")
        with SimEnv(e, task=task, render=False) as env:
            (x0, x1), (y0, y1) = env.scene.workspace
        half = np.array([(x1 - x0) / 2, (y1 - y0) / 2])  # m per unit of the [-1, 1] scale
        for part, sl in ((train_parts, slice(0, n)), (test_parts, slice(n, n + h))):
            rows = len(images[sl])
            part.append((images[sl], {c: pos[c][sl] for c in cols}, np.tile(half, (rows, 1)), np.full(rows, j)))
    parts = train_parts + test_parts
    assert colors is not None
    return (np.concatenate([p[0] for p in parts]), {c: np.concatenate([p[1][c] for p in parts]) for c in colors},
            colors, np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))


def below_last_layer(vlm: nn.Module) -> nn.Module:
    """A view of the VLM stack without its last decoder layer (same parameters, final norm kept)."""
    view = copy.copy(vlm)
    view._modules = dict(vlm._modules)  # noqa: SLF001 - do not touch the original's module table
    view.layers = nn.ModuleList(list(vlm.layers)[:-1])
    view.config = dataclasses.replace(vlm.config, depth=vlm.config.depth - 1)
    return view


class LocalisationProbe(nn.Module):
    """Mean prefix state below the VLM's last layer -> (x, y) of every cube, named cube first."""

    def __init__(self, model: nn.Module, n_objects: int) -> None:
        super().__init__()
        self.model = model
        self.view = below_last_layer(model.vlm)
        self.head = nn.Linear(model.config.vlm.width, 2 * n_objects)

    def forward(self, inputs: Any) -> Tensor:
        from pi0_ros.model.pi0 import make_attention_mask

        embs, pad, ar = self.model.embed_prefix(inputs)                  # (B, Lp, W)
        mask = make_attention_mask(pad, ar)
        positions = torch.cumsum(pad.long(), dim=1) - 1
        h, _ = self.view(embs.to(self.view.dtype), mask, positions)       # (B, Lp, W)
        w = pad[..., None].to(h.dtype)
        pooled = (h * w).sum(1) / w.sum(1).clamp(min=1.0)                 # (B, W)
        return self.head(pooled.float())                                  # (B, 2 * n_objects)


def batch_inputs(images: np.ndarray, prompts: list[str], tokenizer, action_dim: int):
    from pi0_ros.model.inputs import ModelInputs

    toks, tmask = zip(*(tokenizer.encode(p) for p in prompts))
    x = torch.from_numpy(images).permute(0, 3, 1, 2)[:, None].float() / 127.5 - 1.0  # (B, 1, 3, S, S)
    return ModelInputs(images=x, image_masks=torch.ones(len(prompts), 1, dtype=torch.bool),
                       tokens=torch.from_numpy(np.stack(toks)), token_masks=torch.from_numpy(np.stack(tmask)),
                       state=torch.zeros(len(prompts), action_dim))


def pretrain(embodiment: str | list[str] = "trossen_bimanual", task: str = "pick_cube", preset: str = "sim", out: str = "",
             n_layouts: int = 4000, holdout: int = 200, steps: int = 1500, batch_size: int = 64, lr: float = 1e-3,
             warmup: int = 100, seed: int = 0, log_every: int = 100, layout_seed: int = 100_000,
             init: str = "") -> dict[str, Any]:
    """Train the probe; save a π0 checkpoint to ``out``. Returns the held-out errors (cm).

    ``embodiment``: one name, or several: the layouts (and held-out layouts) are split evenly across them
    (:func:`render_layout_set`), one grounded initialisation for all. With one, the result is the same as
    before several were possible (same seeds, same order).

    ``init``: a checkpoint to continue from (e.g. an earlier grounding, to add robots to it) instead of
    ``preset``'s random weights; the probe's head starts fresh either way."""
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.model.config import get_preset
    from pi0_ros.model.pi0 import PI0Model
    from pi0_ros.model.tokenizer import TOKENIZER_FILENAME, PromptTokenizer, tiny_tokenizer
    from pi0_ros.policy import save_policy_checkpoint
    from pi0_ros.sim.tasks import make_task
    from pi0_ros.training.model_setup import lr_factor

    if not out:
        raise ValueError("out is required")
    source = f"checkpoint {init}" if init else f"preset {preset!r}"
    config = load_checkpoint(init, dtype=torch.float32).config if init else get_preset(preset, dtype="float32")
    if config.num_cameras != 1 or config.camera_names[0] != "base_0_rgb":
        raise ValueError(f"{source}: pretrain-vlm expects a single base_0_rgb camera")
    S = config.vision.image_size
    # Layout seeds far from the demonstration (0..) and evaluation (1000..) seeds.
    embodiments = [embodiment] if isinstance(embodiment, str) else list(embodiment)
    if not embodiments:
        raise ValueError("no embodiment")
    t0 = time.perf_counter()
    images, pos, colors, half, group = render_layout_set(embodiments, task, n_layouts, holdout, layout_seed, S)
    render_s = time.perf_counter() - t0
    # The task's prompt naming each cube as the one to act on (pick_cube: picked, stack_cube: moved).
    prompts = [make_task(task).prompt_for(c) for c in colors]

    torch.manual_seed(seed)
    if init:
        model = load_checkpoint(init, dtype=torch.float32)
        tokenizer = PromptTokenizer(Path(init) / TOKENIZER_FILENAME, max_len=config.max_token_len)
    else:
        model = PI0Model(config)
        tokenizer = tiny_tokenizer(max_len=config.max_token_len)
    probe = LocalisationProbe(model, len(colors))
    prefixes = tuple(f"model.paligemma_with_expert.paligemma.model.{m}"
                     for m in ("vision_tower", "multi_modal_projector", "language_model")) + ("head",)
    last = f".layers.{config.vlm.depth - 1}."  # its keys/values are all the action expert reads of it
    trained = [p for n, p in probe.named_parameters() if n.startswith(prefixes) and last not in n]
    opt = torch.optim.AdamW(trained, lr=lr, betas=(0.9, 0.95), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, steps, 0.1))
    rng = np.random.default_rng(seed)

    def targets(idx: np.ndarray, named: np.ndarray) -> Tensor:
        rows = []
        for i, c in zip(idx, named):
            order = [colors[c]] + [o for o in colors if o != colors[c]]
            rows.append(np.concatenate([pos[o][i] for o in order]))
        return torch.from_numpy(np.stack(rows)).float()

    def errors_cm(idx: np.ndarray) -> dict[str, float]:
        probe.eval()
        named = np.arange(len(idx)) % len(colors)
        with torch.no_grad():
            pred = probe(batch_inputs(images[idx], [prompts[c] for c in named], tokenizer, config.action_dim))
        probe.train()
        err = (pred - targets(idx, named)).numpy().reshape(len(idx), len(colors), 2) * half[idx][:, None]  # m
        d = np.linalg.norm(err, axis=2) * 100
        return {"named_cm": float(np.median(d[:, 0])), "other_cm": float(np.median(d[:, 1:]))}

    train_idx, test_idx = np.arange(n_layouts), np.arange(n_layouts, n_layouts + holdout)
    log: list[dict[str, Any]] = []
    t1 = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(train_idx, batch_size)
        named = rng.integers(len(colors), size=batch_size)
        pred = probe(batch_inputs(images[idx], [prompts[c] for c in named], tokenizer, config.action_dim))
        loss = nn.functional.mse_loss(pred, targets(idx, named))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            entry = {"step": step + 1, "loss": float(loss), **errors_cm(test_idx)}
            log.append(entry)
            logger.info("pretrain-vlm %s", entry)
    train_s = time.perf_counter() - t1
    # Several embodiments: the final held-out errors of each (after training: nothing above changes).
    by_embodiment = {e: errors_cm(test_idx[group[test_idx] == j]) for j, e in enumerate(embodiments)
                     if len(embodiments) > 1 and (group[test_idx] == j).any()}
    save_policy_checkpoint((model, tokenizer), out)
    summary = {"out": str(out), "init": init or None, "embodiments": embodiments, "layouts": n_layouts, "holdout": holdout, "steps": steps,
               "render_s": round(render_s, 1), "train_s": round(train_s, 1), "final": log[-1] if log else None,
               **({"final_by_embodiment": by_embodiment} if by_embodiment else {}), "log": log}
    (Path(out) / "pretrain_vlm.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", nargs="+", default=["trossen_bimanual"], metavar="NAME",
                        help="one or more embodiments: the layouts are split evenly across them, each rendered "
                             "in its own scene and scaled to its own workspace; one grounded init for all")
    parser.add_argument("--task", default="pick_cube")
    parser.add_argument("--preset", default="sim")
    parser.add_argument("--out", required=True, help="checkpoint directory (a valid `train --init`)")
    parser.add_argument("--layouts", type=int, default=4000, help="rendered training layouts")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="", help="continue from this checkpoint (e.g. an earlier grounding, to add "
                                                   "robots to it) instead of --preset's random weights")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    embodiment = args.embodiment[0] if len(args.embodiment) == 1 else list(args.embodiment)
    summary = pretrain(embodiment, args.task, args.preset, args.out, n_layouts=args.layouts, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, seed=args.seed, init=args.init)
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}, indent=2))
    return 0 if math.isfinite(summary["final"]["loss"]) else 1
