"""Small shared helpers: threads, seeds, JSON lines, the registry of named parts, devices."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from spolab.errors import ConfigError


def set_threads() -> int:
    """Use the thread count the scheduler gave this job (never a hard-coded number).

    Snakemake rules export ``OMP_NUM_THREADS={threads}``; ``SPOLAB_THREADS`` wins if set.
    Two 2-thread jobs on 2 cores run ~17x slower than one, so this matters (DESIGN §8).
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        tmp.replace(path)  # atomic: a killed job never leaves a half-written file behind
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves nothing partial


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


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


def peak_memory_mb(device) -> float:
    """``torch.cuda.max_memory_allocated`` in MiB since the last :func:`reset_peak_memory`; NaN on the CPU."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if _cuda(device) else float("nan")


def device_name(device) -> str:
    """The GPU's name, or the CPU's."""
    import platform

    return torch.cuda.get_device_name(device) if _cuda(device) else platform.processor() or platform.machine()
