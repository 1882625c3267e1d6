"""Generate the claims report (``results/README.md`` for the default study) from the exported CSVs.

    python analysis/report.py --scale default --study default --data results/data \
        --figures results/figures --out results/README.md --claims results/tables/claims_default.md

Every number is computed here from the CSVs. Each claim C1…C6 is one function whose docstring is
its verdict rule: the report prints that docstring as the rule (its ``{name}`` fields filled from
the function's keyword defaults), so the rule is written once, next to the code that applies it.
Each rule names the effect δ it looks for (:data:`DELTA`) and reads the evidence in both directions
(stats.one_sided, stats.non_inferior): an interval that excludes δ refutes the claim whatever the
power, a significant effect smaller than δ is "negligible", and the power rule (stats.powered) guards
only a null reading, otherwise "undecided (underpowered)". C1 and C2 are also read at matched
KL(π‖π_ref), C3 and C6 are judged there (:func:`matched`, common.matched_kl, the same κ* as F9).
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
    EXACT,
    KL,
    UNCONDITIONED,
    Data,
    checkpoint_matrix,
    comparison_protocol,
    curve_matrix,
    diversity_correlation,
    entries,
    kl_matrix,
    labels,
    matched_kl,
    matrix,
    passk_value,
    per_problem,
    problem_classes,
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
    EPS,
    MAX_HALF_WIDTH,
    MIN_SEEDS,
    N_BOOT,
    POWER,
    Z_CI,
    count_test,
    detectable,
    diff_interval,
    exceedance,
    interval,
    non_inferior,
    one_sided,
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
    "spo_bce": "SPO with the bce terminal loss: the decisive table, beside SPO squared",
}
SEED = 0  # the report's bootstrap generator: every interval starts from np.random.default_rng(SEED)
CI = f"{CONFIDENCE * 100:g} %"
UNDECIDED = "undecided (underpowered)"
# a one-sided reading (stats.one_sided) -> the verdict of a single comparison
VERDICT = {"effect": "reproduced", "negligible": "negligible", "excluded": "not", "null": "not", "undecided": UNDECIDED}
CLUSTERED = ("ood",)  # splits whose problems are a sample of a few behaviour classes: intervals resample the classes
FALSE_ALARM = 0.05  # C5: the largest share of pairs of SFT re-validations a collapse threshold may flag
# δ, the effect each comparison looks for, per metric: the smallest difference that would matter
DELTA = {"pass@1": 0.02, "pass@10": 0.02,  # 2 points of pass@k: also C6's non-inferiority margin
         "distinct_correct_per_solved": 0.1, "functional_classes_per_solved": 0.1,  # ~10 % of SFT's ~1.1
         "effective_programs": 0.5,  # half a program among n = 20 samples
         "entropy_per_token": 0.02,  # nats per token, ~6 % of SFT's ~0.32
         "exact/entropy_correct": 0.1,  # nats: exp of it is the effective number of correct programs, and
         # 0.1 nats moves that number by ~0.1 around SFT's ~1.1, the distinct-correct δ above
         "log_step_s": 0.1,  # log step time: a ratio of e^-0.1 = 0.90, 10 % faster
         "seed_sd": 0.02}  # seed standard deviation of pass@10
POWER_RULE = (f"Each claim is read in both directions against the effect δ its rule names (a claimed difference "
              f"Δ ≥ δ; a claim that something is smaller is read with the signs flipped). **reproduced**: the {CI} "
              f"CI of Δ lies above 0 (significant at two-sided α = {ALPHA:g}) and Δ ≥ δ; **negligible**: the CI "
              f"lies above 0 but Δ < δ, a real effect smaller than the one that would matter; **not**: the CI lies "
              f"below δ, so it excludes the claimed effect, whatever the power; or the CI contains both 0 and δ and "
              f"the comparison is powered for δ: it had {POWER * 100:g} % power at α = {ALPHA:g} to detect δ and found "
              f"no significant effect. Power guards only that null reading: the minimum detectable effect MDE = "
              f"{DETECT_SE / Z_CI:.2f} × the {CI} CI half-width must be ≤ δ (half-width ≤ {MAX_HALF_WIDTH:.2f}·δ, since δ ≥ "
              f"(z_(1−α/2) + z_power)·SE = {DETECT_SE:.2f}·SE and the half-width is {Z_CI:.2f}·SE; analysis/stats.py); "
              f"where it is not, the verdict is **{UNDECIDED}** and the number gives the interval and its MDE. A "
              f"non-inferiority claim (C6) with margin δ reads reproduced where the CI lies above −δ, not where it "
              f"lies below −δ or contains −δ in a comparison powered for δ, undecided otherwise. Every verdict that "
              f"rests on an interval needs ≥ {MIN_SEEDS} seeds per run (one seed gives an interval without "
              f"seed-to-seed variation).")


class Study:
    """The export's tables, and intervals over its (seeds × problems) matrices."""

    def __init__(self, data: Data):
        self.data = data
        self.runs, self.pp, self.curves = table(data, "runs"), per_problem(data), table(data, "curves")
        self.jobs = table(data, "jobs", optional=True)
        bench = table(data, "bench", optional=True)
        if bench is not None and "fine_tuning" in bench and bench.fine_tuning.nunique() > 1:
            bench = bench[bench.fine_tuning == bench.fine_tuning.iloc[0]]  # C4 reads one way to train: the first
            # the benchmark ran (its fine_tuning list's order); F5 draws every one
        self.bench = bench if bench is not None else pd.DataFrame()
        self.exact = table(data, "exact", optional=True)
        self.compare = comparison_protocol(self.pp)  # what ablation and off-policy comparisons read (exact)
        played = roles(data)  # study.csv
        self.e = {role: played.get(role) for role in ROLES}  # role -> study entry (None: no entry plays it)

    def has(self, study_run, split="test", protocol="policy") -> bool:
        d = self.pp
        return bool(((d.study_run == study_run) & (d.split == split) & (d.protocol == protocol)).any())

    def measured(self, column: str) -> bool:
        """Whether the export has a per-problem column with a value on some row (an exact column is
        empty for a task that cannot enumerate its solutions, and absent from older exports)."""
        return column in self.pp and bool(self.pp[column].notna().any())

    def m(self, study_run, value, split="test", protocol="policy") -> np.ndarray:
        return matrix(self.pp, value, study_run=study_run, split=split, protocol=protocol)

    def seeds(self, *study_runs, split="test", protocol="policy") -> int:
        """The fewest seeds among these runs' evaluations (what the power rule counts)."""
        return min(self.m(r, "n", split, protocol).shape[0] for r in study_runs)

    def rng(self) -> np.random.Generator:
        """A fresh generator per interval: a number does not depend on which were computed before it."""
        return np.random.default_rng(SEED)

    def classes(self, study_run, split="test", protocol="policy") -> np.ndarray | None:
        """The behaviour class of each problem, where the split's intervals resample classes (:data:`CLUSTERED`)
        and the export has them (eval_per_problem's class_id); None: problems resampled as independent."""
        if split not in CLUSTERED:
            return None
        return problem_classes(self.pp, study_run=study_run, split=split, protocol=protocol)

    def clustered(self, split="ood") -> bool:
        """Whether this export's ``split`` intervals resample behaviour classes (its class_id is exported): for
        every run under every protocol it was evaluated with (an off-policy run may have the exact one only)."""
        pairs = self.pp.loc[self.pp.split == split, ["study_run", "protocol"]].drop_duplicates()
        return len(pairs) > 0 and all(self.classes(r, split, p) is not None for r, p in pairs.itertuples(index=False))

    def point(self, study_run, value, split="test", protocol="policy") -> tuple[float, float, float]:
        return interval(self.m(study_run, value, split, protocol), self.rng(),
                        clusters=self.classes(study_run, split, protocol))

    def diff(self, a, b, value, split="test", protocol="policy") -> tuple[float, float, float]:
        return diff_interval(self.m(a, value, split, protocol), self.m(b, value, split, protocol), self.rng(),
                             clusters=self.classes(a, split, protocol))

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
MEASURED: dict[str, Callable[[Study], str]] = {}  # id -> what its rule measured on this export (C5's threshold)


