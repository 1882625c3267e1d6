"""Reading the export and building the matrices every interval is computed from.

The export is the folder of tidy CSVs that analysis/export.py writes from MLflow (runs, curves,
eval, eval_per_problem, exact, bench, jobs) and from the study it ran (study: its entries; setup: the
scale's task, model and evaluation protocols), or the same tables as a dict of DataFrames
(``{"runs": df, ...}``: what the tests pass). Which entries there are, their names, labels, colours,
order and roles come from the exported study, never from here. Intervals are in stats.py, drawing in
plot.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spolab.eval.passk import pass_at_k_array
from stats import diff_band

Data = Path | str | Mapping[str, pd.DataFrame]  # the export folder, or its tables by name

SFT = {"label": "SFT (π_ref)", "colour": "#7f7f7f"}  # the SFT policy π_ref: in every study, but no entry of one
# eval_per_problem columns that measure diversity (spolab.eval.diversity), and their labels: among correct
# samples of a solved problem (NaN when unsolved), among all samples, and the policy's own entropy
DIVERSITY = {"distinct_correct_per_solved": "distinct correct programs per solved problem",
             "functional_classes_per_solved": "functionally distinct correct classes per solved problem",
             "effective_programs": "effective number of distinct programs (exp entropy, all samples)",
             "entropy_per_token": "policy entropy (nats per token)"}
# the unconditioned counts (0 on every unsolved problem): kept beside them, but mostly the pass rate
UNCONDITIONED = {"distinct_correct_programs": "distinct correct programs per problem",
                 "functional_classes_correct": "functionally distinct correct classes per problem"}
KL = "val/kl_ref"  # curves: KL(π_θ‖π_ref) per sequence (k1) on the validation problems, at every evaluation


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


def study(data: Data) -> pd.DataFrame:
    """The exported study (study.csv, analysis/export.py from spolab.study): one row per entry, in the
    study file's order, indexed by ``study_run``: label, colour, order, role, group, family, reference,
    seeds, protocols, needs and overrides (its settings, the lr sweep's lr included)."""
    s = table(data, "study")
    return s.fillna({c: "" for c in ("colour", "role", "family", "reference", "needs")}).sort_values(
        "order").set_index("study_run", drop=False)


def entries(data: Data, group: str | None = None) -> list[str]:
    """The study's entries (of ``group``), in the study file's order."""
    s = study(data)
    return list(s.study_run if group is None else s.study_run[s.group == group])


def roles(data: Data) -> dict[str, str]:
    """role -> the study entry that plays it (the study file's ``role``: spo_online, ppo, ...)."""
    s = study(data)
    return {r: e for r, e in zip(s.role, s.study_run) if r}


def labels(data: Data) -> dict[str, str]:
    """study_run -> human label (from the exported study), plus sft."""
    s = study(data)
    return {**dict(zip(s.study_run, s.label)), "sft": SFT["label"]}


def colours(data: Data) -> dict[str, str]:
    """study_run -> its colour where the study file gives one, plus sft."""
    s = study(data)
    return {**{e: c for e, c in zip(s.study_run, s.colour) if c}, "sft": SFT["colour"]}


def reference(runs: pd.DataFrame, study_run: str) -> str | None:
    """The study entry ``study_run`` is judged against: runs.csv's ``reference`` column, which
    analysis/export.py writes from spolab.study (ablations and off-policy sources: online SPO unless
    the study file names another); None for an entry without one (the main group)."""
    if "reference" not in runs:
        raise SystemExit("runs.csv has no `reference` column: it predates spolab.study's references; "
                         "rerun analysis/export.py (Snakemake rule export)")
    ref = runs.loc[runs.study_run == study_run, "reference"]
    if ref.empty:
        raise KeyError(f"{study_run} is not a run of runs.csv")
    ref = ref.iloc[0]
    return None if pd.isna(ref) or ref == "" else str(ref)


def seeds(data: Data) -> dict[str, int]:
    """study_run -> number of seeds in runs (sft: 1)."""
    return {"sft": 1, **table(data, "runs").groupby("study_run").seed.nunique().to_dict()}


def present(t: pd.DataFrame, order: list[str], group: str | None = None) -> list[str]:
    """The study runs of ``order`` that table ``t`` has (in that order), then any other of ``group``."""
    have = set(t.study_run) if group is None else set(t.study_run[t.group == group])
    return [s for s in order if s in have] + sorted(have - set(order) - {"sft"})


def setup(data: Data) -> dict[str, str]:
    """The exported setup (setup.csv, analysis/export.py: key, value): the scale's task, model and SFT
    setting, and each evaluation protocol's settings (``protocol.<name>.temperature``, ...)."""
    t = table(data, "setup")
    return {k: "" if pd.isna(v) else str(v) for k, v in zip(t.key, t.value)}


def protocol_text(data: Data, name: str) -> str:
    """'T 0.4, top-p 0.95' for a protocol (top-p omitted when it is 1), from the exported setup."""
    u = setup(data)
    t, top_p = float(u[f"protocol.{name}.temperature"]), float(u.get(f"protocol.{name}.top_p") or 1)
    return f"T {t:g}" + (f", top-p {top_p:g}" if top_p < 1 else "")


# ---------------------------------------------------------------- matrices
def pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Unbiased per-problem pass@k, 1 - C(n-c, k)/C(n, k) (spolab.eval.passk)."""
    return pass_at_k_array(np.asarray(n, dtype=int), np.asarray(c, dtype=int), k)


def passk_value(k: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """A ``matrix`` value: per-problem pass@k, from the rows' ``n`` and ``n_correct`` (the unbiased estimator
    of a sampling protocol), or on rows of the ``exact`` protocol (no samples) from the exact success mass,
    1 − (1 − P_θ(correct | x))^k. KeyError where some problem has fewer than k samples (a scale's small n:
    real_smoke samples 2), as for a column the export lacks: not measured."""
    def value(g: pd.DataFrame) -> np.ndarray:
        if "protocol" in g and (g["protocol"] == EXACT).all():
            mass = g["exact/success_mass"].to_numpy(dtype=float)
            return -np.expm1(k * np.log1p(-np.minimum(mass, 1.0)))
        if len(g) and int(g["n"].min()) < k:
            raise KeyError(f"pass@{k} needs n >= {k} samples per problem; these rows have {int(g['n'].min())}")
        return pass_at_k(g["n"].to_numpy(), g["n_correct"].to_numpy(), k)
    return value


EXACT = "exact"  # the evaluation protocol that samples nothing: pass@k from the exact success mass (spolab.evaluate)


def comparison_protocol(pp: pd.DataFrame) -> str:
    """The protocol every entry of a study is evaluated under, so figures and tables that compare ablation and
    off-policy entries with their references read it: ``exact`` where the export has it (the workflow gives
    every model an exact pair where the task enumerates its solutions), else the sampled ``policy`` protocol, else
    the one sampled protocol a scale evaluates under (real_smoke: ``paper``)."""
    present = set(pp.protocol)
    for p in (EXACT, "policy"):
        if p in present:
            return p
    return sorted(present)[0] if present else "policy"


def comparison_metrics(protocol: str) -> list[tuple[str | Callable, str]]:
    """(value, name) of pass@1, pass@10 and the diversity among correct programs under ``protocol``: exact
    pass@k and the exact entropy among correct programs, or sampled pass@k and distinct correct programs
    per solved problem."""
    if protocol == EXACT:
        return [(passk_value(1), "exact pass@1"), (passk_value(10), "exact pass@10"),
                ("exact/entropy_correct", "exact entropy among\ncorrect programs (nats)")]
    return [(passk_value(1), "pass@1"), (passk_value(10), "pass@10"),
            ("distinct_correct_per_solved", "distinct correct programs\nper solved problem")]


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


def problem_classes(pp: pd.DataFrame, *, study_run: str, split: str, protocol: str) -> np.ndarray | None:
    """The behaviour class of each problem in a :func:`matrix`'s columns (sorted problem ids):
    eval_per_problem's ``class_id`` (analysis/export.py, from the data split's problem records); None
    where the export has no such column (an export from before it) or a problem has no class (a task
    without classes)."""
    if "class_id" not in pp:
        return None
    d = pp[(pp.study_run == study_run) & (pp.split == split) & (pp.protocol == protocol)]
    d = d.drop_duplicates("problem_id").sort_values("problem_id")
    if d.empty or d.class_id.isna().any():
        return None
    return d.class_id.to_numpy()


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


# ---------------------------------------------------------------- diversity against pass@k
def diversity_correlation(pp: pd.DataFrame, columns: list[str] | None = None, k: int = 10) -> pd.Series:
    """Pearson correlation, across the per-problem rows of ``pp`` (every model, split and sampling protocol
    it holds: the exact protocol's rows have no samples), of each diversity column with that problem's pass@k; each over the rows where the column
    is finite (a per-solved column: the solved problems only). NaN where a column is constant there.
    ``columns``: default every column of :data:`DIVERSITY` and :data:`UNCONDITIONED` that ``pp`` has.

    A diversity metric that correlates with pass@k near 1 measures the pass rate again, not diversity."""
    columns = columns or [c for c in (*DIVERSITY, *UNCONDITIONED) if c in pp]
    pp = pp[pp.protocol != EXACT] if "protocol" in pp else pp
    pp = pp[pp["n"] >= k]  # pass@k needs k samples (real_smoke's n 2 has none: every r is NaN)
    p = pd.Series(pass_at_k(pp["n"].to_numpy(), pp["n_correct"].to_numpy(), k), index=pp.index)
    out = {}
    for c in columns:
        x = pp[c].astype(float)
        ok = np.isfinite(x) & np.isfinite(p)
        xs, ps = x[ok].to_numpy(), p[ok].to_numpy()
        out[c] = float(np.corrcoef(xs, ps)[0, 1]) if ok.sum() > 2 and xs.std() > 0 and ps.std() > 0 else np.nan
    return pd.Series(out, name=f"r with pass@{k}", dtype=float)


# ---------------------------------------------------------------- curves at matched KL(π_θ‖π_ref)
def at_kl(kl: np.ndarray, y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """One run's metric ``y`` at the first time its KL reached each of ``levels``: checkpoints in step
    order, kept where the running maximum of the KL rises (a checkpoint whose KL fell back below an
    earlier one is skipped), ``y`` interpolated linearly in KL between them; NaN beyond the run's reach."""
    kl, y = np.asarray(kl, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(kl) & np.isfinite(y)
    kl, y = kl[ok], y[ok]
    if not len(kl):
        return np.full(np.shape(levels), np.nan)
    reach = np.maximum.accumulate(kl)
    new = np.r_[True, np.diff(reach) > 0]  # a new maximum: the KL got further than ever before
    return np.interp(levels, reach[new], y[new], left=np.nan, right=np.nan)


def kl_reach(curves: pd.DataFrame, study_runs: list[str], metric: str = "val/pass@10") -> float:
    """The largest KL(π_θ‖π_ref) that every seed of every given study run reaches at a checkpoint
    where it logged ``metric``: the top of the range their curves can be compared over."""
    d = curves[curves.study_run.isin(study_runs) & curves[KL].notna()]
    d = d[d[metric].notna()] if metric in d else d.iloc[:0]
    if d.empty or set(d.study_run) != set(study_runs):
        return np.nan
    return float(d.groupby("run_name")[KL].max().min())


def kl_matrix(curves: pd.DataFrame, study_run: str, metric: str, levels: np.ndarray) -> np.ndarray:
    """(seeds × levels) matrix of a validation metric at matched KL: each seed's curve read at
    ``levels`` by :func:`at_kl` (NaN beyond that seed's reach)."""
    d = curves[(curves.study_run == study_run) & curves[KL].notna()]
    if metric not in d or d[metric].notna().sum() == 0:
        raise KeyError(f"{study_run} logged no {metric} with {KL}")
    rows = [at_kl(g[KL].to_numpy(), g[metric].to_numpy(), np.asarray(levels, dtype=float))
            for _, g in d[d[metric].notna()].sort_values("step").groupby("seed", sort=True)]
    return np.vstack(rows)


@dataclass
class AtKL:
    """Δ = a − b of a validation metric at matched samples and at matched KL (:func:`matched_kl`)."""
    kappa: float  # κ*: the largest KL(π‖π_ref) every seed of a and b reaches
    samples: tuple[float, float, float]  # (Δ, lo, hi) at each seed's last checkpoint
    at_kl: tuple[float, float, float]  # (Δ, lo, hi) at κ*
    seeds: int  # the fewer seeds of the two runs
    paired: bool  # seed s of a compared with seed s of b (the same seeds)


def matched_kl(curves: pd.DataFrame, a: str, b: str, metric: str, seed: int = 0) -> AtKL | None:
    """The one computation of κ* and of Δ at κ* for a pair of runs (the report's matched-KL table and
    claims, and F9's panels, so they print the same numbers). ``metric``: a curves column
    (``val/pass@10``). κ* = :func:`kl_reach` of a and b only (never of other runs: a third run that
    moves less would pull κ* down). Δ = seed mean of a − of b at each seed's last checkpoint (matched
    samples) and at κ* (:func:`kl_matrix`), with :func:`stats.diff_band` (bootstrap over seeds, a fresh
    ``np.random.default_rng(seed)`` for each), paired where both runs have the same seeds (seed s
    validates with the same sampling seed in every run). None where either run lacks the metric with
    KL."""
    kappa = kl_reach(curves, [a, b], metric) if metric in curves and KL in curves else np.nan
    if not np.isfinite(kappa):
        return None
    try:
        fa, fb = checkpoint_matrix(curves, a, metric), checkpoint_matrix(curves, b, metric)
        ka, kb = kl_matrix(curves, a, metric, [kappa]), kl_matrix(curves, b, metric, [kappa])
    except KeyError:
        return None
    paired = curve_seeds(curves, a, metric) == curve_seeds(curves, b, metric)
    one = lambda x, y: tuple(float(v[0]) for v in diff_band(x, y, np.random.default_rng(seed), paired=paired))  # noqa: E731
    return AtKL(float(kappa), one(fa, fb), one(ka, kb), min(len(fa), len(fb)), paired)


def checkpoint_matrix(curves: pd.DataFrame, study_run: str, metric: str, last: bool = True) -> np.ndarray:
    """(seeds × 1) matrix of a logged metric at each seed's last checkpoint (matched samples: every run
    of the main group has the same updates and batch), or its first (``last=False``: step 0, the SFT
    policy), seeds in :func:`curve_seeds` order."""
    d = curves[(curves.study_run == study_run) & curves[metric].notna()] if metric in curves else curves.iloc[:0]
    if d.empty:
        raise KeyError(f"{study_run} logged no {metric}")
    g = d.sort_values("step").groupby("seed", sort=True)
    return (g.tail(1) if last else g.head(1)).sort_values("seed")[metric].to_numpy(dtype=float)[:, None]


def curve_seeds(curves: pd.DataFrame, study_run: str, metric: str) -> list[int]:
    """The seeds of a study run that logged ``metric``, in the row order of the curve matrices."""
    d = curves[(curves.study_run == study_run) & curves[metric].notna()] if metric in curves else curves.iloc[:0]
    return sorted(int(x) for x in d.seed.unique())
