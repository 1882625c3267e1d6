"""Generate the claims report (``results/README.md`` for the default study) from the exported CSVs.

    python analysis/report.py --scale default --study default --data results/data \
        --figures results/figures --out results/README.md --claims results/tables/claims_default.md

Every number is computed here from the CSVs. Each claim C1…C6 is one function whose docstring is
its verdict rule: the report prints that docstring as the rule (its ``{name}`` fields filled from
the function's keyword defaults), so the rule is written once, next to the code that applies it.
Nothing in the output is written by hand.
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

from common import MAIN, Data, labels, matrix, passk_value, per_problem, protocol_text, table
from stats import CONFIDENCE, N_BOOT, diff_interval, interval

SEED = 0  # the report's bootstrap generator: every interval starts from np.random.default_rng(SEED)
CI = f"{CONFIDENCE * 100:g} %"


class Study:
    """The export's tables, and intervals over its (seeds × problems) matrices."""

    def __init__(self, data: Data):
        self.data = data
        self.runs, self.pp, self.curves = table(data, "runs"), per_problem(data), table(data, "curves")
        self.jobs = table(data, "jobs", optional=True)
        bench = table(data, "bench", optional=True)
        self.bench = bench if bench is not None else pd.DataFrame()
        self.exact = table(data, "exact", optional=True)

    def has(self, study_run, split="test", protocol="policy") -> bool:
        d = self.pp
        return bool(((d.study_run == study_run) & (d.split == split) & (d.protocol == protocol)).any())

    def m(self, study_run, value, split="test", protocol="policy") -> np.ndarray:
        return matrix(self.pp, value, study_run=study_run, split=split, protocol=protocol)

    def rng(self) -> np.random.Generator:
        """A fresh generator per interval: a number does not depend on which were computed before it."""
        return np.random.default_rng(SEED)

    def point(self, study_run, value, split="test", protocol="policy") -> tuple[float, float, float]:
        return interval(self.m(study_run, value, split, protocol), self.rng())

    def diff(self, a, b, value, split="test", protocol="policy") -> tuple[float, float, float]:
        return diff_interval(self.m(a, value, split, protocol), self.m(b, value, split, protocol), self.rng())


# ---------------------------------------------------------------- the claims, one function each
@dataclass
class Claim:
    id: str
    claim: str  # the paper's claim, in a few words
    figure: str  # the figures that show it
    number: str  # our number(s), with intervals
    verdict: str  # reproduced | partly | not | n/a (...)
    rule: str  # how the verdict is computed: the claim function's docstring


ClaimFn = Callable[[Study], tuple[str, str] | None]  # -> (number, verdict), or None where not evaluated
CLAIMS: dict[str, tuple[str, str, ClaimFn]] = {}  # id -> (claim, figures, function)


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
    return f"{p:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def by_ci(d: tuple[float, float, float]) -> str:
    """reproduced when the interval of a difference lies above 0, partly when only its point does."""
    p, lo, _ = d
    return "reproduced" if lo > 0 else ("partly" if p > 0 else "not")


@claim("C1", "SPO beats PPO on pass@10 (PPO may win pass@1)", "F1, F2")
def c1(s: Study) -> tuple[str, str] | None:
    """Δ = pass@10(SPO online) − pass@10(PPO) on test under the paper protocol. reproduced: the {ci} CI
    of Δ lies above 0; partly: Δ > 0 but the CI contains 0; not: Δ ≤ 0."""
    if not (s.has("spo", protocol="paper") and s.has("ppo", protocol="paper")):
        return None
    d = s.diff("spo", "ppo", passk_value(10), protocol="paper")
    d_pol = s.diff("spo", "ppo", passk_value(10))
    d1 = s.diff("spo", "ppo", passk_value(1), protocol="paper")
    return (f"Δ pass@10 (paper) {fmt(*d)}; policy protocol {fmt(*d_pol)}; Δ pass@1 (paper) {fmt(*d1)}",
            by_ci(d))


@claim("C2", "SPO learns more diverse policies; PPO collapses", "F3, F9")
def c2(s: Study) -> tuple[str, str] | None:
    """Δ = distinct correct programs per problem (SPO online − PPO) on test (policy protocol), and
    Δ entropy per token. reproduced: the CI of Δ distinct lies above 0 and Δ entropy > 0; partly: one
    of the two point estimates > 0; not: neither."""
    if not (s.has("spo") and s.has("ppo")):
        return None
    dd = s.diff("spo", "ppo", "distinct_correct_programs")
    de = s.diff("spo", "ppo", "entropy_per_token")
    v = "reproduced" if dd[1] > 0 and de[0] > 0 else ("partly" if dd[0] > 0 or de[0] > 0 else "not")
    return f"Δ distinct correct {fmt(*dd)}; Δ entropy/token {fmt(*de)}", v