def claim(cid: str, text: str, figures: str) -> Callable[[ClaimFn], ClaimFn]:
    def register(fn: ClaimFn) -> ClaimFn:
        CLAIMS[cid] = (text, figures, fn)
        return fn
    return register


def rule(fn: ClaimFn, s: Study | None = None) -> str:
    """A claim function's docstring on one line, its ``{name}`` fields filled from its keyword defaults;
    with a study, followed by what the rule measured on it (a threshold calibrated on the export, :data:`MEASURED`)."""
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}
    text = " ".join(inspect.cleandoc(fn.__doc__).split()).format(ci=CI, **defaults)
    cid = next((c for c, (_, _, f) in CLAIMS.items() if f is fn), None)
    return f"{text} {MEASURED[cid](s)}" if s is not None and cid in MEASURED else text


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


def verdict(d: tuple[float, float, float], delta: float, seeds: int, sign: int = 1) -> str:
    """The verdict on a claimed difference Δ ≥ δ (``sign`` −1: a claimed Δ ≤ −δ) with interval ``d``
    = (Δ, lo, hi): reproduced / negligible / not / undecided (stats.one_sided, :data:`VERDICT`)."""
    p, lo, hi = d if sign > 0 else (-d[0], -d[2], -d[1])
    return VERDICT[one_sided(p, lo, hi, delta, seeds)]


def direction(d: tuple[float, float, float], delta: float, seeds: int) -> str:
    """How a difference a − b reads, in both directions: "ahead" / "behind" (the CI lies above / below 0
    and |Δ| ≥ δ), "ahead by < δ" / "behind by < δ" (significant, but smaller than δ), "level" (the CI
    contains 0 and lies within ±δ, or contains 0 in a comparison powered for δ), "undecided" (the CI
    contains 0 and reaches ±δ without the power, or fewer than MIN_SEEDS seeds)."""
    p, lo, hi = d
    if not (np.isfinite(lo) and np.isfinite(hi)) or seeds < MIN_SEEDS:
        return "undecided"
    if lo > EPS:
        return "ahead" if p >= delta else "ahead by < δ"
    if hi < -EPS:
        return "behind" if p <= -delta else "behind by < δ"
    return "level" if (-delta < lo and hi < delta) or powered(lo, hi, delta, seeds) else "undecided"


def reading(at_samples: str, at_kl: str) -> str:
    """Which reading of a difference holds: the one at matched samples, at matched KL, both or neither
    (``direction`` of each)."""
    if at_kl == "undecided" or at_samples == "undecided":
        which = " and ".join(w for w, v in (("matched samples", at_samples), ("matched KL", at_kl)) if v == "undecided")
        return f"undecided: {which} underpowered"
    if at_samples == at_kl:
        return f"both readings agree: {at_samples} at matched samples and at matched KL"
    lead = lambda v: v.startswith("ahead")  # noqa: E731
    if lead(at_samples) and not lead(at_kl):
        return f"ahead only at matched samples ({at_kl} at matched KL): the lead comes with moving less from π_ref"
    if lead(at_kl) and not lead(at_samples):
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
    with identical values, and later samples share its random numbers). Computed by common.matched_kl
    with the report's generator seed, the function F9 uses: the figure prints the same κ* and Δ. None
    where either run lacks the metric."""
    m = matched_kl(s.curves, a, b, f"val/{metric}", SEED)
    return None if m is None else Matched(metric, m.kappa, m.samples, m.at_kl, m.seeds, delta)


def matched_text(m: Matched | None, what: str) -> str:
    if m is None:
        return f"{what}: not logged with {KL}"
    return (f"{what} at matched samples {fmt_mde(m.samples)}, at matched KL (κ* {m.kl:.3g} nats) {fmt_mde(m.at_kl)}: "
            f"{m.reading}")


@claim("C1", "SPO beats PPO on pass@10 (PPO may win pass@1)", "F1, F2, F9")
def c1(s: Study, delta: float = DELTA["pass@10"]) -> tuple[str, str] | None:
    """Δ = pass@10(SPO online) − pass@10(PPO) on test under the paper protocol; claimed effect Δ ≥ δ =
    {delta}. reproduced: the {ci} CI of Δ lies above 0 and Δ ≥ {delta}; negligible: the CI lies above 0
    but Δ < {delta}; not: the CI lies below {delta} (it excludes the claimed effect, powered or not), or
    it contains 0 and {delta} in a comparison powered for δ; undecided otherwise. Beside it, not
    deciding: the policy protocol, Δ pass@1, and Δ validation pass@10 at matched samples and at matched
    KL(π‖π_ref) (F9), with which reading holds."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if not (s.has(spo, protocol="paper") and s.has(ppo, protocol="paper")):
        return None
    d = s.diff(spo, ppo, passk_value(10), protocol="paper")
    d_pol = fmt(*s.diff(spo, ppo, passk_value(10))) if s.has(spo) and s.has(ppo) else "n/a"
    d1 = s.diff(spo, ppo, passk_value(1), protocol="paper")
    v = verdict(d, delta, s.seeds(spo, ppo, protocol="paper"))
    kl = matched_text(matched(s, spo, ppo, "pass@10", delta), "val Δ pass@10")
    return (f"Δ pass@10 (paper) {fmt_mde(d)}; policy protocol {d_pol}; Δ pass@1 (paper) {fmt(*d1)}; {kl}", v)


def solved(g: pd.DataFrame) -> np.ndarray:
    """A ``matrix`` value: 1 where a problem was solved at least once (n_correct > 0), else 0; its mean
    over problems is the coverage."""
    return (g["n_correct"].to_numpy() > 0).astype(float)


