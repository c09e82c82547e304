"""The pi0 network in plain PyTorch (no ROS, no transformers)."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import CAMERA_NAMES, PRESETS, GemmaConfig, PI0Config, SiglipConfig, get_preset
from .inputs import ModelInputs
from .pi0 import PI0Model, count_parameters, make_attention_mask, sinusoidal_time_embedding

__all__ = [
    "CAMERA_NAMES",
    "PRESETS",
    "CheckpointError",
    "GemmaConfig",
    "ModelInputs",
    "PI0Config",
    "PI0Model",
    "SiglipConfig",
    "count_parameters",
    "get_preset",
    "load_checkpoint",
    "make_attention_mask",
    "save_checkpoint",
    "sinusoidal_time_embedding",
]
