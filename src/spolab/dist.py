"""Data parallelism across processes: which process this is, and the few collectives a run needs.

A run with ``scale.world_size`` W > 1 is launched by ``torchrun --standalone --nproc_per_node=W -m
spolab.rl ...`` (the Snakemake rules do it, ``workflow/rules/common.smk``): W processes (ranks) run the
same entry point, each on its own device (``cuda:LOCAL_RANK`` with the nccl backend, or the CPU with
gloo). :func:`launch` joins them into one process group for the run's lifetime.

In one process (no process group) every helper here is the identity: :func:`shard` returns the whole
sequence, the reductions return their input, :func:`rank` is 0. Code written with them runs unchanged,
and computes exactly what it computed before, when W is 1.

What data parallelism means in spolab (docs/real_scale.md, "Across GPUs"): every rank holds the same
global batch of B trajectories (each samples its contiguous share of the update's prompts, then the
samples are all-gathered in prompt order); whatever is computed over the whole batch (advantages and
their whitening, group baselines, Q̂0, metric means of the samples) is computed from it on every rank;
the models' passes are split: each rank runs its contiguous share of every (mini)batch, and the
gradients are averaged across ranks (:func:`all_reduce_grads`), each rank's loss weighted by its share
of the (mini)batch's normaliser (:func:`loss_share`), so that one optimiser step equals the one-process
step at batch B up to the order of floating-point sums.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as tdist

from spolab.errors import ConfigError

T = TypeVar("T")

ENTRIES = ("rl", "sft", "q0", "sources", "evaluate")  # the entry points that run across processes; the others refuse torchrun

TIMEOUT_MIN = 120  # minutes a rank waits in a collective (rank 0 writing a checkpoint, a slow validation shard)
BUCKET = 2**25  # gradient elements per all-reduce (128 MiB of fp32): bounds the flattened copy's memory


# ---------------------------------------------------------------------------- who am I


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun's ``WORLD_SIZE``; 1 without a launcher)."""
    return _env_int("WORLD_SIZE", 1)


def initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    """This process's rank: 0 .. world_size() - 1 (torchrun's ``RANK`` before the group exists)."""
    return tdist.get_rank() if initialized() else _env_int("RANK", 0)


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``): the GPU it runs on."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """Processes in the run: the process group's size, else 1."""
    return tdist.get_world_size() if initialized() else 1


def is_main() -> bool:
    """Rank 0, the one process that writes (checkpoints, metrics.jsonl, MLflow, the final model)."""
    return rank() == 0


def rank_seed(seed: int, r: int | None = None) -> int:
    """The seed of rank ``r``'s own random stream (its sampler): ``seed`` itself on rank 0 (so a one-process
    run draws what it always drew), a deterministic function of (seed, rank) on the others."""
    r = rank() if r is None else r
    return seed if r == 0 else int(np.random.SeedSequence([seed, r]).generate_state(1, np.uint64)[0] >> 1)


# ---------------------------------------------------------------------------- the process group


def check_launch(cfg, entry: str, trains: bool = True) -> int:
    """``scale.world_size`` of an entry's config against how it was launched; returns W.

    W > 1 needs torchrun with as many processes; torchrun with another process count, or W processes of a
    config that says 1, is refused. Sharded model state (``scale.sharding: fsdp``) is not implemented: an
    entry that ``trains`` refuses it; one that only samples and scores runs with a whole copy of each model
    on every rank (a warning says so: the memory plan assumed sharded weights)."""
    want = int(cfg.scale.get("world_size") or 1)
    got = launched_world_size()
    if want != got:
        how = (f"launch it with `torchrun --standalone --nproc_per_node={want} -m spolab.{entry} ...` (the Snakemake "
               "rules do)" if want > 1 else f"set scale.world_size={got}, or launch it with `python -m spolab.{entry}`")
        raise ConfigError(f"scale.world_size={want}, but {got} process(es) were launched: {how}")
    if want > 1 and cfg.scale.get("sharding", "none") != "none":
        if trains:
            raise ConfigError(f"scale.sharding={cfg.scale.sharding!r}: sharded model state (FSDP) is not implemented; "
                              f"a run across {want} processes is data-parallel, every process holding every model "
                              "(scale.sharding=none)")
        if rank() == 0:
            logging.getLogger(__name__).warning(
                "scale.sharding=%s is not implemented: each of the %d processes of spolab.%s holds a whole copy of "
                "every model it runs (the memory plan assumed them sharded)", cfg.scale.sharding, want, entry)
    return want