@claim("C2", "SPO learns more diverse policies", "F3, F9")
def c2(s: Study, delta: float = DELTA["distinct_correct_per_solved"]) -> tuple[str, str] | None:
    """Δ = distinct correct programs per solved problem (diversity among correct programs, the paper's
    "softness": each run's mean over the problems it solves), SPO online − PPO on test (policy
    protocol); claimed effect Δ ≥ δ = {delta} programs, read as C1 reads its Δ (reproduced / negligible /
    not / undecided). Beside it, not deciding: Δ effective programs (exp of the entropy of all samples'
    programs, mostly wrong ones: it counts spread, not solutions), Δ entropy per token, the per-solved
    Δ on validation at matched samples and at matched KL(π‖π_ref) (F9), the exact entropy of π_θ among
    correct programs (spolab.eval.exact_mass, no sampling noise; read against δ 0.1 nats), and each run's coverage, the
    share of test problems solved at least once (n_correct > 0): the paper's "PPO collapses" has no
    other statistic here, and would show as PPO's coverage below SPO's."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if not (s.has(spo) and s.has(ppo)):
        return None
    try:
        dc = s.diff(spo, ppo, "distinct_correct_per_solved")
        da = s.diff(spo, ppo, "effective_programs")
    except KeyError:
        return "the export has no per-solved or effective-program columns (rerun the evaluation)", "n/a (not measured)"
    de = s.diff(spo, ppo, "entropy_per_token")
    exact = ""
    if s.measured("exact/entropy_correct"):
        dx = s.diff(spo, ppo, "exact/entropy_correct")
        exact = (f"Δ exact entropy among correct programs {fmt(*dx)} nats "
                 f"({direction(dx, DELTA['exact/entropy_correct'], s.seeds(spo, ppo))}, δ {DELTA['exact/entropy_correct']:g}); ")
    cov = {r: s.point(r, solved) for r in (spo, ppo)}
    dcov = s.diff(spo, ppo, solved)
    v = verdict(dc, delta, s.seeds(spo, ppo))
    kl = matched_text(matched(s, spo, ppo, "distinct_correct_per_solved", delta), "val Δ distinct correct / solved")
    return (f"Δ distinct correct / solved problem {fmt_mde(dc)}; beside it: {exact}Δ effective programs {fmt(*da, d=2)}; "
            f"Δ entropy/token {fmt(*de)}; {kl}; coverage (test problems solved at least once): SPO "
            f"{ci(*cov[spo])}, PPO {ci(*cov[ppo])}, Δ {fmt(*dcov)}", v)


def source_reading(m: Matched | None) -> str:
    """One off-policy source's Δ at matched KL against its reference, in C3's words: helps / negligible /
    not / undecided (stats.one_sided), or hurts (the CI lies below 0, ≥ MIN_SEEDS seeds)."""
    if m is None:
        return "undecided"
    p, lo, hi = m.at_kl
    if m.seeds >= MIN_SEEDS and hi < -EPS:
        return "hurts"
    return {"effect": "helps", "negligible": "negligible", "excluded": "not", "null": "not"}.get(
        one_sided(p, lo, hi, m.delta, m.seeds), "undecided")


@claim("C3", "SPO benefits from off-policy data", "F4")
def c3(s: Study, delta: float = DELTA["pass@10"]) -> tuple[str, str] | None:
    """for every off-policy source r (each entry of the offpolicy group against its reference in
    runs.csv, and half-online replay against online SPO), Δ_r = validation pass@10(r) − pass@10(its
    reference) at matched KL(π‖π_ref), κ* of the pair (a source that only makes SPO move less from π_ref
    is not credited for it, see C6), read as C1 reads its Δ against δ = {delta}: helps (CI above 0,
    Δ_r ≥ {delta}), negligible (CI above 0, Δ_r < {delta}), not (the CI lies below {delta}, or contains 0
    and {delta} when powered), hurts (the CI lies below 0), undecided (no curves, one seed, or
    unpowered). reproduced: at least one source helps and none hurts; partly: some help and some hurt;
    undecided: none helps and at least one is undecided (it might); otherwise negligible where at
    least one source is negligible and none hurts, else not. Beside it, not deciding: each source's Δ
    test pass@10 at matched samples (exact where the export has it: Study.compare)."""
    pairs = [(r, s.reference(r)) for r in s.runs[s.runs.group == "offpolicy"].study_run.unique()]
    pairs = [(r, ref) for r, ref in [*pairs, (s.e["spo_half_online"], s.e["spo_online"])]
             if ref and s.has(r, protocol=s.compare) and s.has(ref, protocol=s.compare)]
    if not pairs:
        return None
    ms = {r: matched(s, r, ref, "pass@10", delta) for r, ref in pairs}
    reads = {r: source_reading(m) for r, m in ms.items()}
    count = {w: [r for r in reads if reads[r] == w] for w in ("helps", "negligible", "not", "hurts", "undecided")}
    if count["helps"]:
        v = "partly" if count["hurts"] else "reproduced"
    elif count["undecided"]:
        v = UNDECIDED
    else:
        v = "negligible" if count["negligible"] and not count["hurts"] else "not"
    one_seed = sum(1 for r, ref in pairs if s.seeds(r, ref, protocol=s.compare) < MIN_SEEDS)
    tally = ", ".join(f"{len(rs)} {w}" for w, rs in count.items() if rs)
    per = []
    for r, ref in pairs:
        m, d = ms[r], s.diff(r, ref, passk_value(10), protocol=s.compare)
        at = f"κ* {m.kl:.3g}, Δ {fmt_mde(m.at_kl)}" if m else f"no val pass@10 with {KL}"
        per.append(f"{r} ({reads[r]}): {at}, test {fmt(*d)}")
    return (f"Δ val pass@10 at matched KL, of {len(pairs)} sources: {tally} ({one_seed} with one seed); beside it, "
            f"Δ test {'exact ' if s.compare == 'exact' else ''}pass@10 at matched samples; " + "; ".join(per), v)


def q0_cost(s: Study) -> tuple[float | None, float, str]:
    """(Q̂0's time in seconds: the q0 job of jobs.csv, None where the export has none; the mean number of
    jobs running beside it; its π_ref samples as text, from setup.csv's q0.n_ref and q0.n_prompts where
    the export records them)."""
    u = setup(s.data)
    n_ref, n_prompts = u.get("q0.n_ref", ""), u.get("q0.n_prompts", "")
    samples = (f"{int(float(n_ref)) * int(float(n_prompts))} π_ref samples ({int(float(n_ref))} per rl prompt × "
               f"{int(float(n_prompts))} prompts)" if n_ref and n_prompts else
               "its π_ref samples (n_ref per rl prompt) are not recorded in this export (setup.csv predates "
               "q0.n_ref and q0.n_prompts)")
    if s.jobs is None or not (s.jobs.rule == "q0").any():
        return None, np.nan, samples
    return float(s.jobs.loc[s.jobs.rule == "q0", "s"].sum()), concurrency(s.jobs, "q0"), samples


@claim("C4", "SPO is faster and more memory efficient", "F5")
def c4(s: Study, delta: float = DELTA["log_step_s"]) -> tuple[str, str] | None:
    """Judged on the benchmark (bench.csv: each algorithm's update steps in one process, alone on the
    machine, medians; no interval), with Q̂0 in SPO's cost: SPO needs Q̂0(x) of every rl prompt, from
    π_ref samples drawn once before training (the q0 job). Time of one run: T_SPO = updates × SPO's
    benchmark step time + the q0 job's time (jobs.csv), T_PPO = updates × PPO's benchmark step time
    (updates: runs.csv); memory: the training-state ratio SPO / PPO (exact bytes of parameters,
    gradients and Adam moments of every model). An advantage counts where its ratio is ≤ e^−{delta}
    (a log ratio of −δ, δ = {delta}). reproduced: both the time ratio T_SPO / T_PPO and the memory ratio are
    ≤ e^−{delta}; partly: one of them; negligible: neither, but at least one is below 1; not: neither is
    below 1. Beside it, not deciding: the step-time ratio without Q̂0, Q̂0 shared by every SPO run of the
    study, Q̂0's samples, SPO at PPO's optimiser steps per update, and the step-time ratio inside the
    study (curves perf/step_s), which swings with whatever else runs on the machine."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if s.bench.empty or not {spo, ppo} <= set(s.runs.study_run):
        return None
    size = s.bench["size"].iloc[0]  # the study's model size comes first (spolab.bench: sft_size)
    b = s.bench[s.bench["size"] == size].set_index("variant")  # spolab.bench's variants: algorithms, not entries
    if not {"spo", "ppo"} <= set(b.index):
        return None
    t, u, mem, rss = (b.loc["spo", k] / b.loc["ppo", k] for k in
                      ("step_s", "update_s", "train_state_MB", "peak_rss_above_baseline_MB"))
    updates = s.runs.groupby("study_run").updates.first()
    t_spo, t_ppo = float(updates[spo]) * b.loc["spo", "step_s"], float(updates[ppo]) * b.loc["ppo", "step_s"]
    q0_s, q0_along, q0_samples = q0_cost(s)
    fresh = s.runs.groupby("study_run").fresh_samples.mean()
    n_spo = int((s.runs.algo == "spo").sum())  # every SPO run of the study reads the one Q̂0
    eq = ""
    if "spo_ppo_steps" in b.index:  # SPO at PPO's optimiser steps per update: the speed claim at equal steps
        n = b.loc["spo_ppo_steps"].get("opt_steps_per_update", float("nan"))
        eq = (f"; at PPO's {n:.0f} optimiser steps per update (variant spo_ppo_steps): step time "
              f"×{b.loc['spo_ppo_steps', 'step_s'] / b.loc['ppo', 'step_s']:.2f}")
    study = ""
    if {spo, ppo} <= set(s.curves.study_run) and "perf/step_s" in s.curves:
        (xa, ta), (xb, tb) = (curve_matrix(s.curves, r, "perf/step_s") for r in (spo, ppo))
        steps = np.intersect1d(xa, xb)  # the updates both logged
        dt = diff_interval(*(np.log(m[:, np.isin(x, steps)]) for x, m in ((xa, ta), (xb, tb))), s.rng())
        study = (f"; context only, inside the study{alongside(s)}: step time ×{np.exp(dt[0]):.2f} "
                 f"[{np.exp(dt[1]):.2f}, {np.exp(dt[2]):.2f}]")
    bench = (f"benchmark, model `{size}`: step time ×{t:.2f} without Q̂0 (update ×{u:.2f}), training state "
             f"×{mem:.2f}, peak RSS above baseline ×{rss:.2f} (SPO / PPO)")
    if q0_s is None:
        return (f"{bench}; Q̂0's time is not in this export (jobs.csv has no q0 job), so the time of a run cannot "
                f"be compared{eq}{study}", "undecided (Q̂0 not measured)")
    ratio = (t_spo + q0_s) / t_ppo
    shared = (t_spo + q0_s / max(n_spo, 1)) / t_ppo
    cut = np.exp(-delta)
    wins = int(ratio <= cut) + int(mem <= cut)
    v = ("reproduced" if wins == 2 else "partly" if wins == 1 else
         "negligible" if min(ratio, mem) < 1 else "not")
    return (f"time of one run with Q̂0: ×{ratio:.2f} (SPO {float(updates[spo]):.0f} × {b.loc['spo', 'step_s']:.3f} s "
            f"+ Q̂0 {q0_s:.1f} s, q0 job with {q0_along:.1f} jobs running on average, vs PPO "
            f"{float(updates[ppo]):.0f} × {b.loc['ppo', 'step_s']:.3f} s); training state ×{mem:.2f}; {bench}; Q̂0 "
            f"shared by the study's {n_spo} SPO runs: ×{shared:.2f}; samples of one run: SPO {fresh[spo]:.0f} fresh "
            f"+ Q̂0's, {q0_samples}; PPO {fresh[ppo]:.0f}{eq}{study}", v)


