"""Data parallelism across processes with PyTorch's DistributedDataParallel (DDP).

The `paper` profile trains on every GPU of a machine: launched as

    torchrun --nproc_per_node=NUM_GPUS -m minbert_lib.experiments run table2 --profile paper

each process (rank r of W) holds a full copy of the model, takes the same schedule of
steps (same seed, so the same tasks in the same order) and the r-th share of every batch,
`indices[r::W]`. DDP averages the gradients across processes during the backward pass, so
after each optimizer step every copy holds the same weights: one step on a global batch of
B examples, computed W ways. Without WORLD_SIZE > 1 (one GPU or a CPU) nothing changes.

The average of the ranks' mean losses is the mean over the global batch only when every
rank has as many examples; rrobin-full's SST and STS batches of 3 and 2 on 2 ranks do not
split evenly. `shard_weighted` therefore also returns the weight n_r·W/n of rank r's loss
(n_r of the batch's n examples): DDP's average (1/W) Σ_r (n_r·W/n)·∇mean_r = ∇ of the
full-batch mean, for the task loss and for SMART's terms, which are means over the batch too.
A rank left with no example (a batch of 1 on 2 ranks) must still run the forward and
backward passes, because DDP's all-reduce waits for every rank: it takes the batch's first
example with weight 0 and contributes zero gradient.

The MultitaskBert interface that `train.training_step` and SMART use calls `embed` and
`forward_from_embeddings`, not `forward`; DDP only synchronises what runs through its own
`forward`. `DDPMultitask` therefore wraps the model in a small module whose `forward`
dispatches to the stage asked for (`"embed"`, `"head"`, `"forward"`), and offers the
MultitaskBert methods on top, each going through DDP's forward. `find_unused_parameters=True`
because each step trains one task's head and leaves the others without gradients.

Tested with two CPU processes and the gloo backend (tests/test_distributed.py): both ranks
end with identical weights, equal to one process on the whole batches, also for uneven
batches of 3, 2 and 1. Introduced in Chapter 8 (notebooks/08_multitask).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT); with WORLD_SIZE unset or 1, return a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, backend)


def device_for(info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def shard(indices, info: DistInfo):
    """This rank's share of one global batch: indices[rank::world_size]."""
    return tuple(indices)[info.rank::info.world_size] if info.enabled else tuple(indices)


def shard_weighted(indices, info: DistInfo) -> tuple[tuple, float]:
    """This rank's share of one global batch and the weight of its loss, n_rank·W/n_global
    (1.0 in a single process); an empty share is the batch's first example with weight 0."""
    indices = tuple(indices)
    mine = shard(indices, info)
    if not info.enabled:
        return mine, 1.0
    if not mine:  # DDP's backward needs every rank: take part, contribute nothing
        return indices[:1], 0.0
    return mine, len(mine) * info.world_size / len(indices)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _Stages(nn.Module):
    """`forward(stage, *args)`: what DDP calls; routes to the MultitaskBert method."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, stage: str, *args):
        if stage == "embed":
            return self.model.embed(*args)
        if stage == "head":
            return self.model.forward_from_embeddings(*args)
        return self.model(*args)


class DDPMultitask:
    """A MultitaskBert under DistributedDataParallel, with the MultitaskBert interface
    (`embed`, `forward_from_embeddings`, `__call__`, `train`, `eval`, `parameters`) so that
    `train.training_step`, SMART and `evaluate` take it unchanged. `.module` is the model."""

    def __init__(self, model: nn.Module, device_ids=None):
        self.module = model
        self.ddp = DistributedDataParallel(_Stages(model), device_ids=device_ids,
                                           find_unused_parameters=True)

    def embed(self, task, batch):
        return self.ddp("embed", task, batch)

    def forward_from_embeddings(self, task, embeddings, masks):
        return self.ddp("head", task, embeddings, masks)

    def __call__(self, task, batch):
        return self.ddp("forward", task, batch)

    forward = __call__

    def train(self, mode: bool = True):
        self.ddp.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __getattr__(self, name):  # parameters(), modules(), bert, relational, training, ...
        return getattr(self.__dict__["module"], name)


def all_same(model: nn.Module) -> bool:
    """True when every rank holds the same floating-point weights as rank 0."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.state_dict().values()
                      if torch.is_floating_point(p)])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    ok = torch.tensor(int(torch.equal(ref, flat)), device=flat.device)
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok)
