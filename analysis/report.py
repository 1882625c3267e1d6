"""Generate the claims report (``results/README.md`` for the default study) from the exported CSVs.

    python analysis/report.py --scale default --study default --data results/data \
        --figures results/figures --out results/README.md --claims results/tables/claims_default.md

Every number is computed here from the CSVs. Each claim C1…C6 is one function whose docstring is
its verdict rule: the report prints that docstring as the rule (its ``{name}`` fields filled from
the function's keyword defaults), so the rule is written once, next to the code that applies it.
Each rule names the effect δ it looks for (:data:`DELTA`); a verdict is given only where the
comparison has the power to detect δ (stats.powered, derived in analysis/stats.py), otherwise it is
"undecided (underpowered)". C1 and C2 are also read at matched KL(π‖π_ref) (:func:`matched`).
Which entries the claims compare comes from the exported study (study.csv: each entry's ``role``,
named in one table here, :data:`ROLES`), and which entry an ablation or off-policy source is judged
against from runs.csv's ``reference`` column (spolab.study), never from here. Settings are quoted from
the export (runs.csv, setup.csv), per entry where entries differ, never from today's conf/. Nothing in
the output is written by hand.
"""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from common import (
    DIVERSITY,
    KL,
    UNCONDITIONED,
    Data,
    checkpoint_matrix,
    curve_matrix,
    curve_seeds,
    diversity_correlation,
    entries,
    kl_matrix,
    kl_reach,
    labels,
    matrix,
    passk_value,
    per_problem,
    protocol_text,
    reference,
    roles,
    setup,
    table,
)
from spolab.atomic import write_text
from stats import (
    ALPHA,
    CONFIDENCE,
    DETECT_SE,
    MAX_HALF_WIDTH,
    MIN_SEEDS,
    N_BOOT,
    POWER,
    Z_CI,
    decisive,
    detectable,
    diff_band,
    diff_interval,
    interval,
    powered,
    seed_sd,
)

# The entries the claims and tables compare, by their `role` in the study file (the exported study.csv):
# the one place the report names them. Study.e[role] is the entry (None where the study has no such role:
# the claims and rows that need it are left out).
ROLES = {
    "spo_online": "SPO online: C1, C2, C4, C5, C6 and the reference of the off-policy sources",
    "spo_half_online": "half-online SPO (replay): C3, C6",
    "ppo": "PPO: C1, C2, C4, C5, the matched-KL table",
    "grpo": "GRPO: the difference and matched-KL tables",
    "rloo": "RLOO: the difference and matched-KL tables",
}
SEED = 0  # the report's bootstrap generator: every interval starts from np.random.default_rng(SEED)
CI = f"{CONFIDENCE * 100:g} %"
UNDECIDED = "undecided (underpowered)"
# δ, the effect each comparison looks for, per metric: the smallest difference that would matter
DELTA = {"pass@1": 0.02, "pass@10": 0.02,  # 2 points of pass@k: also C6's non-inferiority margin
         "distinct_correct_per_solved": 0.1, "functional_classes_per_solved": 0.1,  # ~10 % of SFT's ~1.1
         "effective_programs": 0.5,  # half a program among n = 20 samples
         "entropy_per_token": 0.02,  # nats per token, ~6 % of SFT's ~0.32
         "log_step_s": 0.1,  # log step time: a ratio of e^-0.1 = 0.90, 10 % faster
         "seed_sd": 0.02}  # seed standard deviation of pass@10
POWER_RULE = (f"A verdict is given only where its comparison has {POWER * 100:g} % power at two-sided α = {ALPHA:g} "
              f"to detect the effect δ its rule names: the minimum detectable effect MDE = {DETECT_SE / Z_CI:.2f} × "
              f"the {CI} CI half-width must be ≤ δ (half-width ≤ {MAX_HALF_WIDTH:.2f}·δ, since δ ≥ (z_(1−α/2) + "
              f"z_power)·SE = {DETECT_SE:.2f}·SE and the half-width is {Z_CI:.2f}·SE; analysis/stats.py), and every "
              f"run needs ≥ {MIN_SEEDS} seeds (one seed gives an interval without seed-to-seed variation). A difference "
              f"whose CI already excludes 0 (significant at α) is judged without the power condition: power guards "
              f"a null reading, not a significant one. Otherwise the verdict is **{UNDECIDED}** and the number "
              f"gives the interval and its MDE.")