@dataclass
class Calibration:
    """C5's collapse threshold, set on repeated validations of the SFT policy (:func:`collapse_threshold`)."""
    drop: float  # a collapse event: val pass@10 falls more than this below the run's own step 0
    false_alarm: float  # the share of ordered pairs of SFT re-validations that fall more than ``drop``
    pairs: int  # ordered pairs of step-0 validations with different sampling seeds
    repeats: int  # distinct step-0 validations (one per sampling seed)
    sd: float  # their standard deviation (ddof 1)


def collapse_threshold(curves: pd.DataFrame, rate: float = FALSE_ALARM, metric: str = "val/pass@10"
                       ) -> Calibration | None:
    """The collapse threshold above the validation noise. Every RL run validates the SFT policy at step 0
    with its seed's sampling seed (runs of one seed share it and log the same value), so the distinct
    step-0 values of different seeds are repeats of one measurement of one policy: a drop between two
    of them is noise. The threshold is the smallest drop that at most ``rate`` of their ordered pairs
    exceed (stats.exceedance). None where fewer than two seeds validated (or no val pass@10)."""
    if metric not in curves:
        return None
    z = curves[(curves.step == 0) & curves[metric].notna()].drop_duplicates(["seed", metric])
    if z.seed.nunique() < 2:
        return None
    drop, share, pairs = exceedance(z[metric].to_numpy(), z.seed.to_numpy(), rate)
    return Calibration(drop, share, pairs, len(z), float(z[metric].std(ddof=1)))


def calibration_text(s: Study) -> str:
    """C5's threshold as measured on this export (printed after its rule)."""
    c = collapse_threshold(s.curves)
    if c is None:
        return "On this export: no repeated step-0 validation, so collapse events are not counted."
    z = c.drop / (np.sqrt(2) * c.sd) if c.sd > 0 else np.nan
    return (f"On this export: {c.repeats} step-0 validations of the SFT policy (one per sampling seed; SD "
            f"{c.sd:.3f}, so SD of a difference {np.sqrt(2) * c.sd:.3f}) give d = {c.drop:.3f} "
            f"({z:.1f} SDs of a difference); its false-alarm rate: {c.false_alarm * 100:.1f} % of their "
            f"{c.pairs} ordered pairs fall more than d.")


