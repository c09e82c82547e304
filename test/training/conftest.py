"""Shared fixtures of the training tests: two small bag2dataset datasets of the UR5e."""
from __future__ import annotations

import pytest

from pi0_ros.training.train import TrainConfig


@pytest.fixture(scope="session")
def train_datasets(tmp_path_factory) -> list[str]:
    from pi0_ros.data.bag2dataset import convert
    from pi0_ros.data.synthetic import write_synthetic_bag

    root = tmp_path_factory.mktemp("train_data_shared")
    write_synthetic_bag(root / "bags_a" / "ep0", "ur5e", duration=3.0, seed=0, prompt="pick up the red cube")
    write_synthetic_bag(root / "bags_b" / "ep0", "ur5e", duration=2.0, seed=2, prompt="stack the blue block")
    convert([root / "bags_a"], "ur5e", root / "ds_a", progress=False)
    convert([root / "bags_b"], "ur5e", root / "ds_b", progress=False)
    return [str(root / "ds_a"), str(root / "ds_b")]


def tiny_train_cfg(datasets: list[str], out, **kw) -> TrainConfig:
    """The tiny preset, 2 cameras, 4-step chunks: a few seconds per run on one CPU core."""
    base = dict(datasets=datasets, out=str(out), preset="tiny", steps=3, batch_size=4, lr=1e-3, warmup=1,
                chunk_size=4, num_cameras=2, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_cfg():
    """tiny_train_cfg, for test modules (which cannot import conftest)."""
    return tiny_train_cfg
