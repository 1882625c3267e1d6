"""Small shared helpers: threads, seeds, JSON lines, config access."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


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
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a killed job never leaves a half-written file behind


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
