"""Configuration of the pi0 / pi0.5 networks: frozen dataclasses, validation and named presets.

One config class serves both families (``family``: "pi0" or "pi05"): π0.5 has the same
backbone, expert geometry, attention and sampler, and differs only in the action expert's
time conditioning, the state's route (prompt text instead of a suffix token) and defaults
(prompt budget 200, quantile normalisation). A checkpoint's config.json carries the family.

Numbers follow docs/pi0-facts.md (openpi's conventions; openpi calls ``chunk_size``
``action_horizon`` and ``action_dim`` is its padded ``max_action_dim``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

CAMERA_NAMES: tuple[str, ...] = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
FAMILIES: tuple[str, ...] = ("pi0", "pi05")
# openpi Pi0Config: max_token_len = 200 if pi05 else 48 (the state text needs the room).
DEFAULT_MAX_TOKEN_LEN: dict[str, int] = {"pi0": 48, "pi05": 200}
# openpi's π0 configs normalise with z-scores, its π0.5 configs with quantiles (q01/q99 -> ±1).
DEFAULT_NORM_MODE: dict[str, str] = {"pi0": "zscore", "pi05": "quantile"}


def _check_positive(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{owner}.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma-style decoder stack (the VLM backbone or the action expert)."""

    width: int  # residual stream width ("hidden_size")
    depth: int  # number of decoder layers
    mlp_dim: int  # GeGLU hidden width ("intermediate_size")
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (1 = multi-query, as in Gemma 2B)
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_max_wavelength: float = 10_000.0

    def __post_init__(self) -> None:
        _check_positive(
            "GemmaConfig",
            width=self.width,
            depth=self.depth,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            rope_max_wavelength=self.rope_max_wavelength,
        )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"GemmaConfig.num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"GemmaConfig.head_dim must be even for RoPE, got {self.head_dim}")


@dataclass(frozen=True)
class SiglipConfig:
    """The SigLIP vision tower (no pooling head)."""

    width: int  # "hidden_size"
    depth: int
    mlp_dim: int  # "intermediate_size"
    num_heads: int
    patch_size: int
    image_size: int = 224
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_positive(
            "SiglipConfig",
            width=self.width,
            depth=self.depth,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            patch_size=self.patch_size,
            image_size=self.image_size,
            layer_norm_eps=self.layer_norm_eps,
        )
        if self.width % self.num_heads:
            raise ValueError(
                f"SiglipConfig.width ({self.width}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"SiglipConfig.image_size ({self.image_size}) must be divisible by "
                f"patch_size ({self.patch_size})"
            )

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class PI0Config:
    """The whole pi0 (family "pi0") or pi0.5 (family "pi05") network."""

    vision: SiglipConfig
    vlm: GemmaConfig  # PaliGemma's language model ("paligemma_variant" in openpi)
    expert: GemmaConfig  # the action expert ("action_expert_variant")
    vocab_size: int
    action_dim: int  # padded state/action dim (openpi/LeRobot "max_action_dim", 32)
    chunk_size: int = 50  # H, actions per chunk (openpi "action_horizon")
    max_token_len: int = 48  # prompt tokens (LeRobot "tokenizer_max_length")
    num_cameras: int = 3  # image slots, in CAMERA_NAMES order
    dtype: str = "float32"  # dtype of the big matrices; "bfloat16" for GPU / full
    compile_sampler: bool = False  # torch.compile the per-step denoiser (GPU)
    family: str = "pi0"  # "pi0" | "pi05" (openpi Pi0Config.pi05; LeRobot policy type)

    def __post_init__(self) -> None:
        for name, kind in (("vision", SiglipConfig), ("vlm", GemmaConfig), ("expert", GemmaConfig)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"PI0Config.{name} must be a {kind.__name__}, got {type(getattr(self, name))}")
        _check_positive(
            "PI0Config",
            vocab_size=self.vocab_size,
            action_dim=self.action_dim,
            chunk_size=self.chunk_size,
            max_token_len=self.max_token_len,
            num_cameras=self.num_cameras,
        )
        # The two experts share one attention softmax per layer, so the attention geometry
        # (layers, heads, kv heads, head dim) must be identical.
        for field in ("depth", "num_heads", "num_kv_heads", "head_dim"):
            v, e = getattr(self.vlm, field), getattr(self.expert, field)
            if v != e:
                raise ValueError(
                    f"expert.{field} ({e}) must equal vlm.{field} ({v}): the VLM and the action "
                    "expert share attention in every layer"
                )
        if self.vlm.rope_max_wavelength != self.expert.rope_max_wavelength:
            raise ValueError("vlm and expert must use the same rope_max_wavelength")
        if self.num_cameras > len(CAMERA_NAMES):
            raise ValueError(f"num_cameras must be <= {len(CAMERA_NAMES)}, got {self.num_cameras}")
        if self.dtype not in DTYPES:
            raise ValueError(f"PI0Config.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"PI0Config.family must be one of {FAMILIES}, got {self.family!r}")

    @property
    def is_pi05(self) -> bool:
        return self.family == "pi05"

    @property
    def num_state_tokens(self) -> int:
        """Suffix tokens before the actions: π0's state token; π0.5 writes the state in the prompt."""
        return 0 if self.is_pi05 else 1

    @property
    def default_norm_mode(self) -> str:
        return DEFAULT_NORM_MODE[self.family]

    @property
    def camera_names(self) -> tuple[str, ...]:
        return CAMERA_NAMES[: self.num_cameras]

    @property
    def max_prefix_len(self) -> int:
        return self.num_cameras * self.vision.tokens_per_image + self.max_token_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PI0Config:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PI0Config fields: {unknown}")
        for name, kind in (("vision", SiglipConfig), ("vlm", GemmaConfig), ("expert", GemmaConfig)):
            if name not in d:
                raise ValueError(f"PI0Config dict lacks {name!r}")
            if isinstance(d[name], dict):
                d[name] = kind(**d[name])
        return cls(**d)

    def replace(self, **overrides: Any) -> PI0Config:
        return dataclasses.replace(self, **overrides)


# Gemma variants by openpi's names (openpi/models/gemma.py get_config). LoRA variants share shapes.
GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "gemma_2b": GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_300m": GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    "dummy": GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
}
GEMMA_VARIANTS["gemma_2b_lora"] = GEMMA_VARIANTS["gemma_2b"]
GEMMA_VARIANTS["gemma_300m_lora"] = GEMMA_VARIANTS["gemma_300m"]

