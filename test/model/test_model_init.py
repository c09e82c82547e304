"""Random initialisation: the SigLIP position table starts as a 2-D sincos grid."""
from __future__ import annotations

import pytest
import torch

from pi0_ros.model.config import get_preset
from pi0_ros.model.pi0 import PI0Model
from pi0_ros.model.siglip import sincos_2d


def test_sincos_table_encodes_rows_and_columns() -> None:
    t = sincos_2d(7, 96)
    assert t.shape == (49, 96) and t.abs().max() <= 1.0
    grid = t.reshape(7, 7, 96)
    # Neighbouring patches are more alike than distant ones, along rows and along columns.
    d = lambda a, b: float((a - b).norm())  # noqa: E731
    assert d(grid[3, 3], grid[3, 4]) < d(grid[3, 3], grid[3, 6])
    assert d(grid[3, 3], grid[4, 3]) < d(grid[3, 3], grid[6, 3])
    # The first half of the channels depends on the row only, the second half on the column only.
    assert torch.allclose(grid[2, 0, :48], grid[2, 5, :48]) and torch.allclose(grid[0, 4, 48:], grid[6, 4, 48:])
    with pytest.raises(ValueError):
        sincos_2d(7, 90)


def test_random_init_uses_the_sincos_table_at_the_usual_scale() -> None:
    cfg = get_preset("sim", dtype="float32")
    model = PI0Model(cfg)
    w = model.vision.vision_model.embeddings.position_embedding.weight
    width = cfg.vision.width
    expected = sincos_2d(cfg.vision.image_size // cfg.vision.patch_size, width) * (2.0 / width) ** 0.5
    torch.testing.assert_close(w.detach(), expected)
    assert abs(float(w.std()) - width ** -0.5) < 0.3 * width ** -0.5