@claim("C5", "SPO is more stable", "F6")
def c5(s: Study, delta: float = DELTA["seed_sd"], false_alarm: float = FALSE_ALARM,
       alpha: float = ALPHA) -> tuple[str, str] | None:
    """Δ = seed standard deviation of final test pass@10 (policy protocol; each seed's mean over
    problems) of SPO online − of PPO, with the two-level bootstrap; claimed effect Δ ≤ −{delta}, read
    as C1 reads its Δ with the signs flipped (δ = {delta}): SD reproduced (the CI lies below 0 and Δ ≤ −{delta}),
    negligible (below 0, Δ > −{delta}), not (the CI lies above −{delta}, or contains 0 and −{delta} when
    powered) or undecided. Collapse events: evaluations where a seed's val pass@10 falls more than d
    below its own step 0, d set above the validation noise: the step-0 validations of different seeds
    are the SFT policy validated again with another sampling seed, and d is the smallest drop that at
    most {false_alarm} of their ordered pairs exceed. SPO has fewer (more) events than PPO where an exact
    test of the two counts, per evaluation, rejects equal rates at two-sided α = {alpha} (stats.count_test);
    a difference of a few events is noise. reproduced: the SD reads reproduced and SPO has not more
    events; partly: the SD reads reproduced but SPO has more events, or the SD reads negligible or not
    and SPO has fewer events; otherwise the SD's reading (negligible, not or undecided). With few seeds
    an SD is a weak estimate: the interval says how weak."""
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    if not (s.has(spo) and s.has(ppo)):
        return None
    a, b = s.m(spo, passk_value(10)), s.m(ppo, passk_value(10))
    d = diff_interval(a, b, s.rng(), stat=seed_sd) if min(len(a), len(b)) > 1 else (np.nan, np.nan, np.nan)
    sd = {r: float(seed_sd(m)) if len(m) > 1 else np.nan for r, m in (("spo", a), ("ppo", b))}
    v = verdict(d, delta, min(len(a), len(b)), sign=-1)
    cal = collapse_threshold(s.curves, false_alarm)
    if cal is None:
        events = "collapse events: not counted (no val pass@10 logged, or no repeated step-0 validation)"
    else:
        ev = {r: collapse_events(s.curves, e, cal.drop) for r, e in (("spo", spo), ("ppo", ppo))}
        n = {r: evaluations(s.curves, e) for r, e in (("spo", spo), ("ppo", ppo))}
        p_ev = count_test(ev["spo"], ev["ppo"], n["spo"], n["ppo"])
        fewer = p_ev < alpha and ev["spo"] / n["spo"] < ev["ppo"] / n["ppo"]
        more = p_ev < alpha and ev["spo"] / n["spo"] > ev["ppo"] / n["ppo"]
        events = (f"collapse events (a drop of more than {cal.drop:.3f}, false-alarm rate "
                  f"{cal.false_alarm * 100:.1f} % on SFT re-validations): SPO {ev['spo']} of {n['spo']} evaluations, "
                  f"PPO {ev['ppo']} of {n['ppo']} (exact test p = {p_ev:.2g})")
        if v == "reproduced" and more:
            v = "partly"
        elif v in ("negligible", "not") and fewer:
            v = "partly"
    return f"seed SD of test pass@10: SPO {fmt(sd['spo'])}, PPO {fmt(sd['ppo'])}, Δ {fmt_mde(d)}; {events}", v


MEASURED["C5"] = calibration_text


def at_kappa(s: Study, study_run: str, column: str, kappa: float) -> float:
    """Seed mean of a logged column (e.g. data/fresh_samples) at the first time each seed's KL reached κ*."""
    return float(np.nanmean(kl_matrix(s.curves, study_run, column, [kappa])))


@claim("C6", "half-online SPO is at least as good as online SPO with half the fresh samples", "F1, F4, F9")
def c6(s: Study, margin: float = DELTA["pass@10"]) -> tuple[str, str] | None:
    """Judged at matched KL(π‖π_ref): in the same updates half-online SPO moves much less from π_ref
    than online SPO, and pass@10 depends on how far a policy moved, so a difference at matched samples
    mixes the data's effect with the distance moved. Δ = validation pass@10(SPO half-online) −
    pass@10(SPO online) at κ*, the largest KL every seed of both reaches (common.matched_kl), with
    non-inferiority margin δ = {margin}; and F_h, F_o: the fresh samples each had drawn when it reached
    κ* (curves data/fresh_samples read at κ* like the metric; seed means). reproduced: the CI of Δ lies
    above −{margin} and F_h ≤ F_o; partly: the CI lies above −{margin} but F_h > F_o (as good for its KL,
    but online SPO got there with fewer fresh samples); not: the CI lies below −{margin}, or contains it
    in a comparison powered for the margin; undecided otherwise. Beside it, not deciding: Δ pass@1 at
    κ*, Δ test pass@10 and pass@1 at matched samples (equal updates, half the fresh samples), and each
    run's final KL."""
    half, spo = s.e["spo_half_online"], s.e["spo_online"]
    if not (s.has(half, protocol=s.compare) and s.has(spo, protocol=s.compare)):
        return None
    m10, m1 = (matched(s, half, spo, k, margin) for k in ("pass@10", "pass@1"))
    d10, d1 = (s.diff(half, spo, passk_value(k), protocol=s.compare) for k in (10, 1))
    fresh = s.runs.groupby("study_run").fresh_samples.mean()
    beside = (f"at matched samples (test, {s.compare} protocol, {fresh[half]:.0f} vs {fresh[spo]:.0f} fresh samples): "
              f"Δ pass@10 {fmt(*d10)}, Δ pass@1 {fmt(*d1)}")
    if m10 is None or "data/fresh_samples" not in s.curves:
        return f"no val pass@10 with {KL} to compare at matched KL; {beside}", UNDECIDED
    reading = non_inferior(*m10.at_kl, margin, m10.seeds)
    f_half, f_spo = (at_kappa(s, r, "data/fresh_samples", m10.kl) for r in (half, spo))
    if reading == "shown":
        v = "reproduced" if f_half <= f_spo else "partly"
    else:
        v = "not" if reading in ("excluded", "null") else UNDECIDED
    final = {r: float(checkpoint_matrix(s.curves, r, KL).mean()) for r in (half, spo)}
    p1 = f", Δ val pass@1 {fmt(*m1.at_kl)}" if m1 is not None else ""
    return (f"at matched KL (κ* {m10.kl:.3g} nats): Δ val pass@10 {fmt_mde(m10.at_kl)}{p1}; fresh samples when "
            f"reaching κ*: half-online {f_half:.0f}, online {f_spo:.0f}; {beside}; final KL half-online "
            f"{final[half]:.3f}, online {final[spo]:.3f}", v)


def claims(s: Study) -> list[Claim]:
    """Every claim the export can test, in id order."""
    out = []
    for cid, (text, figures, fn) in CLAIMS.items():
        try:
            r = fn(s)
        except KeyError as e:  # a value this export does not measure (pass@10 from n 2 samples at real_smoke)
            r = (f"not measured here: {e.args[0]}", "n/a (not measured)")
        if r is not None:
            out.append(Claim(cid, text, figures, r[0], r[1], rule(fn, s)))
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


def evaluations(curves: pd.DataFrame, study_run: str) -> int:
    """The validations after step 0 of every seed of a run (where a collapse event can happen)."""
    d = curves[(curves.study_run == study_run) & curves["val/pass@10"].notna()]
    return int(sum(len(g) - 1 for _, g in d.groupby("seed")))


def collapse_events(curves: pd.DataFrame, study_run: str, drop: float) -> int | None:
    """Evaluations where a seed's val pass@10 falls more than ``drop`` below its own first evaluation
    (by more than ``drop`` + 1e-9, as stats.exceedance counts a drop); None where no run logged val
    pass@10 (a validation protocol without k = 10, as at real_smoke)."""
    if "val/pass@10" not in curves:
        return None
    n = 0
    for _, g in curves[(curves.study_run == study_run) & curves["val/pass@10"].notna()].groupby("seed"):
        v = g.sort_values("step")["val/pass@10"].to_numpy()
        n += int((v[0] - v[1:] > drop + 1e-9).sum())
    return n


# ---------------------------------------------------------------- tables and the report
def cell(s: Study, r: str, value, split: str, protocol: str, d: int = 3) -> str:
    """``point [lo, hi]`` of one run, or n/a where the export lacks that column (an older export)."""
    try:
        return ci(*s.point(r, value, split, protocol), d=d)
    except KeyError:
        return "n/a"


def diff_cell(s: Study, a: str, b: str, value, split: str = "test", d: int = 3, protocol: str = "policy") -> str:
    try:
        return fmt(*s.diff(a, b, value, split=split, protocol=protocol), d=d)
    except KeyError:
        return "n/a"