class Study:
    """The export's tables, and intervals over its (seeds × problems) matrices."""

    def __init__(self, data: Data):
        self.data = data
        self.runs, self.pp, self.curves = table(data, "runs"), per_problem(data), table(data, "curves")
        self.jobs = table(data, "jobs", optional=True)
        bench = table(data, "bench", optional=True)
        self.bench = bench if bench is not None else pd.DataFrame()
        self.exact = table(data, "exact", optional=True)
        played = roles(data)  # study.csv
        self.e = {role: played.get(role) for role in ROLES}  # role -> study entry (None: no entry plays it)

    def has(self, study_run, split="test", protocol="policy") -> bool:
        d = self.pp
        return bool(((d.study_run == study_run) & (d.split == split) & (d.protocol == protocol)).any())

    def m(self, study_run, value, split="test", protocol="policy") -> np.ndarray:
        return matrix(self.pp, value, study_run=study_run, split=split, protocol=protocol)

    def seeds(self, *study_runs, split="test", protocol="policy") -> int:
        """The fewest seeds among these runs' evaluations (what the power rule counts)."""
        return min(self.m(r, "n", split, protocol).shape[0] for r in study_runs)

    def rng(self) -> np.random.Generator:
        """A fresh generator per interval: a number does not depend on which were computed before it."""
        return np.random.default_rng(SEED)

    def point(self, study_run, value, split="test", protocol="policy") -> tuple[float, float, float]:
        return interval(self.m(study_run, value, split, protocol), self.rng())

    def diff(self, a, b, value, split="test", protocol="policy") -> tuple[float, float, float]:
        return diff_interval(self.m(a, value, split, protocol), self.m(b, value, split, protocol), self.rng())

    def reference(self, study_run) -> str | None:
        """The entry ``study_run`` is judged against (runs.csv, from spolab.study)."""
        return reference(self.runs, study_run)


# ---------------------------------------------------------------- the claims, one function each
@dataclass
class Claim:
    id: str
    claim: str  # the paper's claim, in a few words
    figure: str  # the figures that show it
    number: str  # our number(s), with intervals
    verdict: str  # reproduced | partly | not | undecided (underpowered) | n/a (...)
    rule: str  # how the verdict is computed: the claim function's docstring


ClaimFn = Callable[[Study], tuple[str, str] | None]  # -> (number, verdict), or None where not evaluated
CLAIMS: dict[str, tuple[str, str, ClaimFn]] = {}  # id -> (claim, figures, function)
Check = tuple[tuple[float, float, float], float, int]  # ((point, lo, hi), δ, seeds of the fewest-seeded run)


def claim(cid: str, text: str, figures: str) -> Callable[[ClaimFn], ClaimFn]:
    def register(fn: ClaimFn) -> ClaimFn:
        CLAIMS[cid] = (text, figures, fn)
        return fn
    return register


def rule(fn: ClaimFn) -> str:
    """A claim function's docstring on one line, its ``{name}`` fields filled from its keyword defaults."""
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}
    return " ".join(inspect.cleandoc(fn.__doc__).split()).format(ci=CI, **defaults)


def fmt(p, lo=None, hi=None, d=3) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "n/a"
    return f"{p:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]" if lo is not None else f"{p:.{d}f}"


def ci(p, lo, hi, d=3) -> str:
    if np.isnan(p):
        return "n/a"
    return f"{p:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def fmt_mde(d: tuple[float, float, float], digits=3) -> str:
    """A difference with its interval and its minimum detectable effect (stats.detectable)."""
    if np.isnan(d[0]):
        return "n/a"
    return f"{fmt(*d, d=digits)} (MDE {detectable(d[1], d[2]):.{digits}f})"


def decide(verdict: str, *checks: Check) -> str:
    """``verdict`` where every comparison it rests on may be judged (stats.decisive: powered for its δ,
    or its CI already excludes 0), else :data:`UNDECIDED`."""
    return verdict if all(decisive(d[1], d[2], delta, n) for d, delta, n in checks) else UNDECIDED


def direction(d: tuple[float, float, float], delta: float, seeds: int) -> str:
    """How a powered difference a − b reads: "ahead" (CI above 0), "behind" (CI below 0), "level"
    (the CI contains 0); "undecided" where it may not be judged (stats.decisive)."""
    if not decisive(d[1], d[2], delta, seeds):
        return "undecided"
    return "ahead" if d[1] > 0 else ("behind" if d[2] < 0 else "level")


def reading(at_samples: str, at_kl: str) -> str:
    """Which reading of a difference holds: the one at matched samples, at matched KL, both or neither
    (``direction`` of each)."""
    if at_kl == "undecided" or at_samples == "undecided":
        which = " and ".join(w for w, v in (("matched samples", at_samples), ("matched KL", at_kl)) if v == "undecided")
        return f"undecided: {which} underpowered"
    if at_samples == at_kl:
        return f"both readings agree: {at_samples} at matched samples and at matched KL"
    if at_samples == "ahead":
        return f"ahead only at matched samples ({at_kl} at matched KL): the lead comes with moving less from π_ref"
    if at_kl == "ahead":
        return f"ahead only at matched KL ({at_samples} at matched samples): it moved less, and is better for its KL"
    return f"{at_samples} at matched samples, {at_kl} at matched KL"


@dataclass
class Matched:
    """A validation metric of runs a and b, compared at matched samples and at matched KL."""
    metric: str
    kl: float  # κ*: the largest KL(π‖π_ref) every seed of both runs reaches
    samples: tuple[float, float, float]  # Δ at the last checkpoint (equal updates and fresh samples)
    at_kl: tuple[float, float, float]  # Δ at κ*
    seeds: int
    delta: float

    @property
    def reading(self) -> str:
        return reading(direction(self.samples, self.delta, self.seeds), direction(self.at_kl, self.delta, self.seeds))


