"""Several processes under torchrun: rank/world from the environment, the process group, DDP,
FSDP2 sharding (from rank 0's weights), and gathering a sharded model's full state."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

DISTRIBUTED = ("ddp", "fsdp")


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for one process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def start_process_group(world: int, device: torch.device) -> bool:
    """Join the default process group (nccl on CUDA, gloo on CPU) unless one process runs or the
    caller started it; -> whether this call did (and so must destroy it)."""
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return True
    return False


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel: every rank holds the model; gradients are all-reduced in buckets
    while backward runs."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard_fsdp2(model: torch.nn.Module, world: int, device: torch.device) -> torch.nn.Module:
    """FSDP2 over all ranks: one shard group per module that is called as a module in forward
    (SigLIP layers, each Gemma layer's q/k/v/o projections and MLP, the token embedding), then
    the rest at the root. The mixture layer runs two stacks' layers together, which is why the
    groups are the projections and MLPs rather than whole decoder layers."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    for layer in model.vision.vision_model.encoder.layers:
        fully_shard(layer, mesh=mesh)
    for stack in (model.vlm, model.expert):
        if stack.embed_tokens is not None:
            fully_shard(stack.embed_tokens, mesh=mesh)
        for layer in stack.layers:
            a = layer.self_attn
            for m in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.mlp):
                fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def shard_fsdp2_from_rank0(model: torch.nn.Module, world: int, rank: int, device: torch.device) -> torch.nn.Module:
    """shard_fsdp2 with rank 0's weights: rank 0 holds the model (loaded or drawn), every other rank
    the same architecture on the meta device, so no rank but 0 ever holds the full weights (a 3.3B
    fp32 model is 13 GB). After sharding, the other ranks allocate their (uninitialised) shards and
    ``set_model_state_dict`` broadcasts rank 0's tensors one at a time; each rank keeps its slice.

    A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # Taken before sharding: the dict keeps rank 0's full tensors alive until they are broadcast.
    full = model.state_dict() if rank == 0 else {}
    shard_fsdp2(model, world, device)
    if rank != 0:
        model.to_empty(device=device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    # Non-persistent buffers are not in the state dict, and to_empty left them uninitialised on the
    # meta ranks: rank 0's are the ones its model computed. (PI0Model registers none today: the
    # rotary angles are computed per call.)
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    return model


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, all_ranks: bool = False):
    """(full model state dict, full optimizer state dict or None) of an FSDP2 model, on CPU;
    on rank 0 only (the others get empty dicts) unless all_ranks.

    A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks)
    model_state = get_model_state_dict(model, options=opts)
    optim_state = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
    return model_state, optim_state
