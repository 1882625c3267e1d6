"""Drawing helpers shared by the figure modules f1_*.py … f9_*.py: colours (the exported study's), style, intervals as
bands and error bars, the empty-panel notice, one legend per figure, saving, the command line.

Each figure module has ``plot(data) -> Figure`` (pure: it reads the export, draws and returns the
figure) and ``main()``, the command line ``python analysis/fN_x.py --data DIR --out PNG``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files: no display needed

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from common import Data, colours, curve_matrix, curve_xy, logged  # noqa: E402
from spolab.atomic import atomic_path  # noqa: E402
from stats import CONFIDENCE, interval, seed_band  # noqa: E402

SEED = 0  # every figure's bootstrap generator: np.random.default_rng(SEED)
CI_TEXT = f"mean over seeds, {CONFIDENCE * 100:g} % bootstrap CI"
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
      "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 14, "axes.grid": True,
      "grid.alpha": 0.3}  # matplotlib rcParams of every figure

BENCH_ONLY = {"trl_grpo": "#e7969c"}  # bench.csv variants that are no study entry: TRL's GRPOTrainer
_FALLBACK = ["#2ca02c", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
             "#3182bd", "#e6550d"]


def palette(data: Data) -> Callable[[str], str]:
    """study_run -> its colour, fixed across figures so a reader learns it once: the study file's
    ``colour`` (the exported study.csv), SFT's, a bench-only variant's (:data:`BENCH_ONLY`), else a
    stable fallback picked by the name."""
    fixed = {**BENCH_ONLY, **colours(data)}

    def colour(study_run: str) -> str:
        if study_run in fixed:
            return fixed[study_run]
        return _FALLBACK[sum(map(ord, study_run)) % len(_FALLBACK)]  # not hash(): that changes per process
    return colour


def styled(plot: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw a figure under the shared rcParams (:data:`RC`) without changing the caller's."""
    @functools.wraps(plot)
    def wrapper(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(RC):
            return plot(*args, **kwargs)
    return wrapper


def band(ax, x: np.ndarray, values: np.ndarray, rng: np.random.Generator, colour: str, label: str | None,
         alpha: float = 0.2, **kw) -> None:
    """Seed-mean line with its bootstrap band over seeds (``stats.seed_band``; zero width with one seed)."""
    mean, lo, hi = seed_band(values, rng)
    ok = np.isfinite(x) & np.isfinite(mean)
    ax.plot(x[ok], mean[ok], color=colour, label=label, **{"lw": 2, **kw})
    ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=alpha, lw=0)


def small_multiples(row, curves, shown: list[str], metric: str, x: str, rng: np.random.Generator,
                    names: dict[str, str], colour: Callable[[str], str]) -> None:
    """One panel per study run of ``row``: a logged metric against ``x`` ("step" or another logged
    column, e.g. "data/fresh_samples"), the run's seed mean with its band over seeds, the other runs'
    seed means as thin grey lines and the step-0 value (the SFT policy, mean over seeds) dashed. So
    no band hides another. ``colour``: the study's palette (:func:`palette`)."""
    xy = lambda sr: curve_matrix(curves, sr, metric) if x == "step" else curve_xy(curves, sr, metric, x)  # noqa: E731
    means = {sr: xy(sr) for sr in shown if logged(curves, sr, metric)}
    if not shown:
        no_data(row[0], f"{metric}: no runs")
    start = curves.loc[(curves.step == 0) & curves.study_run.isin(shown), metric] if metric in curves else []
    for ax, sr in zip(row, shown):
        if sr not in means:
            no_data(ax, f"{metric} of {names.get(sr, sr)}")
            continue
        for other, (ox, om) in means.items():
            if other != sr:
                ax.plot(ox, np.nanmean(om, axis=0), color="0.6", lw=1, label="other algorithms (seed mean)")
        if len(start):
            ax.axhline(np.mean(start), ls="--", color=colour("sft"), lw=1.2, label=names["sft"] + ", step 0")
        band(ax, *means[sr], rng, colour(sr), names.get(sr, sr), marker="o", ms=4)


def errpoint(ax, pos: float, m: np.ndarray, rng: np.random.Generator, colour: str, label: str | None = None,
             horizontal: bool = False, dots: bool = True, hollow: bool = False) -> tuple[float, float, float]:
    """Mean of a (seeds × problems) matrix at ``pos`` with its two-level bootstrap interval
    (``stats.interval``) as an error bar, and one small dot per seed (that seed's mean over problems).
    ``hollow``: an open marker (used for single-seed runs). Returns (point, lo, hi)."""
    point, lo, hi = interval(m, rng)
    err = [[point - lo], [hi - point]]
    xy = (point, pos) if horizontal else (pos, point)
    ax.errorbar(*xy, **{"xerr" if horizontal else "yerr": err}, fmt="o", color=colour, ms=7, capsize=4, lw=2,
                label=label, zorder=3, mfc="white" if hollow else colour, mew=2)
    if dots and m.shape[0] > 1:
        per_seed = np.nanmean(m, axis=1)
        jitter = np.linspace(-0.12, 0.12, len(per_seed))
        ax.scatter(*((per_seed, pos + jitter) if horizontal else (pos + jitter, per_seed)), s=14, color=colour,
                   alpha=0.55, edgecolor="none", zorder=2)
    return point, lo, hi


def no_data(ax, what: str) -> None:
    """An empty panel that says what is missing, instead of a crash."""
    ax.text(0.5, 0.5, f"no data for {what}", ha="center", va="center", transform=ax.transAxes, fontsize=12,
            color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches)


def fig_legend(fig: Figure, axes, ncol: int | None = None) -> None:
    """One legend for the whole figure, below the panels (so it covers no data), each label once."""
    handles = {}
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", frameon=False,
                   ncol=ncol or min(len(handles), 8))


def savefig(fig: Figure, out: Path) -> None:
    out = Path(out)
    with atomic_path(out) as tmp:  # a reader never sees half a PNG: written aside, fsync'ed, renamed
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    print(f"wrote {out}")


def cli(plot: Callable[[Path], Figure], doc: str) -> None:
    """The command line of every figure module: ``--data DIR --out PNG`` draws ``plot(DIR)`` into PNG."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of the exported CSVs (analysis/export.py)")
    ap.add_argument("--out", required=True, type=Path, help="PNG to write")
    args = ap.parse_args()
    savefig(plot(args.data), args.out)
