"""The ROS-free π0 policy: one observation in, one chunk of robot-unit actions out.

Pipeline (openpi `policies/policy.py` order):

    PolicyInput (HWC uint8 RGB per camera slot, padded state in robot units, prompt)
      -> resize_with_pad + [-1, 1] CHW, missing cameras = black + mask False   (preprocess)
      -> normalise state (π0: z-score, π0.5: quantiles, by default)          (preprocess)
      -> tokenize prompt (π0: BOS + text + "\\n"; π0.5: "Task: ..., State: <256-bin
         state>;\\nAction: ", padded)                                          (preprocess)
      -> PI0Model.sample_actions (flow matching, num_steps Euler steps)        (model)
      -> unnormalise actions -> float64 (chunk_size, action_dim)               (postprocess)

A checkpoint directory holds `model.safetensors` + `config.json` (model/checkpoint.py),
`tokenizer.model` (SentencePiece) and `assets/<asset_id>/norm_stats.json` (openpi layout).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pi0_ros.model.normalize import (
    NORM_STATS_FILENAME,
    NormMode,
    NormStats,
    Normalizer,
    load_norm_stats,
    save_norm_stats,
)
from pi0_ros.model.preprocess import CAMERA_SLOTS, images_to_model
from pi0_ros.model.tokenizer import TOKENIZER_FILENAME, PromptTokenizer, tiny_tokenizer

if TYPE_CHECKING:
    from pi0_ros.model.pi0 import PI0Model
    from pi0_ros.realtime_chunking import ChunkGuide

logger = logging.getLogger(__name__)

ASSETS_DIRNAME = "assets"
DELTA_FILENAME = "delta_actions.json"  # assets/<asset_id>/: which action dims are relative to the state


@dataclasses.dataclass(frozen=True)
class PolicyInput:
    """One observation for the policy.

    images: camera slot name ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb") ->
        (H, W, 3) uint8 RGB. Missing slots are allowed (black image, masked out).
    state: (action_dim,) robot-unit state, already zero-padded to the model's action_dim.
    prompt: the task instruction.
    """

    images: Mapping[str, np.ndarray]
    state: np.ndarray
    prompt: str
    stamp: float | None = None  # s, observation time t_obs (only time-aware policies use it)
    # Real-time chunking: the previous chunk's actions this one should continue
    # (pi0_ros.realtime_chunking; absolute, padded (H, action_dim) like PolicyOutput.actions).
    guide: "ChunkGuide | None" = None


@dataclasses.dataclass(frozen=True)
class PolicyOutput:
    """actions: (chunk_size, action_dim) float64 in robot units; timing: milliseconds per stage."""

    actions: np.ndarray
    timing: dict[str, float]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Policy:
    """Wraps a PI0Model with its tokenizer and normalisation statistics.

    `infer` keeps no per-call state on the object, so one Policy may be called from a worker
    thread (or several) while other threads read its attributes.
    """

    def __init__(
        self,
        model: PI0Model,
        tokenizer: PromptTokenizer,
        normalizer: Normalizer | None = None,
        device: str | torch.device = "cpu",
        num_steps: int = 10,
        delta_action_mask: np.ndarray | None = None,
        noise_scale: float = 1.0,
    ) -> None:
        """delta_action_mask: (k <= action_dim,) bool; the model predicts those action dims as
        offsets from the current state (openpi's DeltaActions), so infer adds the state back.
        noise_scale: std of the sampler's starting noise (1 = the paper's N(0, I); smaller
        values sample closer to the distribution's centre, 0 = deterministic)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not (0.0 <= noise_scale <= 1.0):
            raise ValueError(f"noise_scale must be within [0, 1], got {noise_scale}")
        self.noise_scale = float(noise_scale)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.normalizer = normalizer if normalizer is not None else Normalizer.identity()
        self.num_steps = int(num_steps)
        self.random_weights = False  # True for tiny_random: say so loudly wherever it runs
        # slot -> the region of interest the checkpoint was trained on (None: whole frame); None
        # when unrecorded. Whoever feeds the policy camera frames cuts it out (pi0_ros.camera_views).
        self.camera_crops: dict[str, tuple[float, float, float, float] | None] | None = None
        self._ignored_cameras: set[str] = set()
        self.delta_action_mask = None if delta_action_mask is None else np.asarray(delta_action_mask, dtype=bool)
        if tokenizer.max_len > self.config.max_token_len:
            raise ValueError(
                f"tokenizer max_len {tokenizer.max_len} exceeds the model's max_token_len "
                f"{self.config.max_token_len}"
            )
        if self.normalizer.stats is not None:
            missing = [k for k in ("state", "actions") if k not in self.normalizer.stats]
            if missing:
                raise ValueError(f"normaliser has no statistics for {missing}")
        if tokenizer.vocab_size > self.config.vocab_size:
            raise ValueError(
                f"tokenizer vocabulary ({tokenizer.vocab_size}) is larger than the model's "
                f"({self.config.vocab_size}); wrong tokenizer for this checkpoint?"
            )

    # ----------------------------------------------------------------------------- info
    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self.config.camera_names)

    @property
    def action_dim(self) -> int:
        return int(self.config.action_dim)

    @property
    def chunk_size(self) -> int:
        return int(self.config.chunk_size)

    def __repr__(self) -> str:
        return (
            f"Policy(action_dim={self.action_dim}, chunk_size={self.chunk_size}, cameras={self.camera_names}, "
            f"device={self.device}, num_steps={self.num_steps}, {self.normalizer!r})"
        )

    # ------------------------------------------------------------------------ inference
    def _check_input(self, inp: PolicyInput) -> np.ndarray:
        if not isinstance(inp.prompt, str):
            raise TypeError(f"prompt must be a str, got {type(inp.prompt).__name__}")
        state = np.asarray(inp.state, dtype=np.float64)
        if state.shape != (self.action_dim,):
            raise ValueError(
                f"state must have shape ({self.action_dim},) (zero-padded to the model's action_dim), "
                f"got {state.shape}"
            )
        if not np.isfinite(state).all():
            raise ValueError(f"state has non-finite values at {np.flatnonzero(~np.isfinite(state)).tolist()}")
        return state

    @property
    def state_dims(self) -> int:
        """π0.5: how many leading state dims the prompt carries: those the state statistics
        cover (openpi discretises the robot's state before padding), else the whole vector."""
        stats = self.normalizer.stats
        if stats is None or "state" not in stats:
            return self.action_dim
        return min(stats["state"].dim, self.action_dim)

    def make_inputs(self, inp: PolicyInput):
        """Preprocess one observation into a batch-of-one ModelInputs on the policy's device."""
        from pi0_ros.model.inputs import ModelInputs

        state = self._check_input(inp)
        size = self.config.vision.image_size
        images = inp.images
        # Known slots the model lacks are dropped; unknown names still fail in images_to_model.
        extra = (set(images) - set(self.camera_names)) & set(CAMERA_SLOTS)
        if extra:
            # A checkpoint trained with fewer camera slots (e.g. only base_0_rgb) ignores the others.
            if extra - self._ignored_cameras:
                self._ignored_cameras |= extra
                logger.warning("the model has camera slots %s; ignoring %s", list(self.camera_names), sorted(extra))
            images = {k: v for k, v in images.items() if k in self.camera_names}
        pixels, image_mask = images_to_model(images, self.camera_names, size, size)
        norm_state = self.normalizer.normalize(state, "state")
        if self.config.is_pi05:  # the state is prompt text; the model ignores inputs.state
            tokens, token_mask = self.tokenizer.encode(inp.prompt, norm_state[: self.state_dims])
        else:
            tokens, token_mask = self.tokenizer.encode(inp.prompt)
        inputs = ModelInputs(
            images=pixels[None],  # float32; the model casts to its compute dtype
            image_masks=image_mask[None],
            tokens=torch.from_numpy(tokens)[None],
            token_masks=torch.from_numpy(token_mask)[None],
            state=torch.from_numpy(norm_state)[None].float(),
        )
        return inputs.to(self.device)

    def _noise_tensor(self, noise) -> torch.Tensor | None:
        if noise is None:
            if self.noise_scale == 1.0:
                return None   # the model draws N(0, I) itself
            shape = (1, self.chunk_size, self.action_dim)
            return self.noise_scale * torch.randn(shape, device=self.device)
        t = torch.as_tensor(noise)
        if t.ndim == 2:
            t = t[None]
        expected = (1, self.chunk_size, self.action_dim)
        if tuple(t.shape) != expected:
            raise ValueError(f"noise must have shape {expected[1:]} or {expected}, got {tuple(t.shape)}")
        return t.to(device=self.device, dtype=torch.float32)

    def infer(self, inp: PolicyInput, noise: np.ndarray | torch.Tensor | None = None) -> PolicyOutput:
        """Run one chunk. `noise` ((chunk_size, action_dim), used as given, i.e. not scaled by
        noise_scale) makes it deterministic."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            inputs = self.make_inputs(inp)
            noise_t = self._noise_tensor(noise)
            kwargs = {}
            if inp.guide is not None:
                kwargs["guide"], kwargs["guide_weights"] = self._guide_tensors(inp)
            _sync(self.device)
            t1 = time.perf_counter()
            actions = self.model.sample_actions(inputs, noise=noise_t, num_steps=self.num_steps, **kwargs)
            _sync(self.device)
            t2 = time.perf_counter()
            out = actions[0].float().cpu().numpy().astype(np.float64)
        out = self.normalizer.unnormalize(out, "actions")
        if self.delta_action_mask is not None:
            m = self.delta_action_mask
            state = np.asarray(inp.state, dtype=np.float64)
            out[:, : m.size][:, m] += state[: m.size][m]  # (H, D): offsets -> absolute
        t3 = time.perf_counter()
        timing = {
            "preprocess": (t1 - t0) * 1e3,
            "model": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return PolicyOutput(actions=out, timing=timing)

    def _guide_tensors(self, inp: PolicyInput) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide in the model's space: offsets from the state on delta dims, normalised.
        -> (1, H, action_dim), (1, H)."""
        g = inp.guide
        expected = (self.chunk_size, self.action_dim)
        if g.actions.shape != expected:
            raise ValueError(f"guide actions must have shape {expected}, got {g.actions.shape}")
        a = g.actions.copy()
        if self.delta_action_mask is not None:
            m = self.delta_action_mask
            state = np.asarray(inp.state, dtype=np.float64)
            a[:, : m.size][:, m] -= state[: m.size][m]
        a = self.normalizer.normalize(a, "actions")
        return (torch.from_numpy(np.ascontiguousarray(a)).float()[None].to(self.device),
                torch.from_numpy(g.weights).float()[None].to(self.device))

    def dummy_input(self, prompt: str = "do nothing") -> PolicyInput:
        """A valid observation (black images on every slot, zero state)."""
        size = self.config.vision.image_size
        black = np.zeros((size, size, 3), dtype=np.uint8)
        return PolicyInput(images={c: black for c in self.camera_names}, state=np.zeros(self.action_dim), prompt=prompt)

    def warmup(self, n: int = 2, should_stop: Callable[[], bool] | None = None) -> list[dict[str, float]]:
        """Run `n` chunks on a dummy observation (fixed zero noise); returns their timings.
        `should_stop`: asked before each chunk; once true, no more chunks are run."""
        zeros = np.zeros((self.chunk_size, self.action_dim), dtype=np.float32)
        timings = []
        for _ in range(n):
            if should_stop is not None and should_stop():
                break
            timings.append(self.infer(self.dummy_input(), noise=zeros).timing)
        return timings

    # ---------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls,
        directory: str | os.PathLike,
        asset_id: str | None = None,
        device: str | torch.device = "cpu",
        *,
        num_steps: int = 10,
        dtype: str | torch.dtype | None = None,
        norm_mode: NormMode | None = None,
        noise_scale: float = 1.0,
        base: str | os.PathLike | None = None,
    ) -> Policy:
        """Load model, tokenizer and norm stats from a checkpoint directory.

        A LoRA adapter directory (``pi0-ros train --lora``) loads as its base checkpoint plus the
        adapters merged into the weights (needs PEFT); ``base`` overrides the base it names.

        The family (π0 / π0.5) comes from the checkpoint's config.json; ``norm_mode=None``
        takes the family's default (openpi: π0 z-score, π0.5 quantiles).

        Norm stats come from `assets/<asset_id>/norm_stats.json`; with `asset_id=None` the
        only asset directory is used, and with none the policy runs un-normalised (warning).
        """
        from pi0_ros.model.checkpoint import load_checkpoint
        from pi0_ros.model.pi0 import TORCH_DTYPES

        if isinstance(dtype, str):
            if dtype not in TORCH_DTYPES:
                raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")
            dtype = TORCH_DTYPES[dtype]
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {directory}")
        tok_file = directory / TOKENIZER_FILENAME
        if not tok_file.is_file():
            raise FileNotFoundError(
                f"no {TOKENIZER_FILENAME} in {directory}: copy the PaliGemma SentencePiece model "
                "(paligemma_tokenizer.model) there, or save with save_policy_checkpoint"
            )
        stats_file = _find_norm_stats(directory, asset_id)
        from pi0_ros.training.lora import is_adapter_dir

        if is_adapter_dir(directory):  # a LoRA run's checkpoint: its base + the adapters, merged on load
            from pi0_ros.training.lora import load_lora_model

            model = load_lora_model(directory, base=base, device=str(device), dtype=dtype)
        else:
            model = load_checkpoint(directory, device=str(device), dtype=dtype)
        tokenizer = PromptTokenizer(tok_file, max_len=model.config.max_token_len)
        if stats_file is None:
            logger.warning(
                "checkpoint %s has no %s/<asset_id>/%s: running with the IDENTITY normaliser; "
                "state and actions are NOT normalised",
                directory,
                ASSETS_DIRNAME,
                NORM_STATS_FILENAME,
            )
            normalizer = Normalizer.identity()
        else:
            normalizer = Normalizer(load_norm_stats(stats_file), mode=norm_mode or model.config.default_norm_mode)
        delta = None
        if stats_file is not None and (stats_file.parent / DELTA_FILENAME).is_file():
            delta = load_delta_mask(stats_file.parent)
        policy = cls(model, tokenizer, normalizer, device=device, num_steps=num_steps, delta_action_mask=delta,
                     noise_scale=noise_scale)
        if stats_file is not None:
            from pi0_ros import camera_views

            policy.camera_crops = camera_views.load(stats_file.parent)
        return policy

    @classmethod
    def tiny_random(
        cls,
        seed: int = 0,
        action_dim: int = 32,
        device: str | torch.device = "cpu",
        *,
        num_cameras: int = 3,
        num_steps: int = 10,
        family: str = "pi0",
    ) -> Policy:
        """The tiny preset (family "pi0" or "pi05") with RANDOM weights, the tiny tokenizer and
        identity stats (demo/tests)."""
        from pi0_ros.model.config import get_preset
        from pi0_ros.model.pi0 import PI0Model

        if family not in ("pi0", "pi05"):
            raise ValueError(f'family must be "pi0" or "pi05", got {family!r}')
        config = get_preset("tiny" if family == "pi0" else "pi05_tiny", action_dim=action_dim, num_cameras=num_cameras)
        logger.warning(
            "!!! Policy.tiny_random: the tiny %s has RANDOM weights (seed %d); its actions are "
            "meaningless. For plumbing tests and demos only — never drive a real robot with it. !!!",
            family,
            seed,
        )
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG
            torch.manual_seed(seed)
            model = PI0Model(config, device=device)
            if config.is_pi05:
                # openpi zero-initialises the adaRMS modulation, which closes every expert gate:
                # the actions would ignore the observation. A random demo policy should react
                # to its inputs as the π0 one does, so open the gates a little.
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if ".dense." in name:
                            p.normal_(0.0, 0.05)
        tokenizer = tiny_tokenizer(max_len=config.max_token_len)
        policy = cls(model, tokenizer, Normalizer.identity(), device=device, num_steps=num_steps)
        policy.random_weights = True
        return policy