def matched(s: Study, a: str, b: str, metric: str, delta: float) -> Matched | None:
    """Δ = a − b of a validation metric (curves ``val/<metric>``, logged every eval_every updates) at
    matched samples (each seed's last checkpoint) and at matched KL: each seed's curve read at
    κ* = the largest KL every seed of a and b reaches (common.at_kl: linear between checkpoints), seed
    means compared with a bootstrap over seeds (stats.diff_band), paired where both runs have the same
    seeds (seed s of every run validates with the same sampling seed: at step 0 both are the SFT policy
    with identical values, and later samples share its random numbers). None where either run lacks
    the metric."""
    key = f"val/{metric}"
    kappa = kl_reach(s.curves, [a, b], key) if key in s.curves and KL in s.curves else np.nan
    if not np.isfinite(kappa):
        return None
    try:
        fa, fb = checkpoint_matrix(s.curves, a, key), checkpoint_matrix(s.curves, b, key)
        ka, kb = kl_matrix(s.curves, a, key, [kappa]), kl_matrix(s.curves, b, key, [kappa])
    except KeyError:
        return None
    paired = curve_seeds(s.curves, a, key) == curve_seeds(s.curves, b, key)
    one = lambda x, y: tuple(float(v[0]) for v in diff_band(x, y, s.rng(), paired=paired))  # noqa: E731
    return Matched(metric, kappa, one(fa, fb), one(ka, kb), min(len(fa), len(fb)), delta)


def matched_text(m: Matched | None, what: str) -> str:
    if m is None:
        return f"{what}: not logged with {KL}"
    return (f"{what} at matched samples {fmt_mde(m.samples)}, at matched KL (κ* {m.kl:.3g} nats) {fmt_mde(m.at_kl)}: "
            f"{m.reading}")


@claim("C1", "SPO beats PPO on pass@10 (PPO may win pass@1)", "F1, F2, F9")
def c1(s: Study, delta: float = DELTA["pass@10"]) -> tuple[str, str] | None:
    """Δ = pass@10(SPO online) − pass@10(PPO) on test under the paper protocol; effect looked for δ =
    {delta}. reproduced: the {ci} CI of Δ lies above 0; partly: Δ > 0 but the CI contains 0; not: Δ ≤ 0.
    Beside it, Δ validation pass@10 at matched samples and at matched KL(π‖π_ref) (F9), and which
    reading holds."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if not (s.has(spo, protocol="paper") and s.has(ppo, protocol="paper")):
        return None
    d = s.diff(spo, ppo, passk_value(10), protocol="paper")
    d_pol = s.diff(spo, ppo, passk_value(10))
    d1 = s.diff(spo, ppo, passk_value(1), protocol="paper")
    v = decide("reproduced" if d[1] > 0 else ("partly" if d[0] > 0 else "not"),
               (d, delta, s.seeds(spo, ppo, protocol="paper")))
    kl = matched_text(matched(s, spo, ppo, "pass@10", delta), "val Δ pass@10")
    return (f"Δ pass@10 (paper) {fmt_mde(d)}; policy protocol {fmt(*d_pol)}; Δ pass@1 (paper) {fmt(*d1)}; {kl}", v)


@claim("C2", "SPO learns more diverse policies; PPO collapses", "F3, F9")
def c2(s: Study, delta_correct: float = DELTA["distinct_correct_per_solved"],
       delta_all: float = DELTA["effective_programs"]) -> tuple[str, str] | None:
    """Δ_c = distinct correct programs per solved problem (each run's mean over the problems it
    solves) and Δ_a = effective number of distinct programs among all samples (exp of their entropy),
    SPO online − PPO on test (policy protocol); effects looked for δ_c = {delta_correct} and δ_a =
    {delta_all} programs, and both must be powered. reproduced: both CIs lie above 0; partly: one does,
    or both Δ > 0; not: otherwise. Beside them, Δ entropy per token, and both Δ on validation at
    matched samples and at matched KL(π‖π_ref) (F9) with which reading holds."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if not (s.has(spo) and s.has(ppo)):
        return None
    try:
        dc = s.diff(spo, ppo, "distinct_correct_per_solved")
        da = s.diff(spo, ppo, "effective_programs")
    except KeyError:
        return "the export has no per-solved or effective-program columns (rerun the evaluation)", "n/a (not measured)"
    de = s.diff(spo, ppo, "entropy_per_token")
    above = int(dc[1] > 0) + int(da[1] > 0)
    n = s.seeds(spo, ppo)
    v = decide("reproduced" if above == 2 else ("partly" if above == 1 or (dc[0] > 0 and da[0] > 0) else "not"),
               (dc, delta_correct, n), (da, delta_all, n))
    kl = "; ".join(matched_text(matched(s, spo, ppo, m, DELTA[m]), f"val Δ {w}")
                   for m, w in (("distinct_correct_per_solved", "distinct correct / solved"),
                                ("effective_programs", "effective programs")))
    return (f"Δ distinct correct / solved problem {fmt_mde(dc, 2)}; Δ effective programs {fmt_mde(da, 2)}; "
            f"Δ entropy/token {fmt(*de)}; {kl}", v)


