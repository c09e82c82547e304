"""The pi0 / pi0.5 vision-language-action flow models (openpi conventions, plain PyTorch).

Parameter names equal the openpi PyTorch checkpoint keys (``paligemma_with_expert...``,
``state_proj``, ``action_in_proj``, ``action_time_mlp_in/out``, ``action_out_proj``), so
checkpoints load without a renaming table.

Token layout: prefix = [image tokens per camera | prompt tokens] (VLM expert),
suffix = [state | H action tokens] (action expert). Attention is block-causal over the
three blocks [prefix] [state] [actions] (see ``make_attention_mask``).

Flow matching (openpi / checkpoint convention): x_t = t * noise + (1 - t) * actions, the
network predicts u = noise - actions; sampling integrates from t = 1 to t = 0 with Euler
steps dt = -1 / num_steps.

π0.5 (``config.family == "pi05"``, openpi ``pi05=True``) is the same class: the family only
decides how the suffix is embedded. π0.5 has no state token (the state is text in the prompt,
see tokenizer.py) and no action-time MLP fusion: action tokens are ``action_in_proj(x_t)``,
and the time embedding goes through ``time_mlp_in/out`` (swish after each) to condition the
action expert's adaptive RMSNorms (gemma.py). Its parameters: ``action_in_proj``,
``time_mlp_in``, ``time_mlp_out``, ``action_out_proj`` and the experts' norms' ``dense``.
Everything else (prefix, attention, KV cache, sampler, loss) is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import PI0Config
from .gemma import AttentionInputs, GemmaStack, KVCache, mixture_forward, prepare_attention
from .inputs import ModelInputs
from .layers import AdaRMSNorm, LayerNorm, Linear, RMSNorm
from .siglip import SiglipVisionTower

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Parameters kept in float32 whatever config.dtype says (openpi keeps patch/pos embeddings and
# norms in fp32; the state/action/time projections are never cast by openpi either).
_FP32_PARAM_MARKERS = (
    "patch_embedding",
    "position_embedding",
    "layernorm",
    "layer_norm",
    ".norm.",
)
_FP32_PARAM_PREFIXES = (
    "state_proj.",
    "action_in_proj.",
    "action_out_proj.",
    "action_time_mlp_in.",
    "action_time_mlp_out.",
    "time_mlp_in.",
    "time_mlp_out.",
)


def keeps_fp32(name: str) -> bool:
    """Whether parameter ``name`` stays float32 in a bfloat16 model."""
    return name.startswith(_FP32_PARAM_PREFIXES) or any(m in name for m in _FP32_PARAM_MARKERS)


# --------------------------------------------------------------------------- pure functions


def make_attention_mask(pad_masks: Tensor, ar_masks: Tensor) -> Tensor:
    """Block-causal attention mask (big_vision / openpi ``make_att_2d_masks``).

    pad_masks: (B, N) bool, True = real token.
    ar_masks:  (B, N) int/bool, 1 where a new block starts (later blocks see it, earlier don't).
    Returns (B, N, N) bool, [b, i, j] = query i may attend key j:
    ``cumsum(ar)[j] <= cumsum(ar)[i]`` and both i and j are real tokens.
    """
    if pad_masks.ndim != 2 or ar_masks.ndim != 2:
        raise ValueError(f"pad_masks and ar_masks must be (B, N), got {pad_masks.shape}, {ar_masks.shape}")
    cum = torch.cumsum(ar_masks.long(), dim=1)
    allowed = cum[:, None, :] <= cum[:, :, None]
    pad = pad_masks.bool()
    return allowed & pad[:, None, :] & pad[:, :, None]


def sinusoidal_time_embedding(
    time: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0
) -> Tensor:
    """openpi's sine-cosine embedding of scalar times: (B,) -> (B, dim) float32, [sin | cos]."""
    if dim % 2:
        raise ValueError(f"time embedding width must be even, got {dim}")
    if time.ndim != 1:
        raise ValueError(f"time must be (B,), got {tuple(time.shape)}")
    # float64 like openpi where the device has it (MPS does not)
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    x = (2 * math.pi / period)[None, :] * time.to(dtype)[:, None]
    return torch.cat((x.sin(), x.cos()), dim=1).float()


def euler_times(num_steps: int) -> list[float]:
    """The times t_k visited by the sampler, accumulated in float32 exactly as openpi does."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32)
    t = torch.tensor(1.0, dtype=torch.float32)
    times = []
    while t >= -dt / 2:
        times.append(float(t))
        t = t + dt
    return times


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- modules


class MultiModalProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class PaliGemmaBody(nn.Module):
    def __init__(self, config: PI0Config):
        super().__init__()
        self.vision_tower = SiglipVisionTower(config.vision)
        self.multi_modal_projector = MultiModalProjector(config.vision.width, config.vlm.width)
        self.language_model = GemmaStack(config.vlm, vocab_size=config.vocab_size)


class PaliGemma(nn.Module):
    def __init__(self, config: PI0Config):
        super().__init__()
        self.model = PaliGemmaBody(config)


class GemmaExpert(nn.Module):
    def __init__(self, config: PI0Config):
        super().__init__()
        # no embedding, no lm_head; π0.5's norms are conditioned on the (expert-width) time embedding
        cond_dim = config.expert.width if config.is_pi05 else None
        self.model = GemmaStack(config.expert, vocab_size=None, cond_dim=cond_dim)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, config: PI0Config):
        super().__init__()
        self.paligemma = PaliGemma(config)
        self.gemma_expert = GemmaExpert(config)


@dataclass
class PrefixCache:
    """What the denoising steps reuse: prefix+state K/V buffers and step-invariant tensors."""

    kv: KVCache  # per layer (B, KVH, Lp + S + H, D), S state tokens; the last H slots are rewritten each step
    attn: AttentionInputs  # action queries over [prefix | state (π0 only) | actions]


class PI0Model(nn.Module):
    """pi0 / pi0.5: PaliGemma (SigLIP + Gemma 2B) with a Gemma action expert and flow matching."""

    def __init__(self, config: PI0Config, device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        e = config.expert.width
        # Build on the meta device: no memory, no init work; then materialise once, directly
        # in the target dtypes (the full model never exists as random fp32 weights).
        with torch.device("meta"):
            self.paligemma_with_expert = PaliGemmaWithExpert(config)
            if config.is_pi05:
                self.action_in_proj = Linear(config.action_dim, e)
                self.time_mlp_in = Linear(e, e)
                self.time_mlp_out = Linear(e, e)
            else:
                self.state_proj = Linear(config.action_dim, e)
                self.action_in_proj = Linear(config.action_dim, e)
                self.action_time_mlp_in = Linear(2 * e, e)
                self.action_time_mlp_out = Linear(e, e)
            self.action_out_proj = Linear(e, config.action_dim)
        dtype = TORCH_DTYPES[config.dtype]
        for name, p in self.named_parameters():
            if not keeps_fp32(name):
                p.data = p.data.to(dtype)
        device = torch.device("cpu" if device is None else device)
        if device.type != "meta":
            self.to_empty(device=device)
            self.init_weights()
        self._compiled_step = None
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Activation checkpointing per transformer layer (SigLIP, and the VLM/expert mixture):
        backward recomputes each layer from its saved input instead of keeping its
        intermediates, trading one extra forward for activation memory. Training only: it acts
        while autograd records, so inference is unaffected."""
        self.gradient_checkpointing = enabled
        self.vision.vision_model.encoder.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ construction helpers

    @property
    def vlm(self) -> GemmaStack:
        return self.paligemma_with_expert.paligemma.model.language_model

    @property
    def expert(self) -> GemmaStack:
        return self.paligemma_with_expert.gemma_expert.model

    @property
    def vision(self) -> SiglipVisionTower:
        return self.paligemma_with_expert.paligemma.model.vision_tower

    @property
    def compute_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.config.dtype]

    @property
    def device(self) -> torch.device:
        return self.action_out_proj.weight.device

    def num_parameters(self) -> int:
        return count_parameters(self)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init in place (whatever the parameter dtypes and device)."""
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.weight.zero_()  # the scale is (1 + w)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, module.embedding_dim**-0.5)
            elif isinstance(module, (nn.Linear, nn.Conv2d, LayerNorm)):
                module.reset_parameters()
        for module in self.modules():
            if isinstance(module, AdaRMSNorm):
                # openpi initialises the modulation to zero: scale = shift = gate = 0, so every
                # expert block starts as the identity and training opens the gates.
                module.dense.weight.zero_()
                module.dense.bias.zero_()
        self.vision.vision_model.embeddings.init_position_table()

    # ------------------------------------------------------------------ embeddings

    def embed_images(self, images: Tensor) -> Tensor:
        """images (B, N, 3, S, S) in [-1, 1] -> (B, N*T, vlm width); not scaled (openpi)."""
        B, N = images.shape[:2]
        feats = self.vision(images.flatten(0, 1), dtype=self.compute_dtype)  # (B*N, T, Wv)
        feats = self.paligemma_with_expert.paligemma.model.multi_modal_projector(feats)
        return feats.reshape(B, N * feats.shape[1], feats.shape[2])

    def embed_prefix(self, inputs: ModelInputs) -> tuple[Tensor, Tensor, Tensor]:
        """Images + prompt -> (embs (B, Lp, Wvlm), pad_masks (B, Lp) bool, ar_masks (B, Lp) int)."""
        B, N = inputs.image_masks.shape
        img = self.embed_images(inputs.images)
        T = img.shape[1] // N
        tok = self.vlm.embed_tokens(inputs.tokens)
        tok = tok * torch.tensor(math.sqrt(tok.shape[-1]), dtype=tok.dtype)
        embs = torch.cat((img, tok.to(img.dtype)), dim=1)
        img_pad = inputs.image_masks[:, :, None].expand(B, N, T).reshape(B, N * T)
        pad = torch.cat((img_pad, inputs.token_masks.bool()), dim=1)
        ar = torch.zeros_like(pad, dtype=torch.long)
        return embs, pad, ar

    def embed_state(self, state: Tensor) -> Tensor:
        """(B, action_dim) -> (B, S, expert width): π0's one state token; π0.5 has none (S = 0)."""
        if self.config.is_pi05:
            return state.new_zeros(state.shape[0], 0, self.config.expert.width, dtype=torch.float32)
        return self.state_proj(state.float())[:, None, :]

    def embed_actions(self, noisy_actions: Tensor, time_emb: Tensor) -> tuple[Tensor, Tensor | None]:
        """x_t (B, H, D) and sinusoidal time embedding (B, We) -> (action tokens (B, H, We) float32,
        adaRMS conditioning (B, We) float32 for π0.5's expert, None for π0)."""
        a = self.action_in_proj(noisy_actions.float())
        if self.config.is_pi05:
            # π0.5: time reaches the expert only through its norms (openpi time_mlp, swish twice)
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb.float()))))
            return a, cond
        t = time_emb[:, None, :].expand_as(a)
        h = self.action_time_mlp_in(torch.cat((a, t), dim=2))
        return self.action_time_mlp_out(F.silu(h)), None

    def embed_suffix(
        self, state: Tensor, noisy_actions: Tensor, time: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """State + noisy actions at time t -> (embs (B, S+H, We), pad (B, S+H), ar (B, S+H),
        expert conditioning (B, We) or None); S = config.num_state_tokens (π0 1, π0.5 0)."""
        B, H, _ = noisy_actions.shape
        time_emb = sinusoidal_time_embedding(time, self.config.expert.width)
        action_embs, cond = self.embed_actions(noisy_actions, time_emb)
        embs = torch.cat((self.embed_state(state), action_embs), dim=1)
        S = embs.shape[1] - H
        pad = torch.ones(B, S + H, dtype=torch.bool, device=embs.device)
        ar = torch.zeros(B, S + H, dtype=torch.long, device=embs.device)
        ar[:, 0] = 1  # π0: the state starts block 2 ...
        ar[:, S] = 1  # ... and the first action block 3 (π0.5: the actions are block 2)
        return embs, pad, ar, cond

    # ------------------------------------------------------------------ transformer

    def forward_experts(
        self,
        prefix_embs: Tensor | None,
        suffix_embs: Tensor | None,
        mask: Tensor,
        positions: Tensor,
        past_kv: KVCache | None = None,
        use_cache: bool = False,
        outputs: tuple[bool, bool] = (True, True),
        expert_cond: Tensor | None = None,
    ) -> tuple[tuple[Tensor | None, Tensor | None], KVCache | None]:
        """The mixture of the VLM (prefix tokens) and the action expert (suffix tokens).

        mask: (B, Lq, Lpast + Lq) bool over keys [past | prefix | suffix];
        positions: (B, Lq) RoPE positions of the new tokens;
        outputs: which of (prefix_out, suffix_out) to compute (the other comes back None and
        its last-layer attention/MLP work is skipped);
        expert_cond: (B, We) adaRMS conditioning of π0.5's action expert (None for π0).
        Returns ((prefix_out, suffix_out), new (k, v) per layer if use_cache).
        """
        dt = self.compute_dtype
        embeds = [None if x is None else x.to(dt) for x in (prefix_embs, suffix_embs)]
        attn = prepare_attention(mask, positions, self.config.vlm, dtype=dt)
        outs, kv = mixture_forward(
            [self.vlm, self.expert],
            embeds,
            attn,
            past_kv=past_kv,
            use_cache=use_cache,
            output_experts=[i for i in (0, 1) if outputs[i]],
            conds=[None, expert_cond],
            checkpoint_layers=self.gradient_checkpointing,
        )
        return (outs[0], outs[1]), kv

    def predict_velocity(self, suffix_out: Tensor) -> Tensor:
        """Expert outputs -> velocity (B, H, action_dim) float32 from the last H positions."""
        return self.action_out_proj(suffix_out[:, -self.config.chunk_size :].float())

    # ------------------------------------------------------------------ training

    def sample_time(self, batch_size: int, device: torch.device) -> Tensor:
        """t ~ Beta(1.5, 1) * 0.999 + 0.001 (openpi)."""
        beta = torch.distributions.Beta(
            torch.tensor(1.5, device=device), torch.tensor(1.0, device=device)
        ).sample((batch_size,))
        return (beta * 0.999 + 0.001).float()

    def velocity_uncached(self, inputs: ModelInputs, x_t: Tensor, time: Tensor) -> Tensor:
        """One full forward (prefix + suffix together): v(x_t, t) (B, H, D)."""
        prefix_embs, prefix_pad, prefix_ar = self.embed_prefix(inputs)
        suffix_embs, suffix_pad, suffix_ar, cond = self.embed_suffix(inputs.state, x_t, time)
        pad = torch.cat((prefix_pad, suffix_pad), dim=1)
        ar = torch.cat((prefix_ar, suffix_ar), dim=1)
        mask = make_attention_mask(pad, ar)
        positions = torch.cumsum(pad.long(), dim=1) - 1
        (_, suffix_out), _ = self.forward_experts(
            prefix_embs, suffix_embs, mask, positions, outputs=(False, True), expert_cond=cond
        )
        return self.predict_velocity(suffix_out)

    def loss(
        self, inputs: ModelInputs, actions: Tensor, noise: Tensor | None = None, time: Tensor | None = None
    ) -> Tensor:
        """Flow-matching loss per element (B, H, D): (v(x_t, t) - (noise - actions))^2."""
        inputs.validate(self.config)
        B, H, D = actions.shape
        if (H, D) != (self.config.chunk_size, self.config.action_dim):
            raise ValueError(
                f"actions must be (B, {self.config.chunk_size}, {self.config.action_dim}), got {tuple(actions.shape)}"
            )
        actions = actions.float()
        if noise is None:
            noise = torch.randn_like(actions)
        elif noise.shape != actions.shape:
            raise ValueError(f"noise must have the actions' shape {tuple(actions.shape)}, got {tuple(noise.shape)}")
        if time is None:
            time = self.sample_time(B, actions.device)
        elif time.shape != (B,):
            raise ValueError(f"time must be ({B},), got {tuple(time.shape)}")
        t = time.float()[:, None, None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        v_t = self.velocity_uncached(inputs, x_t, time.float())
        return F.mse_loss(v_t, u_t, reduction="none")

    def forward(
        self, inputs: ModelInputs, actions: Tensor, noise: Tensor | None = None, time: Tensor | None = None
    ) -> Tensor:
        """Same as ``loss`` (openpi's forward is the training loss; DDP wraps forward)."""
        return self.loss(inputs, actions, noise=noise, time=time)

    # ------------------------------------------------------------------ inference

    def _sample_noise(self, inputs: ModelInputs, noise: Tensor | None) -> Tensor:
        shape = (inputs.batch_size, self.config.chunk_size, self.config.action_dim)
        if noise is None:
            return torch.randn(shape, dtype=torch.float32, device=inputs.state.device)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {shape}, got {tuple(noise.shape)}")
        return noise.to(device=inputs.state.device, dtype=torch.float32)

    @staticmethod
    def _drop_missing_cameras(inputs: ModelInputs) -> ModelInputs:
        """Skip camera slots missing in the whole batch (their tokens would be masked anyway)."""
        present = inputs.image_masks.any(dim=0)
        if bool(present.all()) or not bool(present.any()):
            return inputs
        keep = present.nonzero().flatten()
        return ModelInputs(
            images=inputs.images[:, keep],
            image_masks=inputs.image_masks[:, keep],
            tokens=inputs.tokens,
            token_masks=inputs.token_masks,
            state=inputs.state,
        )

    def build_prefix_cache(self, inputs: ModelInputs) -> PrefixCache:
        """Run images + prompt once, then π0's state token once; cache their K/V per layer."""
        cfg = self.config
        dt = self.compute_dtype
        prefix_embs, prefix_pad, _ = self.embed_prefix(inputs)  # prefix ar_mask is all 0
        # Drop tokens that are padding in the whole batch (e.g. the prompt padding when B = 1):
        # nobody attends to them and the positions of the others are unchanged.
        keep = prefix_pad.any(dim=0)
        if not bool(keep.all()):
            idx = keep.nonzero().flatten()
            prefix_embs, prefix_pad = prefix_embs[:, idx], prefix_pad[:, idx]
        B, Lp = prefix_pad.shape
        H = cfg.chunk_size
        dev = prefix_embs.device
        # Every query of a pass below sees the same keys, so the masks are key-padding masks
        # (B, 1, Lk) broadcast over queries. Padding queries then attend to the valid keys
        # instead of nothing; their outputs are never read and their keys stay masked.
        # 1. prefix (VLM only), bidirectional among valid prefix tokens (ar_mask is all 0)
        prefix_mask = prefix_pad[:, None, :]
        prefix_pos = torch.cumsum(prefix_pad.long(), dim=1) - 1
        _, prefix_kv = self.forward_experts(
            prefix_embs, None, prefix_mask, prefix_pos, use_cache=True, outputs=(False, False)
        )
        # 2. π0's state token (expert only): sees valid prefix tokens and itself. Its K/V do not
        # depend on t, so it runs once per chunk. π0.5 has no state token (S = 0).
        n_valid = prefix_pad.long().sum(dim=1, keepdim=True)  # (B, 1)
        state_embs = self.embed_state(inputs.state)  # (B, S, We)
        S = state_embs.shape[1]
        if S:
            ones = torch.ones(B, S, dtype=torch.bool, device=dev)
            state_mask = torch.cat((prefix_pad, ones), dim=1)[:, None, :]  # (B, 1, Lp+S)
            _, state_kv = self.forward_experts(
                None,
                state_embs,
                state_mask,
                n_valid + torch.arange(S, device=dev)[None, :],
                past_kv=prefix_kv,
                use_cache=True,
                outputs=(False, False),
            )
        else:
            state_kv = [(pk[:, :, :0], pv[:, :, :0]) for pk, pv in prefix_kv]
        # 3. buffers [prefix | state | H action slots]; actions see everything valid
        kv = []
        for (pk, pv), (sk, sv) in zip(prefix_kv, state_kv):
            tail = pk.new_zeros(B, pk.shape[1], H, pk.shape[3])
            kv.append((torch.cat((pk, sk, tail), dim=2), torch.cat((pv, sv, tail), dim=2)))
        action_mask = torch.cat((prefix_pad, torch.ones(B, S + H, dtype=torch.bool, device=dev)), dim=1)[:, None, :]
        action_pos = n_valid + S + torch.arange(H, device=dev)[None, :]
        attn = prepare_attention(action_mask, action_pos, cfg.expert, dtype=dt)
        return PrefixCache(kv=kv, attn=attn)

    def _denoise_step(self, cache: PrefixCache, x_t: Tensor, time_emb: Tensor) -> Tensor:
        """v(x_t, t) for the H action tokens only, attending to the cached prefix/state K/V."""
        tokens, cond = self.embed_actions(x_t, time_emb)
        outs, _ = mixture_forward(
            [self.vlm, self.expert],
            [None, tokens.to(self.compute_dtype)],
            cache.attn,
            past_kv=cache.kv,
            write_kv_tail=True,
            conds=[None, cond],
        )
        return self.action_out_proj(outs[1].float())

    def _step_fn(self):
        if not self.config.compile_sampler:
            return self._denoise_step
        if self._compiled_step is None:
            self._compiled_step = torch.compile(self._denoise_step, dynamic=False)
        return self._compiled_step

    @torch.no_grad()
    def sample_actions(self, inputs: ModelInputs, noise: Tensor | None = None, num_steps: int = 10,
                       guide: Tensor | None = None, guide_weights: Tensor | None = None) -> Tensor:
        """Denoise an action chunk (B, H, action_dim), float32 (normalised action space).

        guide: (B, H, action_dim) actions the chunk should continue (the previous chunk's
        remaining actions, realigned to this chunk's timeline), with guide_weights (B, H) or (H,)
        in [0, 1] (1 = keep the guide's action, 0 = free). Inpainting, as in real-time chunking
        (Black et al., 2025) without its guidance gradient: before every Euler step the noisy
        chunk is pulled towards the guide noised to the same time, x <- x + w (t e + (1 - t) g - x),
        so the free actions are denoised in the context of the guided ones; the result is
        blended once more at t = 0. Without a guide this is exactly openpi's sampler."""
        inputs.validate(self.config)
        x_t = self._sample_noise(inputs, noise)
        if guide is not None:
            eps = x_t.clone()
            guide, w = self._check_guide(guide, guide_weights, x_t)
        cache = self.build_prefix_cache(self._drop_missing_cameras(inputs))
        times = torch.tensor(euler_times(num_steps), dtype=torch.float32, device=x_t.device)
        time_embs = sinusoidal_time_embedding(times, self.config.expert.width)  # (S, We)
        B = x_t.shape[0]
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=x_t.device)
        step = self._step_fn()
        for k in range(len(times)):
            if guide is not None:
                t = times[k]
                x_t = x_t + w * (t * eps + (1 - t) * guide - x_t)
            v_t = step(cache, x_t, time_embs[k : k + 1].expand(B, -1))
            x_t = x_t + dt * v_t
        if guide is not None:
            x_t = x_t + w * (guide - x_t)
        return x_t

    def _check_guide(self, guide: Tensor, weights: Tensor | None, x_t: Tensor) -> tuple[Tensor, Tensor]:
        """-> guide (B, H, D) float32 and weights (B, H, 1) on x_t's device."""
        if tuple(guide.shape) != tuple(x_t.shape):
            raise ValueError(f"guide must be {tuple(x_t.shape)}, got {tuple(guide.shape)}")
        if weights is None:
            raise ValueError("a guide needs guide_weights (H,) or (B, H)")
        w = weights.to(device=x_t.device, dtype=torch.float32)
        if w.ndim == 1:
            w = w[None].expand(x_t.shape[0], -1)
        if tuple(w.shape) != tuple(x_t.shape[:2]):
            raise ValueError(f"guide_weights must be ({x_t.shape[1]},) or {tuple(x_t.shape[:2])}, got {tuple(w.shape)}")
        if not bool(torch.isfinite(guide).all()) or bool((w < 0).any()) or bool((w > 1).any()):
            raise ValueError("guide must be finite and guide_weights within [0, 1]")
        return guide.to(device=x_t.device, dtype=torch.float32), w[..., None]

    @torch.no_grad()
    def sample_actions_reference(
        self, inputs: ModelInputs, noise: Tensor | None = None, num_steps: int = 10
    ) -> Tensor:
        """Uncached sampler: reruns the whole prefix + suffix every step (tests, debugging)."""
        x_t = self._sample_noise(inputs, noise)
        B = x_t.shape[0]
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=x_t.device)
        for t in euler_times(num_steps):
            time = torch.full((B,), t, dtype=torch.float32, device=x_t.device)
            x_t = x_t + dt * self.velocity_uncached(inputs, x_t, time)
        return x_t