FINAL_SAMPLED = [("distinct_correct_per_solved", "distinct correct / solved problem", 2),
                 ("effective_programs", "effective programs", 2), ("entropy_per_token", "entropy / token", 3),
                 ("kl_ref", "KL(π‖π_ref)", 3)]  # final_table's columns after pass@1 and pass@10, sampled protocols
FINAL_EXACT = [("exact/success_mass", "exact success mass", 3), ("exact/entropy_correct", "exact entropy among correct", 3),
               ("exact/kl_ref_correct", "exact KL(π_ref|correct ‖ π_θ|correct)", 3)]  # under the exact protocol


def final_table(s: Study, runs: list[str], names: dict, protocols=("policy",)) -> str:
    """Each run's final metrics per split and protocol: pass@1 and pass@10 (exact under the exact protocol),
    then the sampled diversity and KL columns, or under the exact protocol the exact success mass and the
    entropy and KL among correct programs."""
    tail = FINAL_EXACT if tuple(protocols) == ("exact",) else FINAL_SAMPLED
    head = ["run", "seeds", "split, protocol", "pass@1", "pass@10", *[h for _, h, _ in tail]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split in ("test", "ood"):
        for protocol in protocols:
            for r in runs:
                if not s.has(r, split, protocol):
                    continue
                cols = tail if protocol == "exact" else FINAL_SAMPLED
                cells = [cell(s, r, passk_value(1), split, protocol), cell(s, r, passk_value(10), split, protocol),
                         *[cell(s, r, c, split, protocol, d=d) for c, _, d in cols]]
                n_seeds = s.m(r, "n", split, protocol).shape[0]
                lines.append(f"| {names.get(r, r)} | {n_seeds} | {split}, {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(s: Study, pairs: list[tuple[str, str]], names: dict, protocol: str = "policy") -> str:
    """Δ = run − against on test (and ood pass@10) under ``protocol``: pass@k and the sampled diversity
    columns, or under the exact protocol exact pass@k and the exact entropy and KL among correct programs."""
    if protocol == "exact":
        cols = [(passk_value(1), "Δ test exact pass@1", 3), (passk_value(10), "Δ test exact pass@10", 3),
                ("exact/entropy_correct", "Δ exact entropy among correct", 3),
                ("exact/kl_ref_correct", "Δ exact KL among correct", 3)]
    else:
        cols = [(passk_value(1), "Δ test pass@1", 3), (passk_value(10), "Δ test pass@10", 3),
                ("distinct_correct_per_solved", "Δ distinct correct / solved", 2),
                ("effective_programs", "Δ effective programs", 2)]
    head = ["run", "against", *[h for _, h, _ in cols], f"Δ ood {'exact ' if protocol == 'exact' else ''}pass@10"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a, b in pairs:
        if not (s.has(a, protocol=protocol) and s.has(b, protocol=protocol)):
            continue
        cells = [diff_cell(s, a, b, v, d=d, protocol=protocol) for v, _, d in cols]
        cells.append(diff_cell(s, a, b, passk_value(10), split="ood", protocol=protocol)
                     if s.has(a, "ood", protocol) and s.has(b, "ood", protocol) else "n/a")
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
    return last[["step", *cols]].sort_index().reset_index().to_markdown(index=False, floatfmt=".4f")


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


def against_reference(s: Study, names: dict) -> str:
    """A pretrained π_ref (SFT off): each run's final test pass@1 and mean reward (the task's reward: partial
    credit with task.reward=fraction) against π_ref's on the same problems (paired bootstrap over problems, under
    the comparison protocol), the fresh samples' reward over its updates (means of the first and last third of
    the updates: what the policy earned while training), and its validation pass@1 and mean reward, first and
    last validation."""
    protocol = s.compare
    head = ["run", "seeds", "test pass@1", "Δ pass@1 vs π_ref", "test mean reward", "Δ mean reward vs π_ref",
            "fresh reward, first → last third of updates", "val pass@1, first → last", "val mean reward, first → last"]
    lines = [f"Test split, {protocol} protocol ({CI} CI, bootstrap over problems, paired with π_ref):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ends(r: str, column: str, third: bool) -> str:
        c = s.curves[(s.curves.study_run == r)] if column in s.curves else None
        if c is None or c[column].notna().sum() == 0:
            return "n/a"
        by = c.dropna(subset=[column]).groupby("step")[column].mean().sort_index()
        if not third:
            return f"{by.iloc[0]:.3f} → {by.iloc[-1]:.3f}"
        k = max(1, len(by) // 3)
        return f"{by.iloc[:k].mean():.3f} → {by.iloc[-k:].mean():.3f}"

    for r in [x for x in entries(s.data) if s.has(x, protocol=protocol)]:
        n_seeds = s.m(r, "n", "test", protocol).shape[0]
        lines.append(f"| {names.get(r, r)} | {n_seeds} | {cell(s, r, passk_value(1), 'test', protocol)} | "
                     f"{diff_cell(s, r, 'sft', passk_value(1), protocol=protocol)} | "
                     f"{cell(s, r, 'mean_reward', 'test', protocol)} | {diff_cell(s, r, 'sft', 'mean_reward', protocol=protocol)} | "
                     f"{ends(r, 'rollout/reward', True)} | {ends(r, 'val/pass@1', False)} | {ends(r, 'val/mean_reward', False)} |")
    sft = ("| π_ref (SFT off) | 1 | " + cell(s, "sft", passk_value(1), "test", protocol) + " | | "
           + cell(s, "sft", "mean_reward", "test", protocol) + " | | | | |")
    lines.insert(4, sft)
    return "\n".join(lines)


def settings(s: Study) -> str:
    """The settings the runs ran with, from the export: per entry where entries differ."""
    protocols = [p for p in ("policy", "paper", "exact") if (s.pp.protocol == p).any()]
    names, order = labels(s.data), entries(s.data)

    def who(p: str) -> str:  # which runs and splits protocol p evaluated
        rows = s.pp[s.pp.protocol == p]
        runs = set(rows.study_run) - {"sft"}
        where = "every run" if runs >= set(s.runs.study_run) else "SFT and " + ", ".join(
            names.get(r, r) for r in order if r in runs)
        splits = [sp for sp in ("test", "ood", "val") if (rows.split == sp).any()]
        return f"{where}, on {' and '.join(splits)}"

    sampled = s.pp.n[s.pp.protocol != "exact"]
    splits = ("; test = unseen problems of seen behaviour classes, ood = unseen classes"
              if setup(s.data)["task"] == "listdsl" else "")
    count = lambda v: f"{int(v)}"  # noqa: E731
    updates, batch = per_entry(s, "updates", count), per_entry(s, "batch_size", count)
    lines = [
        task_line(s),
        f"- RL budget{'' if '(' in updates + batch else ', every run'}: {updates} updates × {batch} "
        f"trajectories, β {per_entry(s, 'beta', group='main')} in the "
        f"main comparison; policy lr per entry (the lr sweep's choice): {lrs(s)}; seeds: {seed_counts(s)}.",
        f"- Held-out evaluation: {int(sampled.iloc[0]) if len(sampled) else 0} samples per problem; "
        + "; ".join(f"`{p}` protocol ({protocol_text(s.data, p) if p != 'exact' else 'no sampling: pass@k from the exact success mass'}) for "
                    + who(p) for p in protocols)
        + splits + ".",
        f"- Intervals: {CI} two-level bootstrap (seeds, then problems), {N_BOOT} resamples, generator seed {SEED} "
        f"(analysis/stats.py){ood_text(s)}.",
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
         "real": "A pretrained model on a real code benchmark (docs/design.md §9); at one seed and a small budget it "
                 "says whether each method moves the model on the real task (the section against π_ref), not which "
                 "method is better: the intervals say how little they can tell the methods apart."}


def ood_text(s: Study) -> str:
    """How the ood intervals treat its problems, for the settings: by behaviour class where the export
    has each problem's class (eval_per_problem's class_id), else a warning that they are too narrow."""
    if not (s.pp.split == "ood").any():
        return ""
    if s.clustered("ood"):
        d = s.pp[s.pp.split == "ood"].drop_duplicates("problem_id")
        return (f"; on ood, whose {len(d)} problems come from {d.class_id.nunique()} held-out behaviour classes, "
                "each replicate resamples the classes, then the problems within each drawn class (stats.cluster_columns): "
                "the problems of one class are not independent draws")
    return ("; **ood intervals treat its problems as independent**: ood's problems come from a few held-out "
            "behaviour classes, and this export has no class per problem (eval_per_problem has no class_id; "
            "analysis/export.py writes it since), so they cannot resample the classes and are too narrow")


# ---------------------------------------------------------------- the decisive table
EXACT_COLUMNS = [("exact/success_mass", "exact success mass P_θ(correct)"),
                 ("exact/entropy_correct", "exact entropy among correct (nats)"),
                 ("exact/kl_ref_correct", "exact KL(π_ref|correct ‖ π_θ|correct)")]
SAMPLED_COLUMNS = [(passk_value(1), "pass@1"), (passk_value(10), "pass@10"), ("kl_ref", "KL(π‖π_ref)")]
_ALGO_ORDER = {("spo", "squared"): 0, ("spo", "bce"): 1, ("ppo", ""): 2, ("grpo", ""): 3, ("rloo", ""): 4}


def online_settings(s: Study) -> pd.DataFrame:
    """One row per online entry of the main and ablation groups evaluated on test: its algorithm, loss
    (SPO's), β and steps per batch (runs.csv), ordered by β, then SPO squared, SPO bce, PPO, GRPO, RLOO."""
    r = s.runs[(s.runs.data_mix == "online") & s.runs.group.isin(["main", "ablation"])]
    r = r[[s.has(x, protocol=s.compare) for x in r.study_run]]
    first = r.groupby("study_run", sort=False).first().reset_index()
    first["loss"] = np.where(first.algo == "spo", first["loss"].fillna("squared"), "")
    first["order"] = [_ALGO_ORDER.get((a, l), 9) for a, l in zip(first.algo, first.loss)]
    return first.sort_values(["beta", "order", "steps_per_batch"]).reset_index(drop=True)


def same_beta_ppo(settings: pd.DataFrame, row) -> str | None:
    """The PPO entry at the row's β with PPO's default step count (the first such entry), None if none."""
    p = settings[(settings.algo == "ppo") & (settings.beta == row.beta)]
    return None if p.empty or row.algo == "ppo" else str(p.study_run.iloc[0])


def final_kl(s: Study, study_run: str) -> str:
    """KL(π‖π_ref) at a run's last validation point (curves' val/kl_ref), the seed mean with a 95 % bootstrap
    interval over seeds; every RL entry logs it, sampled evaluation or not."""
    try:
        _, kl = curve_matrix(s.curves, study_run, KL)
    except KeyError:
        return "–"
    last = kl[:, -1][np.isfinite(kl[:, -1])]
    return ci(*interval(last[:, None], s.rng())) if len(last) else "–"


def decisive_table(s: Study, names: dict) -> str:
    """Every online setting (SPO squared and bce, PPO at each β; GRPO and RLOO; SPO with more steps per
    batch) on test: exact success mass, entropy and KL among correct programs and exact pass@1 and pass@10
    (spolab.eval.exact_mass: every enumerated correct program teacher-forced, no sampling noise; the exact
    protocol, which every entry has, Study.compare), sampled pass@1 and pass@10 under the policy protocol
    where the entry was sampled (main entries), and KL(π‖π_ref) at the last validation point, each a seed mean
    with its 95 % interval (seeds, then problems); then Δ pass@10 against PPO at the same β at matched samples
    (test, exact) and at matched KL (validation, :func:`matched`)."""
    st = online_settings(s)
    if st.empty:
        return "No online entries evaluated on test in this export."
    exact = [(c, h) for c, h in EXACT_COLUMNS if s.measured(c)]
    if s.compare == "exact":
        exact += [(passk_value(1), "exact pass@1"), (passk_value(10), "exact pass@10")]
    sampled = SAMPLED_COLUMNS[:2]
    which = "exact " if s.compare == "exact" else ""
    head = (["entry", "β", "seeds"] + [h for _, h in exact] + [f"{h} (sampled)" for _, h in sampled] +
            ["KL(π‖π_ref), val, last", f"Δ {which}pass@10 vs PPO at its β (test)", "Δ val pass@10 vs PPO at matched KL"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in st.itertuples():
        run = row.study_run
        cells = [names.get(run, run), f"{row.beta:g}", str(s.seeds(run, protocol=s.compare))]
        cells += [ci(*s.point(run, c, protocol=s.compare)) for c, _ in exact]
        cells += [ci(*s.point(run, c)) if s.has(run) else "–" for c, _ in sampled]
        cells.append(final_kl(s, run))
        ppo = same_beta_ppo(st, row)
        if ppo is None:
            cells += ["–", "–"]
        else:
            try:
                cells.append(ci(*s.diff(run, ppo, passk_value(10), protocol=s.compare)))
            except KeyError:  # pass@10 not measured (n < 10)
                cells.append("n/a")
            m = matched(s, run, ppo, "pass@10", DELTA["pass@10"])
            cells.append("not logged" if m is None else f"{ci(*m.at_kl)} (κ* {m.kl:.3g})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decisive_summary(s: Study, names: dict) -> str:
    """The decisive table's answer in words: which SPO settings beat PPO at the same β, on test under the
    policy protocol, on sampled pass@10 and on the exact entropy among correct programs (the paper's
    softness), each Δ = SPO − PPO read in both directions against its δ (:data:`DELTA`, :func:`direction`):
    beats (the 95 % CI lies above 0 and Δ ≥ δ), beats by < δ (significant but smaller than δ: negligible),
    level, trails by < δ, trails, or undecided (the CI reaches ±δ without the power to call it level)."""
    st = online_settings(s)
    metrics = [(passk_value(10), f"{'exact ' if s.compare == 'exact' else ''}pass@10", DELTA["pass@10"], s.compare)]
    if s.compare == "exact":
        metrics.append((passk_value(10), "sampled pass@10 (policy protocol, where sampled)", DELTA["pass@10"], "policy"))
    if s.measured("exact/entropy_correct"):
        metrics.append(("exact/entropy_correct", "exact entropy among correct programs", DELTA["exact/entropy_correct"],
                        s.compare))
    words = {"ahead": "beats PPO", "ahead by < δ": "beats PPO by < δ (negligible)", "level": "level",
             "behind by < δ": "trails PPO by < δ (negligible)", "behind": "trails PPO", "undecided": "undecided"}
    out = []
    for value, what, delta, protocol in metrics:
        read = {w: [] for w in words}
        for row in st[st.algo == "spo"].itertuples():
            ppo = same_beta_ppo(st, row)
            if ppo is None or not (s.has(row.study_run, protocol=protocol) and s.has(ppo, protocol=protocol)):
                continue
            try:
                d = s.diff(row.study_run, ppo, value, protocol=protocol)
            except KeyError:  # not measured (pass@10 from n < 10 samples)
                continue
            read[direction(d, delta, s.seeds(row.study_run, ppo, protocol=protocol))].append(
                f"{names.get(row.study_run, row.study_run)} {ci(*d)}")
        if any(read.values()):
            out.append(f"- {what}, SPO − PPO at the same β (δ {delta:g}): "
                       + ". ".join(f"{words[w]}: {'; '.join(v) or 'none'}" for w, v in read.items()) + ".")
    return "\n".join(out) if out else "No SPO setting has a PPO run at its β in this export."


EXACT_NOTE = (" (no sampling: pass@k = 1 − (1 − P_θ(correct | x))^k from the exact success mass; ablation and "
              "off-policy entries are evaluated this way only, the main entries also by sampling)")


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
    main_pairs = [(e["spo_online"], e["ppo"]), (e["grpo"], e["ppo"]), (e["rloo"], e["ppo"]),
                  (e["spo_half_online"], e["spo_online"]), (e["spo_online"], "sft")]
    exact_note = (" (the policy's pass@k from its exact success mass, what the policy protocol's samples estimate, "
                  "without their noise)") if s.compare == EXACT else ""
    sampled = [r for r in main if s.has(r, protocol="policy")]
    splits = sorted({sp for r in sampled for sp in ("test", "ood") if s.has(r, sp, "policy")})
    sampled_note = (f"{', '.join(names.get(r, r) for r in sampled)}; split{'s' if len(splits) > 1 else ''} "
                    f"{', '.join(splits)}") if sampled else "no run"
    real_section = (f"""
## Against π_ref: does each method move the pretrained model?
{against_reference(s, names)}
""" if setup(s.data)["pretrained"] else "")
    return f"""# spolab study results: scale `{scale}`, study `{study}`

Generated by `analysis/report.py` (Snakemake rule `report`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the
CSVs that `analysis/export.py` read out of MLflow. Do not edit: rerun `snakemake --cores 2`.
Paper: T. Cohen et al., *Soft Policy Optimization: Online Off-Policy RL for Sequence Models*, arXiv:2503.05453
(2025). {SCOPE["real" if setup(s.data)["pretrained"] else "miniature"]}

## Settings
{settings(s)}
{real_section}
## Claims

{claims_table(rows)}

How each verdict is computed. {POWER_RULE}
{rules}

## At matched KL(π‖π_ref) (F9; claims C1 and C2, and C3 and C6, which are judged there)
The main comparison holds samples fixed (equal updates and batches); PPO may simply move further
from π_ref. Here each seed's validation curve (logged every `eval_every` updates) is read at κ*, the
largest KL(π_θ‖π_ref) per sequence that every seed of both runs of the pair reaches (linear
interpolation in KL between checkpoints, at the first time the run reaches κ*, so no finer than the
checkpoints), and seed means are compared with a bootstrap over seeds ({CI} CI) paired by seed where
both runs have the same seeds (seed s of every run validates on the same problems with the same
sampling seed). κ* and Δ come from one function (common.matched_kl), which F9 uses too, so the
figure prints the same numbers. *Ahead* / *behind*: the CI of Δ = SPO − baseline lies above / below
0 and |Δ| ≥ δ; *ahead by < δ* / *behind by < δ*: significant but smaller than δ; *level*: the CI contains
0 and lies within ±δ, or contains 0 in a comparison powered for δ; *undecided*: the CI contains 0 and
reaches ±δ without the power (the rule above). Where SPO is ahead only at matched samples, its lead
comes with moving less from π_ref; where it stays ahead at matched KL, moving less does not explain it.

{matched_table(s, names)}

## Main comparison (F1, F2, F3, F6, F9)
Every run under the {s.compare} protocol{exact_note}:

{final_table(s, main, names, (s.compare,))}

Sampled ({sampled_note}):

{final_table(s, main, names, ("policy", "paper"))}

Differences against PPO and against online SPO ({CI} CI), {s.compare} protocol:

{diff_table(s, main_pairs, names, s.compare)}

The same, sampled under the policy protocol (pairs with samples only):

{diff_table(s, main_pairs, names)}

![F1]({rel}/f1_pass_vs_fresh.png)
![F2]({rel}/f2_pass_at_k.png)
![F3]({rel}/f3_diversity.png)

Do the diversity columns measure diversity, or the pass rate again? Their correlation with pass@10 across
every per-problem row of the export (per-solved columns: over solved problems only):

{correlation_table(s)}

## Why SPO trails PPO: terminal loss, β and steps per batch
At β 0.05 PPO (KL in the reward at the same β) and SPO target the same soft optimum π* ∝ π_ref·e^(r/β),
which at that β is almost π_ref conditioned on success for either terminal loss: the main comparison
compares estimators and their dynamics. Each online setting below has its own lr from the sweep. Exact
columns: every enumerated correct program of each test problem teacher-forced under the policy
(success mass P_θ(correct | x), the entropy of π_θ restricted to correct programs, its KL from
π_ref restricted to them, and pass@k = 1 − (1 − P)^k), means over problems and seeds with {CI} intervals:
every entry has them. Sampled columns: the policy protocol, for the entries sampled on test
({sampled_note}). KL(π‖π_ref): the last validation point. Δ against PPO at the same β: at matched samples on test
(exact pass@10), and at matched KL on validation (κ* of the pair).

{decisive_table(s, names)}

{decisive_summary(s, names)}

## Off-policy sources (F4, claims C3 and C6)
Final test and ood evaluation under the {s.compare} protocol, which every entry has{EXACT_NOTE if s.compare == "exact" else ""}.

{final_table(s, off, names, (s.compare,))}

Half-online SPO against online SPO, and each source against its reference (runs.csv), at matched samples (C3
and C6 are judged at matched KL: their numbers in the claims table):

{diff_table(s, [(e["spo_half_online"], e["spo_online"]), *against(offpolicy)], names, s.compare)}

![F4]({rel}/f4_offpolicy.png)

## Cost (F5, claim C4)
C4 is judged on this benchmark, which runs alone on the machine, with the time of Q̂0's π_ref samples
(the q0 job, jobs.csv) added to SPO's; the step times logged inside the study are context only, since
they depend on what else ran beside each job.

{bench_table(s)}

![F5]({rel}/f5_cost.png)

## Stability (F6, claim C5) and the frontier at matched KL (F9, claims C1 and C2)
![F6]({rel}/f6_stability.png)
![F9]({rel}/f9_frontier.png)

## Exact testbed (F7)
{exact_table(s)}

![F7]({rel}/f7_exact.png)

## SPO ablations (F8): loss, β, steps per batch, Q̂0 estimator, truncated importance weights
Each ablation against its reference (runs.csv), under the {s.compare} protocol{EXACT_NOTE if s.compare == "exact" else ""}:

{diff_table(s, against(abl), names, s.compare)}

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