@claim("C3", "SPO benefits from off-policy data", "F4")
def c3(s: Study, delta: float = DELTA["pass@10"]) -> tuple[str, str] | None:
    """for every off-policy source r (each entry of the offpolicy group against its reference in
    runs.csv, and half-online replay against online SPO), Δ_r = pass@10(r) − pass@10(its reference)
    on test (policy protocol); effect looked for δ = {delta}, and every source's comparison must be
    powered. reproduced: at least one source's CI lies above 0 and none lies below 0; partly: at least
    one CI above 0, or most Δ_r > 0; not: otherwise."""
    pairs = [(r, s.reference(r)) for r in s.runs[s.runs.group == "offpolicy"].study_run.unique()]
    pairs = [(r, ref) for r, ref in [*pairs, (s.e["spo_half_online"], s.e["spo_online"])]
             if ref and s.has(r) and s.has(ref)]
    if not pairs:
        return None
    ds = {r: s.diff(r, ref, passk_value(10)) for r, ref in pairs}
    checks = [(ds[r], delta, s.seeds(r, ref)) for r, ref in pairs]
    helps = [r for r, d in ds.items() if d[1] > 0]
    hurts = [r for r, d in ds.items() if d[2] < 0]
    majority = sum(d[0] > 0 for d in ds.values()) > len(ds) / 2
    v = decide("reproduced" if helps and not hurts else ("partly" if helps or majority else "not"), *checks)
    best = max(ds, key=lambda r: ds[r][0])
    n_powered = sum(powered(d[1], d[2], delta, n) for d, _, n in checks)
    return (f"{len(helps)} of {len(ds)} sources help, {len(hurts)} hurt (CI excludes 0); {n_powered} of {len(ds)} "
            f"comparisons powered for δ; best {best}: Δ pass@10 {fmt_mde(ds[best])}", v)


