"""Small shared helpers: threads, seeds, JSON lines, the registry of named parts, devices."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from spolab import atomic
from spolab.atomic import atomic_path
from spolab.errors import ConfigError


def set_threads() -> int:
    """Use the thread count the scheduler gave this job (never a hard-coded number).

    Snakemake rules export ``OMP_NUM_THREADS={threads}``; ``SPOLAB_THREADS`` wins if set.
    Two 2-thread jobs on 2 cores run ~17x slower than one, so this matters (docs/design.md §8).
    """
    n = int(os.environ.get("SPOLAB_THREADS") or os.environ.get("OMP_NUM_THREADS") or (os.cpu_count() or 1))
    torch.set_num_threads(max(1, n))
    return n


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """One JSON object per line, atomically (spolab.atomic): a killed job or a full disk never leaves
    a half-written file behind, only the previous one or nothing."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def write_json(path: str | Path, obj) -> None:
    """Indented JSON with sorted keys, atomically (spolab.atomic)."""
    atomic.write_json(path, obj)


class Registry(dict):
    """Config names -> the parts they select (losses, estimators, algorithms): a plain dict filled
    by the :meth:`register` decorator. A second part under a taken name raises; looking up an
    unknown name raises :class:`ConfigError` listing the valid ones (``unknown <family> 'x';
    valid: [...]``); ``name in registry`` and iteration are the dict's."""

    def __init__(self, family: str):
        super().__init__()
        self.family = family

    def register(self, name: str):
        def deco(obj):
            self[name] = obj
            return obj

        return deco

    def __setitem__(self, name: str, obj) -> None:
        if name in self:
            raise ValueError(f"{self.family} {name!r} is already registered ({self[name]!r})")
        super().__setitem__(name, obj)

    def __missing__(self, name: str):
        raise ConfigError(f"unknown {self.family} {name!r}; valid: {sorted(self)}")


# ---- devices: the one place that asks whether a device is a GPU


def _cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")  # the values of every entry point's ``device`` key
PRECISIONS = ("fp32", "bf16")  # the values of every entry point's ``precision`` key


def device_name_error(name) -> str | None:
    """Why ``name`` is not a ``device`` value (None when it is one of :data:`DEVICE_NAMES`)."""
    if isinstance(name, str) and (name in ("auto", "cpu", "cuda") or
                                  (name.startswith("cuda:") and name[5:].isdigit())):
        return None
    return f"one of {list(DEVICE_NAMES)}"


def resolve_device(name: str) -> torch.device:
    """``device=auto|cpu|cuda|cuda:N`` -> a torch device: auto is the GPU when there is one.

    Asking for a GPU that is not there is a ConfigError, never a silent CPU run."""
    why = device_name_error(name)
    if why is not None:
        raise ConfigError(f"device={name!r}: must be {why}")
    if name == "auto":
        return default_device()
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: no CUDA device is available to torch {torch.__version__} "
                              f"(torch.cuda.is_available() is False); use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def autocast(device, precision: str):
    """The forward passes' precision: a ``torch.autocast`` context in bf16, a no-op in fp32.

    Weights, gradients and optimiser state stay fp32 (autocast casts the inputs of matmuls and
    convolutions, nothing else); log-probs are taken from fp32 logits (spolab.rollout.sampler casts
    before its log-softmax), and losses and their reductions are computed from those, so only the
    network's forward passes run in bf16. Works on the CPU too (tests run it there).

    The weight-cast cache is off: the entry points hold one context around their whole training loop,
    and autocast's cache keeps the bf16 copy of every weight made at its first use until the context
    exits, so with it on every forward after an optimiser step would still see the weights of
    before the first step (sampling and validation included). Off, each forward casts the current
    weights: one bf16 copy per forward, the price of training inside a long context."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: must be one of {list(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision=bf16: {torch.cuda.get_device_name(device)} does not support bf16; use fp32")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


def generator(device, seed: int) -> torch.Generator:
    """A seeded sampling generator on ``device`` (CUDA sampling needs a CUDA generator; on the CPU
    this is ``torch.Generator().manual_seed(seed)``, so CPU runs draw the same numbers as before)."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters live."""
    return next(model.parameters()).device


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timer reads finished work."""
    if _cuda(device):
        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    if _cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def memory_metrics(device) -> dict[str, float]:
    """``perf/max_memory_allocated_MB`` (``torch.cuda.max_memory_allocated`` since the start or the last
    reset) on a GPU; nothing on the CPU (the Snakemake benchmark files hold its RSS)."""
    return {"perf/max_memory_allocated_MB": peak_memory_mb(device)} if _cuda(device) else {}


def peak_memory_mb(device) -> float:
    """``torch.cuda.max_memory_allocated`` in MiB since the last :func:`reset_peak_memory`; NaN on the CPU."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if _cuda(device) else float("nan")


def device_name(device) -> str:
    """The GPU's name, or the CPU's."""
    return torch.cuda.get_device_name(device) if _cuda(device) else platform.processor() or platform.machine()
