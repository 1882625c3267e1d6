"""Reading the export and building the matrices every interval is computed from.

The export is the folder of tidy CSVs that analysis/export.py writes from MLflow (runs, curves,
eval, eval_per_problem, exact, bench, jobs), or the same tables as a dict of DataFrames
(``{"runs": df, ...}``: what the tests pass). Intervals are in stats.py, drawing in plot.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from spolab.config import CONF_DIR
from spolab.eval.passk import pass_at_k_array

Data = Path | str | Mapping[str, pd.DataFrame]  # the export folder, or its tables by name

MAIN = ["spo", "spo_half_online", "ppo", "grpo", "rloo"]  # the main group, in the figures' order
OFFPOLICY = ["spo_expert", "spo_earlier_run", "spo_other_policy", "spo_decoding", "spo_random",
             "spo_offline_only"]


# ---------------------------------------------------------------- the export
def table(data: Data, name: str, optional: bool = False) -> pd.DataFrame | None:
    """One table of the export (``<data>/<name>.csv``, or ``data[name]``); an absent optional one
    (bench.csv on a machine without the benchmark) is None, an absent required one an error."""
    if isinstance(data, Mapping):
        if name in data:
            return data[name].copy()
    else:
        path = Path(data) / f"{name}.csv"
        if path.exists() and path.stat().st_size > 2:
            return pd.read_csv(path)
    if optional:
        return None
    raise SystemExit(f"{name}.csv not in {data if not isinstance(data, Mapping) else 'the tables given'}: "
                     "run analysis/export.py (Snakemake rule export) first")


def per_problem(data: Data) -> pd.DataFrame:
    """eval_per_problem with an empty seed (an SFT row of an older export) read as seed 0."""
    pp = table(data, "eval_per_problem")
    pp["seed"] = pp["seed"].fillna(0).astype(int)
    return pp


def labels(data: Data) -> dict[str, str]:
    """study_run -> human label (from runs), plus sft."""
    runs = table(data, "runs")
    out = dict(zip(runs["study_run"], runs["label"]))
    out["sft"] = "SFT (π_ref)"
    return out


def seeds(data: Data) -> dict[str, int]:
    """study_run -> number of seeds in runs (sft: 1)."""
    return {"sft": 1, **table(data, "runs").groupby("study_run").seed.nunique().to_dict()}


def present(t: pd.DataFrame, order: list[str], group: str | None = None) -> list[str]:
    """The study runs of ``order`` that table ``t`` has (in that order), then any other of ``group``."""
    have = set(t.study_run) if group is None else set(t.study_run[t.group == group])
    return [s for s in order if s in have] + sorted(have - set(order) - {"sft"})


def protocol(name: str) -> dict:
    """The evaluation protocol's settings (conf/protocol/<name>.yaml: n, temperature, top_p, ks)."""
    return yaml.safe_load((CONF_DIR / "protocol" / f"{name}.yaml").read_text())


def protocol_text(name: str) -> str:
    """'T 0.4, top-p 0.95' for a protocol (top-p omitted when it is 1), from its config."""
    p = protocol(name)
    return f"T {p['temperature']:g}" + (f", top-p {p['top_p']:g}" if p.get("top_p", 1) < 1 else "")


# ---------------------------------------------------------------- matrices
def pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Unbiased per-problem pass@k, 1 - C(n-c, k)/C(n, k) (spolab.eval.passk)."""
    return pass_at_k_array(np.asarray(n, dtype=int), np.asarray(c, dtype=int), k)


def passk_value(k: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """A ``matrix`` value: per-problem pass@k from the rows' ``n`` and ``n_correct``."""
    return lambda g: pass_at_k(g["n"].to_numpy(), g["n_correct"].to_numpy(), k)


def matrix(pp: pd.DataFrame, value: str | Callable[[pd.DataFrame], np.ndarray], *, study_run: str,
           split: str, protocol: str) -> np.ndarray:
    """(seeds × problems) matrix of a per-problem value for one study run, split and protocol.

    ``value`` is a column of eval_per_problem or a function of the rows (e.g. ``passk_value(10)``).
    Problems are aligned across seeds (sorted ids)."""
    d = pp[(pp.study_run == study_run) & (pp.split == split) & (pp.protocol == protocol)]
    if d.empty:
        raise KeyError(f"no per-problem rows for {study_run} / {split} / {protocol}")
    d = d.sort_values(["seed", "problem_id"])
    rows = []
    for _, g in d.groupby("seed", sort=True):
        v = value(g) if callable(value) else g[value].to_numpy(dtype=float)
        rows.append(np.asarray(v, dtype=float))
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{study_run}/{split}/{protocol}: seeds were evaluated on different problem sets")
    return np.vstack(rows)


def try_matrix(pp: pd.DataFrame, value, **where) -> np.ndarray | None:
    """``matrix``, or None where that study run / split / protocol was not evaluated."""
    try:
        return matrix(pp, value, **where)
    except KeyError:
        return None


def curve_matrix(curves: pd.DataFrame, study_run: str, metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(x values, seeds × x) of a logged metric for one study run (rows where it was logged)."""
    d = curves[(curves.study_run == study_run) & curves[metric].notna()]
    if d.empty:
        raise KeyError(f"{study_run} logged no {metric}")
    wide = d.pivot_table(index="seed", columns=x, values=metric, aggfunc="mean")
    return wide.columns.to_numpy(dtype=float), wide.to_numpy(dtype=float)


def curve_xy(curves: pd.DataFrame, study_run: str, metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """A metric against another logged quantity (fresh samples, wall clock): (x, seeds × steps), where x
    is the seed mean of ``x`` at each step the metric was logged (seeds share the schedule, not the x)."""
    d = curves[(curves.study_run == study_run) & curves[metric].notna()]
    if d.empty:
        raise KeyError(f"{study_run} logged no {metric}")
    values = d.pivot_table(index="seed", columns="step", values=metric, aggfunc="mean")
    xs = d.pivot_table(index="seed", columns="step", values=x, aggfunc="mean", dropna=False)
    xs = xs.reindex(index=values.index, columns=values.columns).mean(axis=0)  # NaN-skipping, no warning
    return xs.to_numpy(dtype=float), values.to_numpy(dtype=float)


def logged(curves: pd.DataFrame, study_run: str, metric: str) -> bool:
    """Whether a study run logged ``metric`` at least once."""
    return metric in curves and bool(curves.loc[curves.study_run == study_run, metric].notna().any())