@claim("C4", "SPO is faster and more memory efficient", "F5")
def c4(s: Study, delta: float = DELTA["log_step_s"]) -> tuple[str, str] | None:
    """Δ_t = mean log step time of SPO online − of PPO over every logged update of every seed inside
    the study (curves perf/step_s; the two-level bootstrap, updates as columns); effect looked for δ =
    {delta} (a step-time ratio of e^−{delta}), which must be powered; and the training-state memory
    ratio SPO / PPO from the benchmark (exact bytes of parameters, gradients and Adam moments of every
    model: no noise, no interval). reproduced: the CI of Δ_t lies below 0 and the memory ratio < 1;
    partly: one of the two; not: neither. The benchmark's time ratios (one process, medians, no
    interval) are reported beside, also at equal optimiser steps (SPO with PPO's steps per update)."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if s.bench.empty or not all(r in set(s.curves.study_run) for r in (spo, ppo)) \
            or "perf/step_s" not in s.curves:
        return None
    size = s.bench["size"].iloc[0]  # the study's model size comes first (spolab.bench: sft_size)
    b = s.bench[s.bench["size"] == size].set_index("variant")  # spolab.bench's variants: algorithms, not entries
    if not {"spo", "ppo"} <= set(b.index):
        return None
    t, u, mem, rss = (b.loc["spo", k] / b.loc["ppo", k] for k in
                      ("step_s", "update_s", "train_state_MB", "peak_rss_above_baseline_MB"))
    (xa, ta), (xb, tb) = (curve_matrix(s.curves, r, "perf/step_s") for r in (spo, ppo))
    steps = np.intersect1d(xa, xb)  # the updates both logged
    la, lb = (np.log(m[:, np.isin(x, steps)]) for x, m in ((xa, ta), (xb, tb)))
    dt = diff_interval(la, lb, s.rng())
    faster = dt[2] < 0
    v = decide(["not", "partly", "reproduced"][int(faster) + int(mem < 1)], (dt, delta, min(len(la), len(lb))))
    eq = ""
    if "spo_ppo_steps" in b.index:  # SPO at PPO's optimiser steps per update: the speed claim at equal steps
        n = b.loc["spo_ppo_steps"].get("opt_steps_per_update", float("nan"))
        eq = (f"; at PPO's {n:.0f} optimiser steps per update (variant spo_ppo_steps): step time "
              f"×{b.loc['spo_ppo_steps', 'step_s'] / b.loc['ppo', 'step_s']:.2f}, update "
              f"×{b.loc['spo_ppo_steps', 'update_s'] / b.loc['ppo', 'update_s']:.2f}")
    return (f"benchmark, model `{size}`: step time ×{t:.2f}, update ×{u:.2f}, training state ×{mem:.2f}, peak RSS "
            f"above baseline ×{rss:.2f} (SPO / PPO){eq}; inside the study{alongside(s)}: Δ log step time "
            f"{fmt_mde(dt)}, a ratio ×{np.exp(dt[0]):.2f} [{np.exp(dt[1]):.2f}, {np.exp(dt[2]):.2f}]", v)


@claim("C5", "SPO is more stable", "F6")
def c5(s: Study, delta: float = DELTA["seed_sd"], collapse_drop: float = 0.05) -> tuple[str, str] | None:
    """Δ = seed standard deviation of final test pass@10 (policy protocol; each seed's mean over
    problems) of SPO online − of PPO, with the two-level bootstrap; effect looked for δ = {delta}, which
    must be powered (never with one seed); and collapse events (an evaluation where val pass@10 falls
    more than {collapse_drop} below the run's own start). reproduced: the CI of Δ lies below 0 and SPO
    has no more collapse events than PPO; partly: Δ < 0 or SPO has fewer collapse events; not:
    otherwise. With few seeds an SD is a weak estimate: the interval says how weak."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if not (s.has(spo) and s.has(ppo)):
        return None
    a, b = s.m(spo, passk_value(10)), s.m(ppo, passk_value(10))
    d = diff_interval(a, b, s.rng(), stat=seed_sd) if min(len(a), len(b)) > 1 else (np.nan, np.nan, np.nan)
    sd = {r: float(seed_sd(m)) if len(m) > 1 else np.nan for r, m in (("spo", a), ("ppo", b))}
    ev = {r: collapse_events(s.curves, e, collapse_drop) for r, e in (("spo", spo), ("ppo", ppo))}
    if None in ev.values():  # validation without k = 10 (a val protocol with n < 10): the SD alone decides
        v = "reproduced" if d[2] < 0 else ("partly" if d[0] < 0 else "not")
        events = "collapse events: not counted (no val pass@10 logged)"
    else:
        v = "reproduced" if d[2] < 0 and ev["spo"] <= ev["ppo"] else ("partly" if d[0] < 0 or ev["spo"] < ev["ppo"]
                                                                       else "not")
        events = f"collapse events: SPO {ev['spo']}, PPO {ev['ppo']}"
    return (f"seed SD of test pass@10: SPO {fmt(sd['spo'])}, PPO {fmt(sd['ppo'])}, Δ {fmt_mde(d)}; {events}",
            decide(v, (d, delta, min(len(a), len(b)))))


@claim("C6", "half-online SPO is at least as good as online SPO with half the fresh samples", "F1, F4")
def c6(s: Study, margin: float = DELTA["pass@10"]) -> tuple[str, str] | None:
    """Δ = pass@10(SPO half-online) − pass@10(SPO online) on test (policy protocol) at equal updates,
    half the fresh samples. Non-inferiority margin δ = {margin}, which the comparison must have the power
    for: reproduced: the CI's lower bound > −{margin}; partly: Δ > −{margin} but the CI reaches below;
    not: Δ ≤ −{margin}."""
    half, spo = s.e["spo_half_online"], s.e["spo_online"]
    if not (s.has(half) and s.has(spo)):
        return None
    d = s.diff(half, spo, passk_value(10))
    v = decide("reproduced" if d[1] > -margin else ("partly" if d[0] > -margin else "not"),
               (d, margin, s.seeds(half, spo)))
    fresh = s.runs.groupby("study_run").fresh_samples.mean()
    return f"Δ pass@10 {fmt_mde(d)} with {fresh[half]:.0f} vs {fresh[spo]:.0f} fresh samples", v


def claims(s: Study) -> list[Claim]:
    """Every claim the export can test, in id order."""
    out = []
    for cid, (text, figures, fn) in CLAIMS.items():
        if (r := fn(s)) is not None:
            out.append(Claim(cid, text, figures, r[0], r[1], rule(fn)))
    return out


def concurrency(jobs: pd.DataFrame, rule: str | None = None) -> float:
    """Mean number of jobs running at once (jobs.csv: each job's wall time ``s`` and ``end_time``), over
    the running time of the jobs of ``rule`` (None: over the whole study)."""
    start, end = (jobs.end_time - jobs.s).to_numpy(float), jobs.end_time.to_numpy(float)
    t = np.arange(start.min(), end.max(), 1.0)  # 1-second grid
    running = ((t[:, None] >= start) & (t[:, None] < end)).sum(axis=1)  # jobs running at each second
    mine = jobs.rule.to_numpy() == rule if rule else np.ones(len(jobs), bool)
    during = ((t[:, None] >= start[mine]) & (t[:, None] < end[mine])).any(axis=1)
    return float(running[during].mean())


def alongside(s: Study) -> str:
    """' (2.0 jobs running at once on average, jobs.csv)': the concurrency the study's RL jobs ran at."""
    if s.jobs is None or not (s.jobs.rule == "rl").any():
        return ""
    return f" ({concurrency(s.jobs, 'rl'):.1f} jobs running at once on average, jobs.csv)"


def collapse_events(curves: pd.DataFrame, study_run: str, drop: float) -> int | None:
    """Evaluations where a seed's val pass@10 falls more than ``drop`` below its own first evaluation;
    None where no run logged val pass@10 (a validation protocol without k = 10, as at real_smoke)."""
    if "val/pass@10" not in curves:
        return None
    n = 0
    for _, g in curves[(curves.study_run == study_run) & curves["val/pass@10"].notna()].groupby("seed"):
        v = g.sort_values("step")["val/pass@10"].to_numpy()
        n += int((v[1:] < v[0] - drop).sum())
    return n


# ---------------------------------------------------------------- tables and the report
def cell(s: Study, r: str, value, split: str, protocol: str, d: int = 3) -> str:
    """``point [lo, hi]`` of one run, or n/a where the export lacks that column (an older export)."""
    try:
        return ci(*s.point(r, value, split, protocol), d=d)
    except KeyError:
        return "n/a"


def diff_cell(s: Study, a: str, b: str, value, split: str = "test", d: int = 3) -> str:
    try:
        return fmt(*s.diff(a, b, value, split=split), d=d)
    except KeyError:
        return "n/a"


def final_table(s: Study, runs: list[str], names: dict, protocols=("policy",)) -> str:
    lines = ["| run | seeds | split, protocol | pass@1 | pass@10 | distinct correct / solved problem | "
             "effective programs | entropy / token | KL(π‖π_ref) |", "|---|---|---|---|---|---|---|---|---|"]
    for split in ("test", "ood"):
        for protocol in protocols:
            for r in runs:
                if not s.has(r, split, protocol):
                    continue
                cells = [cell(s, r, passk_value(1), split, protocol), cell(s, r, passk_value(10), split, protocol),
                         cell(s, r, "distinct_correct_per_solved", split, protocol, d=2),
                         cell(s, r, "effective_programs", split, protocol, d=2),
                         cell(s, r, "entropy_per_token", split, protocol), cell(s, r, "kl_ref", split, protocol)]
                n_seeds = s.m(r, "n", split, protocol).shape[0]
                lines.append(f"| {names.get(r, r)} | {n_seeds} | {split}, {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(s: Study, pairs: list[tuple[str, str]], names: dict) -> str:
    lines = ["| run | against | Δ test pass@1 | Δ test pass@10 | Δ distinct correct / solved | Δ effective programs "
             "| Δ ood pass@10 |", "|---|---|---|---|---|---|---|"]
    for a, b in pairs:
        if not (s.has(a) and s.has(b)):
            continue
        cells = [diff_cell(s, a, b, passk_value(1)), diff_cell(s, a, b, passk_value(10)),
                 diff_cell(s, a, b, "distinct_correct_per_solved", d=2), diff_cell(s, a, b, "effective_programs", d=2),
                 diff_cell(s, a, b, passk_value(10), split="ood") if s.has(a, "ood") and s.has(b, "ood") else "n/a"]
        lines.append(f"| {names.get(a, a)} | {names.get(b, b)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


MATCHED = ["pass@1", "pass@10", "distinct_correct_per_solved", "effective_programs", "entropy_per_token"]  # val/ metrics


def matched_table(s: Study, names: dict) -> str:
    """SPO online against each other value-free or PPO baseline of the main group, on validation, at
    matched samples and at matched KL, and which reading holds (claims C1, C2; F9)."""
    lines = ["| SPO against | val metric (δ) | κ* (nats) | Δ at matched samples | Δ at matched KL | reading |",
             "|---|---|---|---|---|---|"]
    spo = s.e["spo_online"]
    for b in [r for r in (s.e["ppo"], s.e["grpo"], s.e["rloo"]) if spo and r in set(s.curves.study_run)]:
        for metric in MATCHED:
            m = matched(s, spo, b, metric, DELTA[metric])
            if m is not None:
                lines.append(f"| {names.get(b, b)} | {metric} ({m.delta:g}) | {m.kl:.3g} | {fmt_mde(m.samples)} | "
                             f"{fmt_mde(m.at_kl)} | {m.reading} |")
    return "\n".join(lines) if len(lines) > 2 else f"No validation curves with {KL} in this export."


def correlation_table(s: Study) -> str:
    """Each diversity column's correlation with pass@10 across the export's per-problem rows."""
    r = diversity_correlation(s.pp)
    if r.empty:
        return "No diversity columns in this export."
    names = {**DIVERSITY, **UNCONDITIONED}
    lines = ["| per-problem column | what it counts | r with pass@10 |", "|---|---|---|"]
    lines += [f"| `{c}` | {names[c]} | {fmt(v, d=2)} |" for c, v in r.items()]
    return "\n".join(lines)


def wall_time(jobs: pd.DataFrame) -> tuple[float, float, float]:
    """(busy seconds: the length of the union of the jobs' running intervals, seconds from the first
    job's start to the last job's end, job-seconds in all).

    The busy time is the study's wall time: the span also counts gaps in which none of its jobs ran,
    such as the lr sweep's RL jobs between the shared SFT model and the study's own RL jobs.
    """
    start, end = (jobs.end_time - jobs.s).to_numpy(float), jobs.end_time.to_numpy(float)
    busy, reach = 0.0, -np.inf
    for a, b in sorted(zip(start, end)):  # sweep the intervals in start order, adding what is new
        if b > reach:
            busy += b - max(a, reach)
            reach = b
    return busy, float(end.max() - start.min()), float(jobs.s.sum())


def n_params(s: Study) -> str:
    b = s.bench[s.bench["size"] == s.bench["size"].iloc[0]] if not s.bench.empty else s.bench
    return f"{b.params_M.iloc[0]:.2f} M-parameter" if len(b) and "params_M" in b else "small"


def claims_table(rows: list[Claim]) -> str:
    lines = [f"| id | claim | figure | our number ({CI} CI) | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.id} | {r.claim} | {r.figure} | {r.number} | **{r.verdict}** |")
    return "\n".join(lines)


def bench_table(s: Study) -> str:
    if s.bench.empty:
        return "No benchmark CSV in this export."
    cols = ["variant", "size", "step_s", "step_s_vs_ppo", "update_s", "update_s_vs_ppo", "train_state_MB",
            "train_state_MB_vs_ppo", "peak_activations_MB", "peak_rss_above_baseline_MB"]
    return s.bench[[c for c in cols if c in s.bench]].to_markdown(index=False, floatfmt=".3g")


def exact_table(s: Study) -> str:
    if s.exact is None or s.exact.empty:
        return "No exact-testbed CSV in this export."
    exact = s.exact if "beta" in s.exact else s.exact.assign(beta=np.nan)  # an export from before β was recorded
    last = exact.sort_values("step").groupby(["beta", "run"], dropna=False).tail(1).set_index(["beta", "run"])
    cols = [c for c in ["exact/kl_to_optimum", "exact/kl_conditioned_to_policy", "exact/success_prob",
                        "exact/entropy"] if c in last]
    return last[["step", *cols]].sort_index().to_markdown(floatfmt=".4f")


def per_entry(s: Study, column: str, text: Callable = str, group: str | None = None) -> str:
    """A setting from runs.csv, stated once where every entry (of ``group``) ran with the same value,
    e.g. ``0.05``, and else the most common value with each other entry's own, by its label:
    ``0.05 (SPO online 0.1)`` (an entry whose seeds differ gives all its values: ``0.05/0.1``)."""
    runs = s.runs[s.runs.group == group] if group and (s.runs.group == group).any() else s.runs
    names = labels(s.data)
    per = {e: "/".join(text(v) for v in g[column].unique()) for e, g in runs.groupby("study_run", sort=False)}
    values = list(per.values())
    common = max(dict.fromkeys(values), key=values.count)  # the most common; a tie: the first entry's
    others = ", ".join(f"{names.get(e, e)} {v}" for e, v in per.items() if v != common)
    return f"{common} ({others})" if others else common


def lrs(s: Study) -> str:
    """The policy lr of each main entry, e.g. ``spo 0.0001, spo_half_online 3e-05, ppo 3e-05``."""
    main = s.runs[s.runs.group == "main"] if (s.runs.group == "main").any() else s.runs
    return ", ".join(f"{r} {float(lr):g}" for r, lr in main.groupby("study_run", sort=False).lr.first().items())


def seed_counts(s: Study) -> str:
    """Seeds of each main entry, then of each other group, e.g. ``spo 8, ppo 8, grpo 3; offpolicy 1``."""
    main = s.runs[s.runs.group == "main"]
    per_entry = ", ".join(f"{r} {k}" for r, k in main.groupby("study_run", sort=False).seed.nunique().items())
    rest = s.runs[s.runs.group != "main"].groupby("group", sort=False).seed.nunique()
    return "; ".join(x for x in (per_entry, ", ".join(f"{g} {k}" for g, k in rest.items())) if x)


TASK_TEXT = {"listdsl": "list-DSL program synthesis (\"code contests in miniature\")",
             "humaneval": "HumanEval (Python functions, run in the sandbox)",
             "codecontests": "CodeContests-format problems (stdin/stdout programs, run in the sandbox)"}


def task_line(s: Study) -> str:
    """What was trained on what: the miniature from scratch, or a pretrained model on a real task (the
    exported setup.csv)."""
    u = setup(s.data)
    task = TASK_TEXT.get(u["task"], u["task"])
    if not u["pretrained"]:
        return (f"- Task: {task}; the policy is a {n_params(s)} Llama trained from scratch by SFT, then RL from the "
                "SFT policy (= π_ref).")
    ref = ("SFT on the dataset's solutions, then RL from the SFT policy (= π_ref)" if u["sft"] == "True" else
           "SFT off: π_ref is the pretrained model itself, and RL starts from it")
    size = n_params(s).replace(" M-parameter", " M parameters")
    return f"- Task: {task}; the policy is the pretrained `{u['model']}` ({size}, `{u['pretrained']}`); {ref}."


def settings(s: Study) -> str:
    """The settings the runs ran with, from the export: per entry where entries differ."""
    protocols = [p for p in ("policy", "paper") if (s.pp.protocol == p).any()]
    evaluated = {p: sorted(set(s.pp.group[s.pp.protocol == p]) - {"sft"}) for p in protocols}
    splits = ("; test = unseen problems of seen behaviour classes, ood = unseen classes"
              if setup(s.data)["task"] == "listdsl" else "")
    count = lambda v: f"{int(v)}"  # noqa: E731
    updates, batch = per_entry(s, "updates", count), per_entry(s, "batch_size", count)
    lines = [
        task_line(s),
        f"- RL budget{'' if '(' in updates + batch else ', every run'}: {updates} updates × {batch} "
        f"trajectories, β {per_entry(s, 'beta', group='main')} in the "
        f"main comparison; policy lr per entry (the lr sweep's choice): {lrs(s)}; seeds: {seed_counts(s)}.",
        f"- Held-out evaluation: {int(s.pp.n.iloc[0])} samples per problem; "
        + "; ".join(f"`{p}` protocol ({protocol_text(s.data, p)}) for "
                    + ("every run" if set(evaluated[p]) >= set(s.runs.group) else f"SFT and the {', '.join(evaluated[p])} runs")
                    for p in protocols)
        + splits + ".",
        f"- Intervals: {CI} two-level bootstrap (seeds, then problems), {N_BOOT} resamples, generator seed {SEED} "
        "(analysis/stats.py).",
    ]
    if s.jobs is not None and len(s.jobs):
        busy, span, total = wall_time(s.jobs)
        per_rule = s.jobs.groupby("rule").s.sum().sort_values(ascending=False) / 60
        lines.append(f"- Wall time: **{busy / 60:.1f} min** with a job of this study running (the union of its "
                     f"jobs' running intervals; {span / 60:.1f} min from the first job's start to the last job's end, "
                     "which also counts gaps where no job of it ran, e.g. another study's jobs between the shared SFT "
                     f"model and its RL runs; Snakemake `benchmark:` files, jobs.csv; figures and report excluded), {total / 60:.1f} "
                     f"job-minutes in all ({', '.join(f'{r} {m:.1f}' for r, m in per_rule.items())}), "
                     f"{concurrency(s.jobs):.1f} jobs running at once on average.")
    return "\n".join(lines)


SCOPE = {"miniature": "This is a miniature (docs/design.md §3): it tests the direction of each claim, with intervals.",
         "real": "A pretrained model on a real code benchmark (docs/design.md §9); at a small budget its numbers test the "
                 "machinery, and the intervals say how little they can tell the methods apart."}


def render(s: Study, rows: list[Claim], scale: str, study: str, figures: Path, out: Path) -> str:
    """The whole report (markdown): settings, claims with their rules, the tables behind every figure."""
    names, e = labels(s.data), s.e
    rel = os.path.relpath(figures, out.parent)
    main = ["sft", *[r for r in entries(s.data, "main") if r in set(s.runs.study_run)]]
    offpolicy = list(s.runs[s.runs.group == "offpolicy"].study_run.unique())
    off = [r for r in (e["spo_online"], e["spo_half_online"], e["ppo"]) if r] + offpolicy
    abl = list(s.runs[s.runs.group == "ablation"].study_run.unique())
    against = lambda runs: [(r, s.reference(r)) for r in runs if s.reference(r)]  # noqa: E731  (runs.csv)
    rules = "\n".join(f"- **{r.id}**: {r.rule}" for r in rows)
    return f"""# spolab study results: scale `{scale}`, study `{study}`

Generated by `analysis/report.py` (Snakemake rule `report`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the
CSVs that `analysis/export.py` read out of MLflow. Do not edit: rerun `snakemake --cores 2`.
Paper: T. Cohen et al., *Soft Policy Optimization: Online Off-Policy RL for Sequence Models*, arXiv:2503.05453
(2025). {SCOPE["real" if setup(s.data)["pretrained"] else "miniature"]}

## Settings
{settings(s)}

## Claims

{claims_table(rows)}

How each verdict is computed. {POWER_RULE}
{rules}

## At matched KL(π‖π_ref) (F9, claims C1 and C2)
The main comparison holds samples fixed (equal updates and batches); PPO may simply move further
from π_ref. Here each seed's validation curve (logged every `eval_every` updates) is read at κ*, the
largest KL(π_θ‖π_ref) per sequence that every seed of both runs reaches (linear interpolation in KL
between checkpoints, at the first time the run reaches κ*, so no finer than the checkpoints), and
seed means are compared with a bootstrap over seeds ({CI} CI) paired by seed (seed s of every run
validates on the same problems with the same sampling seed). *Ahead* / *behind*: the CI of Δ = SPO −
baseline lies above / below 0; *level*: it contains 0; *undecided*: it lacks the power for δ (the rule
above). Where SPO is ahead only at matched samples, its lead comes with moving less from π_ref; where
it stays ahead at matched KL, moving less does not explain it.

{matched_table(s, names)}

## Main comparison (F1, F2, F3, F6, F9)
{final_table(s, main, names, ("policy", "paper"))}

Differences against PPO and against online SPO ({CI} CI):

{diff_table(s, [(e["spo_online"], e["ppo"]), (e["grpo"], e["ppo"]), (e["rloo"], e["ppo"]),
                (e["spo_half_online"], e["spo_online"]), (e["spo_online"], "sft")], names)}

![F1]({rel}/f1_pass_vs_fresh.png)
![F2]({rel}/f2_pass_at_k.png)
![F3]({rel}/f3_diversity.png)

Do the diversity columns measure diversity, or the pass rate again? Their correlation with pass@10 across
every per-problem row of the export (per-solved columns: over solved problems only):

{correlation_table(s)}

## Off-policy sources (F4, claims C3 and C6)
{final_table(s, off, names)}

Half-online SPO against online SPO (C6), and each source against its reference (runs.csv):

{diff_table(s, [(e["spo_half_online"], e["spo_online"]), *against(offpolicy)], names)}

![F4]({rel}/f4_offpolicy.png)

## Cost (F5, claim C4)
{bench_table(s)}

![F5]({rel}/f5_cost.png)

## Stability (F6, claim C5) and the frontier at matched KL (F9, claims C1 and C2)
![F6]({rel}/f6_stability.png)
![F9]({rel}/f9_frontier.png)

## Exact testbed (F7)
{exact_table(s)}

![F7]({rel}/f7_exact.png)

## SPO ablations (F8): loss, β, steps per batch, Q̂0 estimator, truncated importance weights
Each ablation against its reference (runs.csv):

{diff_table(s, against(abl), names)}

![F8]({rel}/f8_ablations.png)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="default")
    ap.add_argument("--study", default="default")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--figures", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--claims", type=Path, required=True)
    args = ap.parse_args()
    s = Study(args.data)
    rows = claims(s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, render(s, rows, args.scale, args.study, args.figures, args.out))
    args.claims.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.claims, claims_table(rows) + "\n")
    print(claims_table(rows))


if __name__ == "__main__":
    main()