@claim("C3", "SPO benefits from off-policy data", "F4")
def c3(s: Study) -> tuple[str, str] | None:
    """for every off-policy source s (the offpolicy group and half-online replay), Δ_s = pass@10(s) −
    pass@10(SPO online) on test (policy protocol). reproduced: at least one source's CI lies above 0
    and none lies below 0; partly: at least one CI above 0, or most Δ_s > 0; not: otherwise."""
    sources = [*s.runs[s.runs.group == "offpolicy"].study_run.unique(), "spo_half_online"]
    sources = [r for r in sources if s.has(r)]
    if not sources or not s.has("spo"):
        return None
    ds = {r: s.diff(r, "spo", passk_value(10)) for r in sources}
    helps = [r for r, d in ds.items() if d[1] > 0]
    hurts = [r for r, d in ds.items() if d[2] < 0]
    majority = sum(d[0] > 0 for d in ds.values()) > len(ds) / 2
    v = "reproduced" if helps and not hurts else ("partly" if helps or majority else "not")
    best = max(ds, key=lambda r: ds[r][0])
    return (f"{len(helps)} of {len(ds)} sources help, {len(hurts)} hurt (CI excludes 0); best {best}: "
            f"Δ pass@10 {fmt(*ds[best])}", v)


@claim("C4", "SPO is faster and more memory efficient", "F5")
def c4(s: Study) -> tuple[str, str] | None:
    """ratios SPO / PPO from the benchmark (same model, batch and threads, medians of timed updates):
    step time and training-state memory (parameters, gradients, Adam moments of every model).
    reproduced: both < 1; partly: one; not: neither."""
    if s.bench.empty:
        return None
    size = s.bench["size"].iloc[0]  # the study's model size comes first (spolab.bench: sft_size)
    b = s.bench[s.bench["size"] == size].set_index("variant")
    if not {"spo", "ppo"} <= set(b.index):
        return None
    t, u, mem, rss = (b.loc["spo", k] / b.loc["ppo", k] for k in
                      ("step_s", "update_s", "train_state_MB", "peak_rss_above_baseline_MB"))
    return (f"model `{size}`: step time ×{t:.2f}, update ×{u:.2f}, training state ×{mem:.2f}, peak RSS above "
            f"baseline ×{rss:.2f} (SPO / PPO)" + in_study_ratio(s), ["not", "partly", "reproduced"][int(t < 1) + int(mem < 1)])


@claim("C5", "SPO is more stable", "F6")
def c5(s: Study, collapse_drop: float = 0.05) -> tuple[str, str] | None:
    """seed standard deviation of final test pass@10 (policy protocol) and collapse events (an
    evaluation where val pass@10 falls more than {collapse_drop} below the run's own start), SPO online vs
    PPO. reproduced: SPO's SD is smaller and it has no more collapse events; partly: one of the two;
    not: neither; n/a with one seed. With few seeds an SD is a weak estimate."""
    if not (s.has("spo") and s.has("ppo")):
        return None
    per_seed = {r: np.nanmean(s.m(r, passk_value(10)), axis=1) for r in ("spo", "ppo")}  # (seeds,)
    sd = {r: float(np.nanstd(v, ddof=1)) if len(v) > 1 else np.nan for r, v in per_seed.items()}
    ev = {r: collapse_events(s.curves, r, collapse_drop) for r in ("spo", "ppo")}
    ok = int(sd["spo"] < sd["ppo"]) + int(ev["spo"] <= ev["ppo"])
    return (f"seed SD of test pass@10: SPO {sd['spo']:.3f}, PPO {sd['ppo']:.3f}; collapse events: SPO "
            f"{ev['spo']}, PPO {ev['ppo']}", "n/a (one seed)" if np.isnan(sd["spo"]) or np.isnan(sd["ppo"])
            else ["not", "partly", "reproduced"][ok])


