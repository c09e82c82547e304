"""PyTorch's distributed engines on CPU: DDP and FSDP2 with 2 gloo ranks equal the single-process run,
FSDP2 reads the weights on rank 0 only, and --resume of a two-rank run (and across engines) equals the
uninterrupted run."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pi0_ros.training.train import TrainConfig, train


def _worker(rank: int, world: int, port: int, cfg: TrainConfig, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    s = train(cfg)
    results[rank] = {"digest": s["digest"], "losses": s["losses"], "trainable": s["trainable_parameters"],
                     "start_step": s["start_step"], "end_step": s["end_step"]}


def _worker_counting_loads(rank: int, world: int, port: int, cfg: TrainConfig, results) -> None:
    """_worker, recording the directories this rank's load_checkpoint calls read the full weights of."""
    import pi0_ros.model.checkpoint as checkpoint

    loads: list[str] = []
    load = checkpoint.load_checkpoint

    def spy(directory, *args, **kwargs):
        loads.append(str(directory))
        return load(directory, *args, **kwargs)

    checkpoint.load_checkpoint = spy  # build_model imports it at call time
    _worker(rank, world, port, cfg, results)
    results[rank] = {**results[rank], "loads": loads}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(cfg: TrainConfig, worker=_worker) -> dict[int, dict]:
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(2, _free_port(), cfg, results), nprocs=2, join=True)
        return dict(results)


@pytest.mark.slow
@pytest.mark.parametrize("engine,extra", [("ddp", {}), ("fsdp", {}), ("ddp", {"lora": True}),
                                          ("fsdp", {"grad_checkpoint": True})],
                         ids=["ddp", "fsdp2", "ddp-lora", "fsdp2-grad-checkpoint"])
def test_two_gloo_ranks_equal_the_single_process_run(train_datasets, tiny_cfg, tmp_path, engine, extra):
    from pi0_ros.policy import Policy

    cfg = tiny_cfg(train_datasets, tmp_path / engine, distributed=engine, **extra)
    r = run_two_ranks(cfg)
    single = train(tiny_cfg(train_datasets, tmp_path / "single", **extra))
    # Both ranks end with the same weights, and step by step the same global-batch loss as one process.
    assert r[0]["digest"] == r[1]["digest"] and r[0]["losses"] == r[1]["losses"]
    assert r[0]["trainable"] == single["trainable_parameters"]
    assert r[0]["losses"] == pytest.approx(single["losses"], rel=1e-5)
    # The weights after 3 optimizer steps match (summation order differs across ranks, so not bit-exact).
    name = "adapter_model.safetensors" if extra.get("lora") else "model.safetensors"
    a = load_file(str(tmp_path / engine / "checkpoints" / "step_000003" / name))
    b = load_file(str(tmp_path / "single" / "checkpoints" / "step_000003" / name))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-5, msg=k)
    # A sharded run's checkpoint is a plain policy directory: no conversion step.
    policy = Policy.from_checkpoint(tmp_path / engine / "checkpoints" / "step_000003")
    assert policy.chunk_size == 4


@pytest.mark.slow
def test_fsdp2_init_reads_the_checkpoint_on_rank_0_only(train_datasets, tiny_cfg, tmp_path):
    """--init under FSDP2: rank 1 builds on the meta device and gets its shards from rank 0, and the
    run equals the single-process one from the same checkpoint (rank 1's weights and buffers are right)."""
    init = train(tiny_cfg(train_datasets, tmp_path / "init", steps=1))["checkpoint"]

    def from_init(out, **kw):  # --init: the checkpoint keeps its chunk size and cameras
        return tiny_cfg(train_datasets, tmp_path / out, preset=None, init=init, chunk_size=None, num_cameras=None,
                        **kw)

    r = run_two_ranks(from_init("fsdp", distributed="fsdp"), worker=_worker_counting_loads)
    single = train(from_init("single"))
    assert r[0]["loads"] == [init] and r[1]["loads"] == []
    assert r[0]["digest"] == r[1]["digest"] and r[0]["losses"] == r[1]["losses"]
    assert r[0]["losses"] == pytest.approx(single["losses"], rel=1e-5)
    _same_weights(tmp_path / "fsdp" / "checkpoints" / "step_000003", tmp_path / "single" / "checkpoints" / "step_000003",
                  atol=2e-5)


