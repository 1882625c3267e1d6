"""Shared helpers of the figure and report scripts: loading the exported CSVs, the
(seeds × problems) matrices every interval is computed from, and the interval itself.

Every interval of the study is a 95 % two-level bootstrap: resample seeds (rows) with
replacement, then problems (columns) with replacement, and recompute the statistic. With a
single seed it reduces to the bootstrap over problems. Differences between two runs resample
the problems jointly (the same held-out problems) and each run's seeds independently.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from spolab.eval.passk import pass_at_k_array

matplotlib.use("Agg")  # figures are files: no display needed

N_BOOT = 2000
CONFIDENCE = 0.95

# study_run -> colour: fixed across figures so a reader learns it once
PALETTE = {
    "sft": "#7f7f7f", "spo": "#1f77b4", "spo_half_online": "#17becf", "ppo": "#d62728", "grpo": "#ff7f0e",
    "rloo": "#9467bd",
    # off-policy data sources and SPO ablations: fixed too, so colours agree across figures
    "spo_expert": "#2ca02c", "spo_earlier_run": "#8c564b", "spo_other_policy": "#e377c2",
    "spo_decoding": "#bcbd22", "spo_random": "#393b79", "spo_offline_only": "#637939", "spo_bce": "#8c6d31",
    "spo_beta003": "#843c39", "spo_beta03": "#7b4173", "spo_steps4": "#3182bd", "spo_q0_shrunk": "#e6550d",
    "spo_half_online_is": "#31a354",
    "trl_grpo": "#e7969c",  # bench.csv only: TRL's GRPOTrainer
}
_FALLBACK = ["#2ca02c", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
             "#3182bd", "#e6550d"]


def colour(study_run: str, order: list[str] | None = None) -> str:
    if study_run in PALETTE:
        return PALETTE[study_run]
    i = (order or []).index(study_run) if order and study_run in order else abs(hash(study_run))
    return _FALLBACK[i % len(_FALLBACK)]


def cli(description: str) -> argparse.Namespace:
    """The arguments every figure script takes (the exported CSV folder and the output PNG); also
    applies the figures' shared matplotlib settings (:data:`RC`)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", required=True, type=Path, help="folder of the exported CSVs (analysis/export.py)")
    ap.add_argument("--out", required=True, type=Path, help="PNG to write")
    matplotlib.rcParams.update(RC)
    return ap.parse_args()


def read(data: Path, name: str) -> pd.DataFrame:
    path = Path(data) / f"{name}.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found: run analysis/export.py (Snakemake rule export) first")
    return pd.read_csv(path)


def labels(data: Path) -> dict[str, str]:
    """study_run -> human label (from runs.csv), plus sft."""
    runs = read(data, "runs")
    out = dict(zip(runs["study_run"], runs["label"]))
    out["sft"] = "SFT (π_ref)"
    return out


