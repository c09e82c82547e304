"""Gemma decoder stacks and the pi0 mixture of two experts sharing one attention.

Each layer runs every token through ITS expert's input RMSNorm and Q/K/V projections; the
queries, keys and values of all experts are concatenated along the sequence and go through
ONE softmax; the output is split back per expert for its o_proj, post-attention RMSNorm and
GeGLU MLP. Module names follow transformers' GemmaModel (``layers.{i}.self_attn.q_proj``...).

π0.5's action expert is the same stack with adaptive norms (``cond_dim`` set): every RMSNorm
(input, post-attention, final) becomes an ``AdaRMSNorm`` conditioned on the time embedding,
and each residual branch is multiplied by the gate that norm predicts (openpi
``_gated_residual``). The VLM never has them, so π0 and π0.5 share everything else here.

Attention layout: multi-query/grouped heads are folded into the query length, so that a
single SDPA call with KV heads as the "head" axis does the work without repeating K/V:
q (B, L, KVH*g, D) -> (B, KVH, L*g, D); with KVH = 1 (Gemma 2B) this is a free view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .config import GemmaConfig
from .layers import AdaRMSNorm, Linear, RMSNorm, gelu_tanh

KVCache = list[tuple[Tensor, Tensor]]  # per layer (k, v), each (B, KVH, L, D), RoPE applied


class GemmaAttention(nn.Module):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.q_proj = Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)


class GemmaMLP(nn.Module):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.up_proj = Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.down_proj = Linear(cfg.mlp_dim, cfg.width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))


def make_norm(cfg: GemmaConfig, cond_dim: int | None) -> RMSNorm | AdaRMSNorm:
    """Gemma's RMSNorm, or π0.5's adaptive one when the stack is time-conditioned."""
    if cond_dim is None:
        return RMSNorm(cfg.width, eps=cfg.rms_norm_eps)
    return AdaRMSNorm(cfg.width, cond_dim, eps=cfg.rms_norm_eps)


def apply_norm(norm: RMSNorm | AdaRMSNorm, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """-> (normalised x, residual gate or None). A conditioned norm needs its cond."""
    if isinstance(norm, AdaRMSNorm):
        if cond is None:
            raise ValueError("this stack has adaptive (adaRMS) norms: pass its conditioning (time embedding)")
        return norm(x, cond)
    return norm(x), None


def gated_residual(x: Tensor, y: Tensor, gate: Tensor | None) -> Tensor:
    """x + y (Gemma), or x + y * gate (π0.5's adaRMS stacks); y cast to x's dtype."""
    y = y.to(x.dtype)
    return x + y if gate is None else x + y * gate.to(x.dtype)


class GemmaDecoderLayer(nn.Module):
    def __init__(self, cfg: GemmaConfig, cond_dim: int | None = None):
        super().__init__()
        self.input_layernorm = make_norm(cfg, cond_dim)
        self.self_attn = GemmaAttention(cfg)
        self.post_attention_layernorm = make_norm(cfg, cond_dim)
        self.mlp = GemmaMLP(cfg)


class GemmaStack(nn.Module):
    """Decoder layers + final norm (+ optional token embedding): transformers' ``GemmaModel``.

    cond_dim: width of the adaRMS conditioning (π0.5's action expert); None = plain Gemma.
    """

    def __init__(self, cfg: GemmaConfig, vocab_size: int | None = None, cond_dim: int | None = None):
        super().__init__()
        self.config = cfg
        self.cond_dim = cond_dim
        self.embed_tokens = nn.Embedding(vocab_size, cfg.width) if vocab_size else None
        self.layers = nn.ModuleList(GemmaDecoderLayer(cfg, cond_dim) for _ in range(cfg.depth))
        self.norm = make_norm(cfg, cond_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].self_attn.q_proj.weight.dtype

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        positions: Tensor,
        past_kv: KVCache | None = None,
        use_cache: bool = False,
        cond: Tensor | None = None,
    ) -> tuple[Tensor, KVCache | None]:
        """Run this stack alone. x (B, L, W) already scaled; mask (B, L, Lpast+L) bool;
        cond (B, cond_dim) for an adaRMS stack."""
        attn = prepare_attention(mask, positions, self.config, dtype=self.dtype)
        (out,), kv = mixture_forward([self], [x], attn, past_kv=past_kv, use_cache=use_cache, conds=[cond])
        return out, kv


# --------------------------------------------------------------------------- attention helpers


def rope_cos_sin(positions: Tensor, head_dim: int, max_wavelength: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """positions (B, L) int -> cos, sin (B, L, 1, head_dim) float32 (rotate-half layout)."""
    inv_freq = 1.0 / (
        max_wavelength ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # (B, L, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, L, n, D) rotated by cos/sin (B, L, 1, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


@dataclass
class AttentionInputs:
    """Everything a layer needs besides the hidden states; built once per forward / per chunk."""

    mask: Tensor | None  # (B, 1, Lq*g, Lk) additive float (0 / -inf), heads folded into Lq; None = no mask
    cos: Tensor  # (B, Lq, 1, D) in the compute dtype
    sin: Tensor


def sdpa_mask(mask: Tensor, group: int, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """(B, Lq, Lk) bool "may attend" -> additive (B, 1, Lq*group, Lk) for the folded-head layout.

    A (B, 1, Lk) mask (the same keys for every query, e.g. key padding) stays (B, 1, 1, Lk)
    and is broadcast by SDPA: no per-query mask is materialised. Such a mask with every key
    allowed becomes None (SDPA without a mask is faster).

    Converted to an additive float mask once here (SDPA would redo the bool -> float
    conversion on every call, i.e. every layer of every denoising step).

    Rows with no allowed key (padding queries) are opened to every key, which reproduces the
    uniform softmax of openpi's additive -2.4e38 mask and keeps SDPA from returning NaN
    (a NaN value row would poison later layers even where its weight is zero).
    """
    if mask.dtype != torch.bool or mask.ndim != 3:
        raise ValueError(f"attention mask must be bool (B, Lq, Lk), got {mask.dtype} {tuple(mask.shape)}")
    B, Lq, Lk = mask.shape
    if Lq == 1 and bool(mask.all()):
        return None
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    if group == 1 or Lq == 1:
        return bias[:, None]
    return bias[:, :, None, :].expand(B, Lq, group, Lk).reshape(B, 1, Lq * group, Lk)


def prepare_attention(mask: Tensor, positions: Tensor, cfg: GemmaConfig, dtype: torch.dtype) -> AttentionInputs:
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_max_wavelength)
    return AttentionInputs(
        mask=sdpa_mask(mask, cfg.num_heads // cfg.num_kv_heads, dtype), cos=cos.to(dtype), sin=sin.to(dtype)
    )


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """q (B, Lq, H, D); k, v (B, KVH, Lk, D); mask (B, 1, Lq*g, Lk) -> (B, Lq, H*D)."""
    B, Lq, H, D = q.shape
    KVH = k.shape[1]
    g = H // KVH
    q = q.view(B, Lq, KVH, g, D).permute(0, 2, 1, 3, 4).reshape(B, KVH, Lq * g, D)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, KVH, Lq*g, D)
    return y.view(B, KVH, Lq, g, D).permute(0, 2, 1, 3, 4).reshape(B, Lq, H * D)


# --------------------------------------------------------------------------- mixture of experts


def mixture_forward(
    stacks: Sequence[GemmaStack],
    embeds: Sequence[Tensor | None],
    attn: AttentionInputs,
    past_kv: KVCache | None = None,
    use_cache: bool = False,
    write_kv_tail: bool = False,
    output_experts: Sequence[int] | None = None,
    conds: Sequence[Tensor | None] | None = None,
    checkpoint_layers: bool = False,
) -> tuple[list[Tensor | None], KVCache | None]:
    """Run the experts' stacks jointly, sharing one attention per layer.

    stacks:  the experts, e.g. [vlm, action_expert]
    embeds:  per expert (B, L_i, W_i) or None (expert absent); queries are their concatenation
    attn:    mask (keys = past + new tokens; (B, 1, Lk) masks broadcast over queries),
             RoPE tables for the new tokens
    past_kv: cached keys/values to attend to (they precede the new tokens)
    write_kv_tail: past_kv entries are preallocated buffers whose last L positions are
             overwritten in place with the new keys/values (no concatenation per call)
    use_cache: return the new tokens' (k, v) per layer
    output_experts: experts whose outputs are wanted (default: all present). The last layer
             only computes queries, attention, MLP and final norm for these; with none (a
             prefix-only KV-cache pass) it stops after the last layer's keys/values.
    conds:   per expert, the (B, cond_dim) adaRMS conditioning of an adaptive stack (π0.5's
             action expert: the time embedding after its MLP), else None
    checkpoint_layers: activation (gradient) checkpointing per layer while autograd records
    Returns the per-expert outputs after their final norm (None where not computed), and
    the new (k, v) if use_cache.
    """
    active = [i for i, e in enumerate(embeds) if e is not None]
    if not active:
        raise ValueError("mixture_forward needs at least one expert input")
    xs: list[Tensor | None] = list(embeds)
    lengths = [xs[i].shape[1] for i in active]
    cfg = stacks[active[0]].config
    wanted = active if output_experts is None else [i for i in active if i in output_experts]
    if wanted and wanted != active[active.index(wanted[0]) : active.index(wanted[0]) + len(wanted)]:
        raise NotImplementedError(f"output_experts must be contiguous among present experts, got {wanted}")
    offsets = dict(zip(active, [sum(lengths[:j]) for j in range(len(active))]))
    conds = list(conds) if conds is not None else [None] * len(stacks)
    new_kv: KVCache = []
    for li in range(cfg.depth):
        last = li == cfg.depth - 1
        q_experts = wanted if last else active
        args = (stacks, xs, attn, li, active, q_experts, offsets, conds, past_kv, write_kv_tail)
        if checkpoint_layers and torch.is_grad_enabled():
            # Keep only each layer's inputs for backward and recompute the layer in backward:
            # activation memory per layer drops from its intermediates (MLP width x tokens) to
            # its residual stream. Non-reentrant, so frozen weights and non-tensor args work.
            xs, kv = torch.utils.checkpoint.checkpoint(_mixture_layer, *args, use_reentrant=False)
        else:
            xs, kv = _mixture_layer(*args)
        if use_cache:
            new_kv.append(kv)
        if not q_experts:
            break  # nothing reads this layer's attention output
    # the final norm's gate has no residual to scale (openpi discards it)
    outs = [apply_norm(stacks[i].norm, xs[i], conds[i])[0] if i in wanted else None for i in range(len(xs))]
    return outs, (new_kv if use_cache else None)


def _mixture_layer(
    stacks: Sequence[GemmaStack],
    xs: list[Tensor | None],
    attn: AttentionInputs,
    li: int,
    active: list[int],
    q_experts: list[int],
    offsets: dict[int, int],
    conds: list[Tensor | None],
    past_kv: KVCache | None,
    write_kv_tail: bool,
) -> tuple[list[Tensor | None], tuple[Tensor, Tensor]]:
    """Layer ``li`` of the mixture: -> (per-expert hidden states after it, this layer's new (k, v)).

    Experts not in ``q_experts`` only contribute keys/values (their state is returned unchanged)."""
    cfg = stacks[active[0]].config
    H, KVH, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    xs = list(xs)
    qs, ks, vs = [], [], []
    gates: dict[int, Tensor | None] = {}
    for i in active:
        layer = stacks[i].layers[li]
        h, gates[i] = apply_norm(layer.input_layernorm, xs[i], conds[i])
        B, L, _ = h.shape
        if i in q_experts:
            qs.append(layer.self_attn.q_proj(h).view(B, L, H, D))
        ks.append(layer.self_attn.k_proj(h).view(B, L, KVH, D))
        vs.append(layer.self_attn.v_proj(h).view(B, L, KVH, D))
    k = torch.cat(ks, dim=1) if len(ks) > 1 else ks[0]
    v = torch.cat(vs, dim=1) if len(vs) > 1 else vs[0]
    dtype = k.dtype
    k = apply_rope(k, attn.cos, attn.sin).to(dtype).transpose(1, 2)  # (B, KVH, L, D)
    v = v.transpose(1, 2)
    new_kv = (k, v)
    if not q_experts:
        return xs, new_kv
    q = torch.cat(qs, dim=1) if len(qs) > 1 else qs[0]
    if q_experts == active:
        cos, sin, mask = attn.cos, attn.sin, attn.mask
    else:  # a contiguous subset of the query rows (two experts at most)
        start, n = offsets[q_experts[0]], q.shape[1]
        g = H // KVH
        cos, sin = attn.cos[:, start : start + n], attn.sin[:, start : start + n]
        mask = attn.mask
        if mask is not None and mask.shape[2] != 1:
            mask = mask[:, :, start * g : (start + n) * g]
    q = apply_rope(q, cos, sin).to(dtype)
    if past_kv is not None:
        pk, pv = past_kv[li]
        if write_kv_tail:
            n = k.shape[2]
            pk[:, :, -n:].copy_(k)
            pv[:, :, -n:].copy_(v)
            k, v = pk, pv
        else:
            k = torch.cat((pk, k), dim=2)
            v = torch.cat((pv, v), dim=2)
    y = grouped_attention(q, k, v, mask)  # (B, Lq, H*D)
    start = 0
    for i in q_experts:
        layer = stacks[i].layers[li]
        n = xs[i].shape[1]
        yi = y[:, start : start + n] if len(q_experts) > 1 else y
        start += n
        x = gated_residual(xs[i], layer.self_attn.o_proj(yi), gates[i])
        h, gate = apply_norm(layer.post_attention_layernorm, x, conds[i])
        xs[i] = gated_residual(x, layer.mlp(h), gate)
    return xs, new_kv