SIGLIP_SO400M_14 = SiglipConfig(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14, image_size=224)
PALIGEMMA_VOCAB_SIZE = 257_152

PRESETS: dict[str, PI0Config] = {
    # The real pi0 (PaliGemma 3B + gemma_300m expert), ~3.3B params; loads openpi/LeRobot weights.
    "full": PI0Config(
        vision=SIGLIP_SO400M_14,
        vlm=GEMMA_VARIANTS["gemma_2b"],
        expert=GEMMA_VARIANTS["gemma_300m"],
        vocab_size=PALIGEMMA_VOCAB_SIZE,
        action_dim=32,
        dtype="bfloat16",
    ),
    # Unit tests and CPU latency benchmarks (~0.5M params).
    "tiny": PI0Config(
        vision=SiglipConfig(width=64, depth=2, mlp_dim=256, num_heads=4, patch_size=14),
        vlm=GemmaConfig(width=128, depth=2, mlp_dim=256, num_heads=4, num_kv_heads=1, head_dim=32),
        expert=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=32),
        vocab_size=1024,
        action_dim=32,
    ),
    # CPU fine-tuning demos (a few M params). vocab 1024: pass vocab_size=257152 to use the
    # full PaliGemma tokenizer ids (adds 257152 x 256 embedding parameters).
    "small": PI0Config(
        vision=SiglipConfig(width=128, depth=4, mlp_dim=512, num_heads=4, patch_size=16),
        vlm=GemmaConfig(width=256, depth=4, mlp_dim=1024, num_heads=4, num_kv_heads=1, head_dim=64),
        expert=GemmaConfig(width=128, depth=4, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=64),
        vocab_size=1024,
        action_dim=32,
    ),
    # The checkpoint `make demo` ships: trained from scratch on simulator demonstrations on a
    # 2-core CPU (README "Fine-tune"). Top camera only, at 112x112 (49 patches): ~2.7M params.
    "sim": PI0Config(
        vision=SiglipConfig(width=96, depth=3, mlp_dim=384, num_heads=4, patch_size=16, image_size=112),
        vlm=GemmaConfig(width=192, depth=3, mlp_dim=768, num_heads=4, num_kv_heads=1, head_dim=48),
        expert=GemmaConfig(width=96, depth=3, mlp_dim=384, num_heads=4, num_kv_heads=1, head_dim=48),
        vocab_size=1024,
        action_dim=32,
        num_cameras=1,
        max_token_len=16,  # the task prompts are ~7 tokens; 48 would cost 30 % more per step
    ),
}
# π0.5: the same networks with adaRMS time conditioning and the state in a 200-token prompt.
PRESETS["pi05_full"] = dataclasses.replace(PRESETS["full"], family="pi05", max_token_len=DEFAULT_MAX_TOKEN_LEN["pi05"])
PRESETS["pi05_tiny"] = dataclasses.replace(PRESETS["tiny"], family="pi05", max_token_len=DEFAULT_MAX_TOKEN_LEN["pi05"])


def get_preset(name: str, **overrides: Any) -> PI0Config:
    """Return the named preset, with top-level fields replaced by ``overrides``."""
    try:
        config = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown pi0 preset {name!r}; valid presets: {sorted(PRESETS)}") from None
    return dataclasses.replace(config, **overrides) if overrides else config
