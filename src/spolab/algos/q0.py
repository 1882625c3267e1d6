"""Loading the per-prompt Q̂0 a run trains with, from the reference statistics ``python -m spolab.q0``
records (its estimators are in :mod:`spolab.algos.losses`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from spolab.algos.losses import q0_from_success, q0_monte_carlo
from spolab.errors import ConfigError


def load_q0(path: str | Path, beta: float, kind: str, estimator: str, reward: str = "binary") -> dict[str, float]:
    """Per-prompt Q̂0 for this run's β and loss kind: from the reference success counts for a binary
    reward, from the reference rewards themselves (β log mean exp(r/β), q0_monte_carlo) otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m spolab.q0` (Snakemake rule q0) first")
    d = json.loads(path.read_text())
    if reward != "binary":
        if "rewards" not in d:
            raise ConfigError(f"{path} holds success counts only, which fit a binary reward, not task.reward={reward!r}: "
                              "rerun `python -m spolab.q0` (it records the rewards)")
        if kind != "squared" or estimator != "plain":
            raise ConfigError(f"task.reward={reward!r}: Q̂0 of a non-binary reward is the plain Monte-Carlo estimate "
                              f"of the squared loss (algo.loss=squared, algo.q0_estimator=plain), not {kind}/{estimator}")
        ids = sorted(d["rewards"])
        r = torch.tensor([d["rewards"][i] for i in ids], dtype=torch.float64)  # (P, n_ref)
        return dict(zip(ids, q0_monte_carlo(r, beta).float().tolist()))
    ids = sorted(d["successes"])
    s = torch.tensor([d["successes"][i] for i in ids], dtype=torch.float64)
    q0 = q0_from_success(s, d["n_ref"], beta, kind, estimator)
    return dict(zip(ids, q0.tolist()))
