"""Process groups and model wrapping for one or several training processes.

`torchrun --nproc_per_node N -m framepack train ...` or `accelerate launch -m framepack train
...` set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; `Distributed.from_env()` then joins the
group (NCCL on GPUs, gloo on the CPU). One process needs no group and wraps nothing.

strategy "ddp": `DistributedDataParallel` (weights replicated, gradients all-reduced).
strategy "fsdp": `torch.distributed.fsdp.fully_shard` (FSDP2) on every transformer block and
then the root, for backbones too large to replicate; state dicts are gathered to full tensors
for checkpoints (`torch.distributed.checkpoint.state_dict`).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Join the process group described by the launcher's environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            atexit.register(_leave)  # a group left open can abort the process at exit (gloo)
        rank = dist.get_rank() if world > 1 else 0
        return cls(rank, world, local_rank, device)

    def all_reduce_sum(self, value: Tensor) -> Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def replicas_identical(self, module: nn.Module) -> bool:
        """True when every process holds bit-identical parameters (DDP keeps them so)."""
        if self.world == 1:
            return True
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in module.parameters()])
        digest = torch.stack([flat.sum(), (flat * torch.arange(flat.numel(), dtype=torch.float64)).sum()])
        gathered = [torch.zeros_like(digest) for _ in range(self.world)]
        dist.all_gather(gathered, digest)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def leave(self) -> None:
        """Wait for every process, then leave the group: call once a command's collective work
        and file writes are done, so no process tears the group down while a peer still uses it
        (gloo aborts a process whose peer vanished mid-operation)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, env: Distributed, strategy: str) -> nn.Module:
    """The module the training step calls: `model` itself, DDP or FSDP2 around it."""
    if env.world == 1:
        return model
    if strategy == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        transformer = getattr(model, "transformer", model)
        for name in ("transformer_blocks", "single_transformer_blocks"):
            for block in getattr(transformer, name, ()):
                fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"strategy must be 'ddp' or 'fsdp', got {strategy!r}")
