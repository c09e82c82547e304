"""Training data: the dataset mixture (weights n^0.43), normalisation statistics over the
datasets, the deterministic per-step batches of each rank, and their collation into model inputs.

Each step draws its global batch from the mixture with a generator seeded by (seed, step); rank r
takes its slice, so a step's batch does not depend on the number of ranks or on resuming."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros.model.normalize import NormStats, Normalizer, load_norm_stats

MIXTURE_EXPONENT = 0.43


def mixture_weights(sizes: Sequence[int], exponent: float = MIXTURE_EXPONENT) -> np.ndarray:
    """Sampling probability of each dataset: n^exponent, normalised."""
    w = np.asarray(sizes, dtype=np.float64) ** exponent
    return w / w.sum()


def mapping_for(root: str, dataset_map: str | None) -> str | None:
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


def keep_init_norm_stats(norm: dict[str, dict[str, NormStats]], init: str | Path, delta_actions: bool,
                         ) -> tuple[dict[str, dict[str, NormStats]], list[str]]:
    """``norm`` with each asset's statistics replaced by those the ``init`` checkpoint was trained
    with (assets/<asset_id>/norm_stats.json), where it has them. Continued training on new data of
    the same robots (e.g. expert takeovers, which visit states the first data never did) then keeps
    the model's normalised inputs and outputs where they were, instead of shifting every one of
    them at step 0. Returns (stats, the assets taken from ``init``)."""
    out, kept = dict(norm), []
    for asset, stats in norm.items():
        d = Path(init) / "assets" / asset
        if not (d / "norm_stats.json").is_file():
            continue
        if (d / "delta_actions.json").is_file() != bool(delta_actions):
            raise ValueError(f"{d}: the checkpoint was trained {'without' if delta_actions else 'with'} "
                             f"--delta-actions: its action stats do not fit this run")
        old = load_norm_stats(d / "norm_stats.json")
        for key in ("state", "actions"):
            if old[key].mean.shape != stats[key].mean.shape:
                raise ValueError(f"{d}: {key} stats have {old[key].mean.shape[0]} values, the data "
                                 f"{stats[key].mean.shape[0]}: not the same robot layout")
        out[asset] = {"state": old["state"], "actions": old["actions"]}
        kept.append(asset)
    return out, kept


class StepBatches(TorchDataset):
    """Item ``step`` = this rank's part of the global batch of that step (deterministic)."""

    def __init__(self, datasets: Sequence[Pi0Dataset], norm: dict[str, dict[str, NormStats]], batch_size: int,
                 rank: int, world: int, seed: int, action_dim: int, camera_names: Sequence[str], image_size: int,
                 total_steps: int, delta_actions: bool = False, norm_mode: str = "zscore",
                 state_noise: float = 0.0, episode_start_weight: float = 1.0,
                 episode_start_s: float = 1.0) -> None:
        if batch_size % world:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the number of ranks {world}")
        if not (np.isfinite(state_noise) and state_noise >= 0.0):
            raise ValueError(f"--state-noise must be a finite value >= 0, got {state_noise}")
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
        # Std (robot units: rad) of Gaussian noise added to the joint dims of the state the model is
        # given. The labels keep the absolute targets (with delta actions: target minus the noisy
        # state), so the state stops telling where the cube is: a policy that aims by continuing its
        # own trajectory (as it learns from demonstrations whose every state heads to the cube)
        # must aim from the image instead. Grippers and base velocities are never noised.
        self.state_noise = float(state_noise)
        # Frames in the first ``episode_start_s`` seconds of each episode are drawn
        # ``episode_start_weight`` times as often as the rest (within each dataset; the datasets'
        # mixture is unchanged). Near the start the state says nothing about where the cube is, so
        # these are the frames whose chunk the image alone decides, and the closed loop commits to
        # its aim there (diagnose-grasp --shift); later frames mostly continue the arm's trajectory.
        if not (np.isfinite(episode_start_weight) and episode_start_weight > 0.0):
            raise ValueError(f"--episode-start-weight must be a finite value > 0, got {episode_start_weight}")
        if not (np.isfinite(episode_start_s) and episode_start_s >= 0.0):
            raise ValueError(f"--episode-start-s must be a finite value >= 0, got {episode_start_s}")
        self.episode_start_weight, self.episode_start_s = float(episode_start_weight), float(episode_start_s)
        self._frame_cdf: list[np.ndarray] | None = None
        if self.episode_start_weight != 1.0:
            self._frame_cdf = []
            for d in self.datasets:
                w = np.where(d.frame_index / d.fps < self.episode_start_s, self.episode_start_weight, 1.0)
                self._frame_cdf.append(np.cumsum(w) / w.sum())

    def __len__(self) -> int:
        return self.total_steps

    def indices(self, step: int) -> list[tuple[int, int]]:
        """[(dataset, frame)] of the GLOBAL batch of ``step``."""
        rng = np.random.default_rng([self.seed, step, 11])
        which = rng.choice(len(self.datasets), size=self.batch_size, p=self.probs)
        if self._frame_cdf is None:
            return [(int(d), int(rng.integers(len(self.datasets[d])))) for d in which]
        out = []
        for d in which:
            cdf = self._frame_cdf[d]
            out.append((int(d), min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)))
        return out

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
            if self.state_noise > 0.0:
                js = slots[delta_mask(ds)]
                rng = np.random.default_rng([self.seed, step, 13, self.rank * self.local + b])
                st[js] += rng.normal(0.0, self.state_noise, size=js.size)
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