@claim("C6", "half-online SPO is at least as good as online SPO with half the fresh samples", "F1, F4")
def c6(s: Study, margin: float = 0.02) -> tuple[str, str] | None:
    """Δ = pass@10(SPO half-online) − pass@10(SPO online) on test (policy protocol) at equal updates,
    half the fresh samples. Non-inferiority margin {margin}: reproduced: the CI's lower bound >
    −{margin}; partly: Δ > −{margin} but the CI reaches below; not: Δ ≤ −{margin}."""
    if not (s.has("spo_half_online") and s.has("spo")):
        return None
    d = s.diff("spo_half_online", "spo", passk_value(10))
    v = "reproduced" if d[1] > -margin else ("partly" if d[0] > -margin else "not")
    fresh = s.runs.groupby("study_run").fresh_samples.mean()
    return f"Δ pass@10 {fmt(*d)} with {fresh['spo_half_online']:.0f} vs {fresh['spo']:.0f} fresh samples", v


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


def in_study_ratio(s: Study) -> str:
    c = s.curves
    med = c[c["perf/step_s"].notna()].groupby(["study_run", "seed"])["perf/step_s"].median()
    if "spo" not in med or "ppo" not in med:
        return ""
    alongside = (f" ({concurrency(s.jobs, 'rl'):.1f} jobs running at once on average, jobs.csv)"
                 if s.jobs is not None and (s.jobs.rule == "rl").any() else "")
    return f"; inside the study{alongside} median step ×{med['spo'].mean() / med['ppo'].mean():.2f}"


def collapse_events(curves: pd.DataFrame, study_run: str, drop: float) -> int:
    """Evaluations where a seed's val pass@10 falls more than ``drop`` below its own first evaluation."""
    n = 0
    for _, g in curves[(curves.study_run == study_run) & curves["val/pass@10"].notna()].groupby("seed"):
        v = g.sort_values("step")["val/pass@10"].to_numpy()
        n += int((v[1:] < v[0] - drop).sum())
    return n