@contextlib.contextmanager
def launch(cfg, entry: str, device: torch.device, trains: bool = True) -> Iterator[torch.device]:
    """Run the body inside the run's process group, on this rank's device; yields it.

    One process (``scale.world_size`` 1, no launcher): no group, ``device`` itself. W processes: gloo on
    the CPU, nccl on GPUs with rank r on ``cuda:LOCAL_RANK`` (``device=cuda:N`` names one GPU for all of
    them and is refused); ranks other than 0 log warnings only. The group is left at the end. ``trains``: see
    :func:`check_launch`."""
    if check_launch(cfg, entry, trains) == 1:
        yield device
        return
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"device={cfg.device!r}: a run across {launched_world_size()} processes puts rank r "
                              "on cuda:LOCAL_RANK; use device=cuda or device=auto")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    tdist.init_process_group(backend, timeout=datetime.timedelta(minutes=TIMEOUT_MIN),
                             **({"device_id": device} if device.type == "cuda" else {}))
    if not is_main():
        logging.getLogger().setLevel(logging.WARNING)  # one copy of every info line: rank 0's
    try:
        yield device
        tdist.barrier()  # no rank leaves while rank 0 still writes the final outputs
    finally:
        tdist.destroy_process_group()


def barrier() -> None:
    if initialized():
        tdist.barrier()


# ---------------------------------------------------------------------------- splitting work


def shard(seq: Sequence[T] | torch.Tensor, even: bool = True):
    """This rank's contiguous share of ``seq`` (a list or a tensor's first dimension), in order; rank r
    of W takes items [r n/W, (r+1) n/W). ``even``: n must divide by W (ValueError otherwise: a loss
    mean over unequal shares is not the batch's mean); else the shares differ by at most one item
    (evaluation, where nothing is averaged per rank)."""
    n, w, r = len(seq), world_size(), rank()
    if w == 1:
        return seq
    if even and n % w:
        raise ValueError(f"{n} items do not split into {w} equal shares (one per process)")
    bounds = np.linspace(0, n, w + 1).round().astype(int) if not even else np.arange(w + 1) * (n // w)
    return seq[int(bounds[r]) : int(bounds[r + 1])]


def loss_share(local, total) -> float:
    """The weight of a loss that is a mean over ``local`` of the (mini)batch's ``total`` units (sequences or
    tokens), computed by this rank (its rows, or one micro-batch of them): W · local / total, so that the
    ranks' weighted gradients, summed over a rank's parts and averaged over ranks (:func:`all_reduce_grads`),
    are the gradient of the mean over the whole (mini)batch. Exactly 1 where the part is an equal share
    (a whole batch in one process; equal shares of sequence means across ranks)."""
    local, total = float(local), float(total)
    w = world_size()
    return 1.0 if local * w == total else w * local / total


# ---------------------------------------------------------------------------- collectives


def all_gather_objects(items: list[T]) -> list[T]:
    """Every rank's ``items`` (picklable), concatenated in rank order: the same list on every rank."""
    if world_size() == 1:
        return items
    parts: list = [None] * world_size()
    tdist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def gather_object(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    return all_gather_objects([obj])


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (one shape on every rank) concatenated along dim 0, in rank order."""
    if world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def map_rows(fn: Callable[[Any], torch.Tensor], batch) -> torch.Tensor:
    """``fn(batch)`` (a constant, row-wise result: a no-grad forward pass) with the rows split across ranks:
    each computes ``fn`` on its :func:`shard` of the batch (``batch.select``), the results are gathered,
    so every rank holds all B rows. One process: ``fn(batch)``."""
    if world_size() == 1:
        return fn(batch)
    with torch.no_grad():
        return all_gather_cat(fn(batch.select(shard(torch.arange(len(batch))))))


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor (a new tensor; ``x`` itself in one process)."""
    if world_size() == 1:
        return x
    y = x.clone()
    tdist.all_reduce(y)
    return y / world_size()


@torch.no_grad()
def all_reduce_grads(params) -> None:
    """Replace every parameter's gradient by its mean over ranks (parameters without one are skipped:
    the same on every rank, the models and losses being the same), in flattened buckets."""
    w = world_size()
    if w == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    i = 0
    while i < len(grads):  # buckets of one dtype and at most BUCKET elements (or one larger gradient)
        j, n = i, 0
        while j < len(grads) and grads[j].dtype == grads[i].dtype and (j == i or n + grads[j].numel() <= BUCKET):
            n += grads[j].numel()
            j += 1
        bucket = grads[i:j]
        flat = torch.cat([g.reshape(-1) for g in bucket])
        tdist.all_reduce(flat)
        flat /= w
        for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
            g.copy_(part.view_as(g))
        i = j