def test_fsdp_refuses_lora(train_datasets, tiny_cfg, tmp_path, monkeypatch):
    from pi0_ros.training import train as train_mod

    # Two ranks as train() sees them, without starting any: the refusal is about the configuration.

    monkeypatch.setattr(train_mod, "dist_env", lambda: (0, 2, 0))
    monkeypatch.setattr(train_mod.dist, "is_initialized", lambda: True)
    with pytest.raises(ValueError, match="full fine-tuning"):
        train(tiny_cfg(train_datasets, tmp_path / "x", distributed="fsdp", lora=True))


def _same_weights(a_dir, b_dir, atol: float) -> None:
    a = load_file(str(a_dir / "model.safetensors"))
    b = load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def _infers(ckpt) -> None:
    """The checkpoint loads in the policy as it is (no conversion) and produces a finite chunk."""
    from pi0_ros.policy import Policy

    policy = Policy.from_checkpoint(ckpt, "ur5e")
    out = policy.infer(policy.dummy_input("pick up the red cube"), noise=np.zeros((4, 32), dtype=np.float32))
    assert out.actions.shape == (4, 32) and np.isfinite(out.actions).all()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"], ids=["ddp", "fsdp2"])
def test_resume_of_a_two_rank_run_equals_the_uninterrupted_run(train_datasets, tiny_cfg, tmp_path, engine):
    def cfg(out, **kw):
        return tiny_cfg(train_datasets, tmp_path / out, distributed=engine, steps=6, save_every=3, **kw)

    full = run_two_ranks(cfg("full"))
    part = run_two_ranks(cfg("part", stop_after=3))
    assert part[0]["end_step"] == 3 and not (tmp_path / "part" / "checkpoints" / "step_000006").exists()
    rest = run_two_ranks(cfg("part", resume=True))
    assert rest[0]["start_step"] == 3 and rest[0]["end_step"] == 6
    assert rest[0]["digest"] == rest[1]["digest"]
    # Same world size, same reduction order: the resumed steps repeat the uninterrupted ones.
    np.testing.assert_allclose(rest[0]["losses"], full[0]["losses"][3:], rtol=1e-6)
    _same_weights(tmp_path / "full" / "checkpoints" / "step_000006", tmp_path / "part" / "checkpoints" / "step_000006",
                  atol=1e-6)
    _infers(tmp_path / "part" / "checkpoints" / "step_000006")


@pytest.mark.slow
def test_fsdp2_and_single_process_checkpoints_resume_across_engines(train_datasets, tiny_cfg, tmp_path):
    """An FSDP2 run's checkpoint (optimizer state by parameter name) continues in one process, and a
    single-process checkpoint (optimizer state by index) continues under FSDP2."""
    def cfg(out, **kw):
        return tiny_cfg(train_datasets, tmp_path / out, steps=6, save_every=3, **kw)

    full = train(cfg("full"))
    run_two_ranks(cfg("fsdp_then_single", distributed="fsdp", stop_after=3))
    rest = train(cfg("fsdp_then_single", resume=True))
    assert rest["start_step"] == 3
    np.testing.assert_allclose(rest["losses"], full["losses"][3:], rtol=1e-5)
    _same_weights(tmp_path / "full" / "checkpoints" / "step_000006",
                  tmp_path / "fsdp_then_single" / "checkpoints" / "step_000006", atol=2e-5)

    train(cfg("single_then_fsdp", stop_after=3))
    r = run_two_ranks(cfg("single_then_fsdp", distributed="fsdp", resume=True))
    assert r[0]["start_step"] == 3 and r[0]["digest"] == r[1]["digest"]
    np.testing.assert_allclose(r[0]["losses"], full["losses"][3:], rtol=1e-5)
    _same_weights(tmp_path / "full" / "checkpoints" / "step_000006",
                  tmp_path / "single_then_fsdp" / "checkpoints" / "step_000006", atol=2e-5)