def _find_norm_stats(directory: Path, asset_id: str | None) -> Path | None:
    assets = directory / ASSETS_DIRNAME
    available = sorted(d.name for d in assets.iterdir() if d.is_dir()) if assets.is_dir() else []
    if asset_id is not None:
        file = assets / asset_id / NORM_STATS_FILENAME
        if not file.is_file():
            raise FileNotFoundError(f"norm stats for asset_id {asset_id!r} not found at {file}; available: {available}")
        return file
    if not available:
        return None
    if len(available) > 1:
        raise ValueError(f"checkpoint {directory} has several assets {available}: pass asset_id")
    file = assets / available[0] / NORM_STATS_FILENAME
    if not file.is_file():
        raise FileNotFoundError(f"asset directory {file.parent} has no {NORM_STATS_FILENAME}")
    return file


def save_delta_mask(asset_dir: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write assets/<asset_id>/delta_actions.json: which padded action dims are state-relative."""
    d = Path(asset_dir)
    d.mkdir(parents=True, exist_ok=True)
    f = d / DELTA_FILENAME
    f.write_text(json.dumps({"delta_action_mask": [bool(x) for x in np.asarray(mask, dtype=bool)]}) + "\n")
    return f


def load_delta_mask(asset_dir: str | os.PathLike) -> np.ndarray:
    f = Path(asset_dir) / DELTA_FILENAME
    try:
        mask = json.loads(f.read_text())["delta_action_mask"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: expected {{\"delta_action_mask\": [bool, ...]}}: {e}") from e
    if not isinstance(mask, list) or not all(isinstance(x, bool) for x in mask):
        raise ValueError(f"{f}: delta_action_mask must be a list of booleans")
    return np.array(mask, dtype=bool)


def save_policy_checkpoint(
    policy_or_parts: Policy | tuple[PI0Model, PromptTokenizer],
    directory: str | os.PathLike,
    asset_id: str | None = None,
    norm_stats: Mapping[str, NormStats] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a directory that `Policy.from_checkpoint` loads back to the same policy.

    `state_dict`: weights to write instead of the model's own (a sharded model's gathered state).

    `policy_or_parts` is a Policy or a (model, tokenizer) pair. `norm_stats` defaults to the
    policy's statistics; they are written to `assets/<asset_id>/norm_stats.json` (asset_id is
    then required). With no statistics no asset is written (identity normalisation on load).
    """
    from pi0_ros.model.checkpoint import save_checkpoint

    if isinstance(policy_or_parts, Policy):
        model, tokenizer = policy_or_parts.model, policy_or_parts.tokenizer
        if norm_stats is None:
            norm_stats = policy_or_parts.normalizer.stats
    else:
        model, tokenizer = policy_or_parts
    directory = Path(directory)
    if norm_stats is not None and asset_id is None:
        raise ValueError("asset_id is required to save norm stats (assets/<asset_id>/norm_stats.json)")
    if asset_id is not None and norm_stats is None:
        raise ValueError(f"asset_id {asset_id!r} given but no norm stats to save")
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, directory, state_dict=dict(state_dict) if state_dict is not None else None)
    tokenizer.save(directory / TOKENIZER_FILENAME)
    if norm_stats is not None:
        save_norm_stats(directory / ASSETS_DIRNAME / asset_id, norm_stats)
    return directory