# ---------------------------------------------------------------- matrices and intervals
def pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Unbiased per-problem pass@k, 1 - C(n-c, k)/C(n, k) (spolab.eval.passk)."""
    return pass_at_k_array(np.asarray(n, dtype=int), np.asarray(c, dtype=int), k)


def matrix(per_problem: pd.DataFrame, value: str | Callable[[pd.DataFrame], np.ndarray], *, study_run: str,
           split: str, protocol: str) -> np.ndarray:
    """(seeds × problems) matrix of a per-problem value for one study run, split and protocol.

    ``value`` is a column of eval_per_problem.csv or a function of the rows (e.g. pass@k from
    ``n`` and ``n_correct``). Problems are aligned across seeds (sorted ids)."""
    d = per_problem[(per_problem.study_run == study_run) & (per_problem.split == split)
                    & (per_problem.protocol == protocol)]
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


def passk_value(k: int) -> Callable[[pd.DataFrame], np.ndarray]:
    return lambda g: pass_at_k(g["n"].to_numpy(), g["n_correct"].to_numpy(), k)


def _boot_indices(rng: np.random.Generator, n_seeds: int, n_problems: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, n_seeds, size=n_seeds), rng.integers(0, n_problems, size=n_problems)


def interval(m: np.ndarray, rng: np.random.Generator, stat: Callable[[np.ndarray], float] = np.nanmean,
             n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """(point, lo, hi) of ``stat`` over a (seeds × problems) matrix, two-level bootstrap."""
    m = np.atleast_2d(np.asarray(m, dtype=float))
    point = float(stat(m))
    boots = np.empty(n_boot)
    for b in range(n_boot):
        si, pi = _boot_indices(rng, *m.shape)
        boots[b] = stat(m[si][:, pi])
    a = (1 - CONFIDENCE) / 2
    return point, float(np.nanquantile(boots, a)), float(np.nanquantile(boots, 1 - a))


def diff_interval(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                  stat: Callable[[np.ndarray], float] = np.nanmean, n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """(point, lo, hi) of stat(a) - stat(b) for two (seeds × problems) matrices on the same problems."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"matrices cover different problem sets ({a.shape[1]} vs {b.shape[1]} problems)")
    point = float(stat(a) - stat(b))
    boots = np.empty(n_boot)
    for i in range(n_boot):
        pi = rng.integers(0, a.shape[1], size=a.shape[1])  # the same problems for both runs
        sa = rng.integers(0, a.shape[0], size=a.shape[0])
        sb = rng.integers(0, b.shape[0], size=b.shape[0])
        boots[i] = stat(a[sa][:, pi]) - stat(b[sb][:, pi])
    q = (1 - CONFIDENCE) / 2
    return point, float(np.nanquantile(boots, q)), float(np.nanquantile(boots, 1 - q))