# ---------------------------------------------------------------- tables and the report
def final_table(s: Study, runs: list[str], names: dict, protocols=("policy",)) -> str:
    lines = ["| run | seeds | split, protocol | pass@1 | pass@10 | distinct correct / problem | entropy / token | KL(π‖π_ref) |",
             "|---|---|---|---|---|---|---|---|"]
    for split in ("test", "ood"):
        for protocol in protocols:
            for r in runs:
                if not s.has(r, split, protocol):
                    continue
                cells = [ci(*s.point(r, passk_value(1), split, protocol)),
                         ci(*s.point(r, passk_value(10), split, protocol)),
                         ci(*s.point(r, "distinct_correct_programs", split, protocol), d=2),
                         ci(*s.point(r, "entropy_per_token", split, protocol)),
                         ci(*s.point(r, "kl_ref", split, protocol))]
                n_seeds = s.m(r, "n", split, protocol).shape[0]
                lines.append(f"| {names.get(r, r)} | {n_seeds} | {split}, {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(s: Study, pairs: list[tuple[str, str]], names: dict) -> str:
    lines = ["| run | against | Δ test pass@1 | Δ test pass@10 | Δ distinct correct | Δ ood pass@10 |",
             "|---|---|---|---|---|---|"]
    for a, b in pairs:
        if not (s.has(a) and s.has(b)):
            continue
        cells = [fmt(*s.diff(a, b, passk_value(1))), fmt(*s.diff(a, b, passk_value(10))),
                 fmt(*s.diff(a, b, "distinct_correct_programs"), d=2),
                 fmt(*s.diff(a, b, passk_value(10), split="ood")) if s.has(a, "ood") and s.has(b, "ood") else "n/a"]
        lines.append(f"| {names.get(a, a)} | {names.get(b, b)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wall_time(jobs: pd.DataFrame) -> tuple[float, float]:
    """(seconds from the first job's start to the last job's end, job-seconds in all)."""
    start = (jobs.end_time - jobs.s).min()
    return float(jobs.end_time.max() - start), float(jobs.s.sum())


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
    last = s.exact.sort_values("step").groupby("run").tail(1).set_index("run")
    cols = [c for c in ["exact/kl_to_optimum", "exact/kl_conditioned_to_policy", "exact/success_prob",
                        "exact/entropy"] if c in last]
    return last[["step", *cols]].to_markdown(floatfmt=".4f")


def settings(s: Study) -> str:
    r0 = s.runs.iloc[0]
    seeds = s.runs.groupby("group").seed.nunique().to_dict()
    protocols = [p for p in ("policy", "paper") if (s.pp.protocol == p).any()]
    evaluated = {p: sorted(set(s.pp.group[s.pp.protocol == p]) - {"sft"}) for p in protocols}
    lines = [
        f"- Task: list-DSL program synthesis (\"code contests in miniature\"); the policy is a {n_params(s)} Llama "
        "trained from scratch by SFT, then RL from the SFT policy (= π_ref).",
        f"- RL budget, every run: {int(r0.updates)} updates × {int(r0.batch_size)} trajectories, lr {r0.lr}; seeds "
        f"per group: {', '.join(f'{g} {k}' for g, k in seeds.items())}.",
        f"- Held-out evaluation: {int(s.pp.n.iloc[0])} samples per problem; "
        + "; ".join(f"`{p}` protocol ({protocol_text(p)}) for "
                    + ("every run" if set(evaluated[p]) >= set(s.runs.group) else f"SFT and the {', '.join(evaluated[p])} runs")
                    for p in protocols)
        + "; test = unseen problems of seen behaviour classes, ood = unseen classes.",
        f"- Intervals: {CI} two-level bootstrap (seeds, then problems), {N_BOOT} resamples, generator seed {SEED} "
        "(analysis/stats.py).",
    ]
    if s.jobs is not None and len(s.jobs):
        span, total = wall_time(s.jobs)
        lines.append(f"- Wall time: **{span / 60:.1f} min** from the first job's start to the last job's end "
                     f"(Snakemake `benchmark:` files; figures and report excluded), {total / 60:.1f} job-minutes in "
                     f"all, {concurrency(s.jobs):.1f} jobs running at once on average.")
    return "\n".join(lines)


def render(s: Study, rows: list[Claim], scale: str, study: str, figures: Path, out: Path) -> str:
    """The whole report (markdown): settings, claims with their rules, the tables behind every figure."""
    names = labels(s.data)
    rel = os.path.relpath(figures, out.parent)
    main = ["sft", *[r for r in MAIN if r in names]]
    off = ["spo", "spo_half_online", "ppo"] + list(s.runs[s.runs.group == "offpolicy"].study_run.unique())
    abl = list(s.runs[s.runs.group == "ablation"].study_run.unique())
    ref = {"is": "spo_half_online"}
    fam = dict(zip(s.runs.study_run, s.runs.family.fillna("")))
    rules = "\n".join(f"- **{r.id}**: {r.rule}" for r in rows)
    return f"""# spolab study results: scale `{scale}`, study `{study}`

Generated by `analysis/report.py` (Snakemake rule `report`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the
CSVs that `analysis/export.py` read out of MLflow. Do not edit: rerun `snakemake --cores 2`.
Paper: T. Cohen et al., *Soft Policy Optimization: Online Off-Policy RL for Sequence Models*, arXiv:2503.05453
(2025). This is a miniature (DESIGN §3): it tests the direction of each claim, with intervals.

## Settings
{settings(s)}

## Claims

{claims_table(rows)}

How each verdict is computed:
{rules}

## Main comparison (F1, F2, F3, F6, F9)
{final_table(s, main, names, ("policy", "paper"))}

Differences against PPO and against online SPO ({CI} CI):

{diff_table(s, [("spo", "ppo"), ("grpo", "ppo"), ("rloo", "ppo"), ("spo_half_online", "spo"), ("spo", "sft")], names)}

![F1]({rel}/f1_pass_vs_fresh.png)
![F2]({rel}/f2_pass_at_k.png)
![F3]({rel}/f3_diversity.png)

## Off-policy sources (F4, claims C3 and C6)
{final_table(s, off, names)}

Each source against online SPO:

{diff_table(s, [(r, "spo") for r in off if r not in ("spo", "ppo")], names)}

![F4]({rel}/f4_offpolicy.png)

## Cost (F5, claim C4)
{bench_table(s)}

![F5]({rel}/f5_cost.png)

## Stability (F6, claim C5) and the frontier (F9)
![F6]({rel}/f6_stability.png)
![F9]({rel}/f9_frontier.png)

## Exact testbed (F7)
{exact_table(s)}

![F7]({rel}/f7_exact.png)

## SPO ablations (F8): loss, β, steps per batch, Q̂0 estimator, truncated importance weights
{diff_table(s, [(r, ref.get(fam.get(r, ""), "spo")) for r in abl], names)}

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
    args.out.write_text(render(s, rows, args.scale, args.study, args.figures, args.out))
    args.claims.parent.mkdir(parents=True, exist_ok=True)
    args.claims.write_text(claims_table(rows) + "\n")
    print(claims_table(rows))


if __name__ == "__main__":
    main()