def seed_band(values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Curves: (seeds × steps) -> mean, lo, hi per step, bootstrap over seeds (NaN-aware)."""
    v = np.atleast_2d(np.asarray(values, float))
    mean = np.nanmean(v, axis=0)
    if v.shape[0] == 1:
        return mean, mean.copy(), mean.copy()
    idx = rng.integers(0, v.shape[0], size=(n_boot, v.shape[0]))
    boots = np.nanmean(v[idx], axis=1)  # (n_boot, steps)
    q = (1 - CONFIDENCE) / 2
    return mean, np.nanquantile(boots, q, axis=0), np.nanquantile(boots, 1 - q, axis=0)


def curve_matrix(curves: pd.DataFrame, study_run: str, metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(x values, seeds × x) of a logged metric for one study run (rows where it was logged)."""
    d = curves[(curves.study_run == study_run) & curves[metric].notna()]
    if d.empty:
        raise KeyError(f"{study_run} logged no {metric}")
    wide = d.pivot_table(index="seed", columns=x, values=metric, aggfunc="mean")
    return wide.columns.to_numpy(dtype=float), wide.to_numpy(dtype=float)


def savefig(fig, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    print(f"wrote {out}")


# ---------------------------------------------------------------- figure helpers
CI_TEXT = "mean over seeds, 95 % bootstrap CI"
MAIN = ["spo", "spo_half_online", "ppo", "grpo", "rloo"]
OFFPOLICY = ["spo_expert", "spo_earlier_run", "spo_other_policy", "spo_decoding", "spo_random",
             "spo_offline_only"]
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
      "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 14, "axes.grid": True,
      "grid.alpha": 0.3}  # matplotlib rcParams of every figure


def read_optional(data: Path, name: str) -> pd.DataFrame | None:
    """A CSV of the export that may be absent (bench.csv on a machine without the benchmark): None then."""
    path = Path(data) / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def read_per_problem(data: Path) -> pd.DataFrame:
    """eval_per_problem.csv, with the SFT policy's empty seed read as seed 0 (``matrix`` groups by seed)."""
    pp = read(data, "eval_per_problem")
    pp["seed"] = pp["seed"].fillna(0).astype(int)
    return pp


def present(table: pd.DataFrame, order: list[str], group: str | None = None) -> list[str]:
    """The study runs of ``order`` that ``table`` has (in that order), then any other of ``group``."""
    have = set(table.study_run) if group is None else set(table.study_run[table.group == group])
    return [s for s in order if s in have] + sorted(have - set(order) - {"sft"})


def try_matrix(per_problem: pd.DataFrame, value, **where) -> np.ndarray | None:
    """``matrix`` or None where that study run / split / protocol was not evaluated."""
    try:
        return matrix(per_problem, value, **where)
    except KeyError:
        return None


def intervals(ms: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> tuple[np.ndarray, ...]:
    """``interval`` of the mean for K statistics at once, vectorised: ms is (K × seeds × problems), e.g.
    pass@k for k = 1..K, and every bootstrap replicate draws one set of seeds and problems for all K.
    Returns point, lo, hi, each of shape (K,)."""
    ms = np.asarray(ms, dtype=float)
    K, S, P = ms.shape
    seeds, problems = rng.integers(0, S, size=(n_boot, S)), rng.integers(0, P, size=(n_boot, P))
    boots = np.empty((n_boot, K))
    chunk = max(1, int(2e6 // (K * S * P)))  # replicates per batch: ~16 MB of resampled matrices
    for c in range(0, n_boot, chunk):
        si, pi = seeds[c:c + chunk, :, None], problems[c:c + chunk, None, :]  # (b, S, 1), (b, 1, P)
        boots[c:c + chunk] = np.nanmean(ms[:, si, pi], axis=(2, 3)).T  # (K, b, S, P) -> (b, K)
    q = (1 - CONFIDENCE) / 2
    return np.nanmean(ms, axis=(1, 2)), np.nanquantile(boots, q, axis=0), np.nanquantile(boots, 1 - q, axis=0)


def band(ax, x: np.ndarray, values: np.ndarray, rng: np.random.Generator, colour: str, label: str,
         **kw) -> None:
    """Seed-mean line with its 95 % bootstrap band over seeds (``seed_band``; zero width with one seed)."""
    with warnings.catch_warnings():  # steps some seeds did not log are NaN: their mean is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = seed_band(values, rng)
    ok = np.isfinite(x) & np.isfinite(mean)
    ax.plot(x[ok], mean[ok], color=colour, label=label, lw=2, **kw)
    ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.2, lw=0)


def no_data(ax, what: str) -> None:
    """An empty panel that says what is missing, instead of a crash."""
    ax.text(0.5, 0.5, f"no data for {what}", ha="center", va="center", transform=ax.transAxes, fontsize=12,
            color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def curve_xy(curves: pd.DataFrame, study_run: str, metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """A metric against another logged quantity (fresh samples, wall clock): (x, seeds × steps), where x
    is the seed mean of ``x`` at each step the metric was logged (seeds share the schedule, not the x)."""
    d = curves[(curves.study_run == study_run) & curves[metric].notna()]
    if d.empty:
        raise KeyError(f"{study_run} logged no {metric}")
    values = d.pivot_table(index="seed", columns="step", values=metric, aggfunc="mean")
    xs = d.pivot_table(index="seed", columns="step", values=x, aggfunc="mean", dropna=False)
    xs = xs.reindex(index=values.index, columns=values.columns).to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(xs, axis=0), values.to_numpy(dtype=float)


def errpoint(ax, pos: float, m: np.ndarray, rng: np.random.Generator, colour: str, label: str | None = None,
             horizontal: bool = False, dots: bool = True) -> tuple[float, float, float]:
    """Mean of a (seeds × problems) matrix at ``pos`` with its two-level 95 % bootstrap interval as an
    error bar, and one small dot per seed (that seed's mean over problems). Returns (point, lo, hi)."""
    point, lo, hi = (float(v[0]) for v in intervals(np.atleast_2d(m)[None], rng))  # = interval(m, rng)
    err = [[point - lo], [hi - point]]
    xy = (point, pos) if horizontal else (pos, point)
    ax.errorbar(*xy, **{"xerr" if horizontal else "yerr": err}, fmt="o", color=colour, ms=7, capsize=4, lw=2,
                label=label, zorder=3)
    if dots and m.shape[0] > 1:
        seeds = np.nanmean(m, axis=1)
        jitter = np.linspace(-0.12, 0.12, len(seeds))
        ax.scatter(*((seeds, pos + jitter) if horizontal else (pos + jitter, seeds)), s=14, color=colour,
                   alpha=0.55, edgecolor="none", zorder=2)
    return point, lo, hi


def fig_legend(fig, axes, ncol: int | None = None) -> None:
    """One legend for the whole figure, below the panels (so it covers no data), each label once."""
    handles = {}
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", frameon=False,
                   ncol=ncol or min(len(handles), 8))
