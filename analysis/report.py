"""Generate the claims report (``results/README.md`` for the default study) from the exported CSVs.

    python analysis/report.py --scale default --study default --data results/data \
        --figures results/figures --out results/README.md --claims results/tables/claims_default.md

Every number is computed here from the CSVs; every verdict by the rule written next to it
(:data:`RULES`). Nothing in the output is written by hand.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from common import MAIN, diff_interval, interval, matrix, passk_value, read
from common import labels as common_labels

SEED = 0  # the report's bootstrap generator
MARGIN_C6 = 0.02  # non-inferiority margin of C6, in pass@10
COLLAPSE_DROP = 0.05  # a "collapse event": val pass@10 this far below the run's own start

RULES = {
    "C1": "Δ = pass@10(SPO online) − pass@10(PPO) on test under the paper protocol (T 0.4, top-p 0.95). "
          "reproduced: the 95 % CI of Δ lies above 0; partly: Δ > 0 but the CI contains 0; not: Δ ≤ 0.",
    "C2": "Δ = distinct correct programs per problem (SPO online − PPO) on test (policy protocol, 20 samples), "
          "and Δ entropy per token. reproduced: the CI of Δ distinct lies above 0 and Δ entropy > 0; "
          "partly: one of the two point estimates > 0; not: neither.",
    "C3": "for every off-policy source s (the offpolicy group and half-online replay), Δ_s = pass@10(s) − "
          "pass@10(SPO online) on test (policy protocol). reproduced: at least one source's CI lies above 0 "
          "and none lies below 0; partly: at least one CI above 0, or most Δ_s > 0; not: otherwise.",
    "C4": "ratios SPO / PPO from the benchmark (same model, batch and thread, medians of timed updates): step "
          "time and training-state memory (parameters, gradients, Adam moments of every model). reproduced: "
          "both < 1; partly: one; not: neither.",
    "C5": f"seed standard deviation of final test pass@10 (policy protocol) and collapse events (an evaluation "
          f"where val pass@10 falls more than {COLLAPSE_DROP} below the run's own start), SPO online vs PPO. "
          "reproduced: SPO's SD is smaller and it has no more collapse events; partly: one of the two; "
          "not: neither. With 3 seeds an SD is a weak estimate.",
    "C6": f"Δ = pass@10(SPO half-online) − pass@10(SPO online) on test (policy protocol) at equal updates, "
          f"half the fresh samples. Non-inferiority margin {MARGIN_C6}: reproduced: CI lower bound > "
          f"−{MARGIN_C6}; partly: Δ > −{MARGIN_C6} but the CI reaches below; not: Δ ≤ −{MARGIN_C6}.",
}
CLAIMS = {
    "C1": ("SPO beats PPO on pass@10 (PPO may win pass@1)", "F1, F2"),
    "C2": ("SPO learns more diverse policies; PPO collapses", "F3, F9"),
    "C3": ("SPO benefits from off-policy data", "F4"),
    "C4": ("SPO is faster and more memory efficient", "F5"),
    "C5": ("SPO is more stable", "F6"),
    "C6": ("half-online SPO is at least as good as online SPO with half the fresh samples", "F1, F4"),
}


def fmt(p, lo=None, hi=None, d=3) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "n/a"
    return f"{p:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]" if lo is not None else f"{p:.{d}f}"


def ci(p, lo, hi, d=3) -> str:
    return f"{p:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


class Study:
    def __init__(self, data: Path):
        self.data_dir = Path(data)
        self.runs, self.pp = read(data, "runs"), read(data, "eval_per_problem")
        self.curves, self.jobs = read(data, "curves"), read(data, "jobs")
        bench = Path(data) / "bench.csv"
        self.bench = pd.read_csv(bench) if bench.exists() and bench.stat().st_size > 2 else pd.DataFrame()
        self.rng = np.random.default_rng(SEED)

    def has(self, study_run, split="test", protocol="policy") -> bool:
        d = self.pp
        return bool(((d.study_run == study_run) & (d.split == split) & (d.protocol == protocol)).any())

    def m(self, study_run, value, split="test", protocol="policy"):
        return matrix(self.pp, value, study_run=study_run, split=split, protocol=protocol)

    def point(self, study_run, value, split="test", protocol="policy"):
        return interval(self.m(study_run, value, split, protocol), self.rng)

    def diff(self, a, b, value, split="test", protocol="policy"):
        return diff_interval(self.m(a, value, split, protocol), self.m(b, value, split, protocol), self.rng)


def verdict_diff(lo, p, hi) -> str:
    return "reproduced" if lo > 0 else ("partly" if p > 0 else "not")


def claims(s: Study) -> list[dict]:
    rows = []
    p10 = passk_value(10)
    # C1
    if s.has("spo", protocol="paper") and s.has("ppo", protocol="paper"):
        d = s.diff("spo", "ppo", p10, protocol="paper")
        d_pol = s.diff("spo", "ppo", p10)
        d1 = s.diff("spo", "ppo", passk_value(1), protocol="paper")
        rows.append({"id": "C1", "number": f"Δ pass@10 (paper) {fmt(*d)}; policy protocol {fmt(*d_pol)}; "
                     f"Δ pass@1 (paper) {fmt(*d1)}", "verdict": verdict_diff(d[1], d[0], d[2])})
    # C2
    if s.has("spo") and s.has("ppo"):
        dd = s.diff("spo", "ppo", "distinct_correct_programs")
        de = s.diff("spo", "ppo", "entropy_per_token")
        v = "reproduced" if dd[1] > 0 and de[0] > 0 else ("partly" if dd[0] > 0 or de[0] > 0 else "not")
        rows.append({"id": "C2", "number": f"Δ distinct correct {fmt(*dd)}; Δ entropy/token {fmt(*de)}",
                     "verdict": v})
    # C3
    sources = [r for r in s.runs[s.runs.group == "offpolicy"].study_run.unique()] + ["spo_half_online"]
    sources = [r for r in sources if s.has(r)]
    if sources and s.has("spo"):
        ds = {r: s.diff(r, "spo", p10) for r in sources}
        helps = [r for r, d in ds.items() if d[1] > 0]
        hurts = [r for r, d in ds.items() if d[2] < 0]
        majority = sum(d[0] > 0 for d in ds.values()) > len(ds) / 2
        v = "reproduced" if helps and not hurts else ("partly" if helps or majority else "not")
        best = max(ds, key=lambda r: ds[r][0])
        rows.append({"id": "C3", "number": f"{len(helps)} of {len(ds)} sources help, {len(hurts)} hurt (CI "
                     f"excludes 0); best {best}: Δ pass@10 {fmt(*ds[best])}", "verdict": v})
    # C4
    if not s.bench.empty:
        size = s.bench["size"].iloc[0]  # the study's model size comes first (spolab.bench: sft_size)
        b = s.bench[s.bench["size"] == size].set_index("variant")
        if {"spo", "ppo"} <= set(b.index):
            t = b.loc["spo", "step_s"] / b.loc["ppo", "step_s"]
            u = b.loc["spo", "update_s"] / b.loc["ppo", "update_s"]
            mem = b.loc["spo", "train_state_MB"] / b.loc["ppo", "train_state_MB"]
            rss = b.loc["spo", "peak_rss_above_baseline_MB"] / b.loc["ppo", "peak_rss_above_baseline_MB"]
            n_ok = int(t < 1) + int(mem < 1)
            rows.append({"id": "C4", "number": f"model `{size}`: step time ×{t:.2f}, update ×{u:.2f}, training state ×{mem:.2f}, "
                         f"peak RSS above baseline ×{rss:.2f} (SPO / PPO)" + in_study_ratio(s),
                         "verdict": ["not", "partly", "reproduced"][n_ok]})
    # C5
    if s.has("spo") and s.has("ppo"):
        sd = {r: np.nanstd(np.nanmean(s.m(r, p10), axis=1), ddof=1) if s.m(r, p10).shape[0] > 1 else np.nan
              for r in ("spo", "ppo")}
        ev = {r: collapse_events(s.curves, r) for r in ("spo", "ppo")}
        ok = [sd["spo"] < sd["ppo"], ev["spo"] <= ev["ppo"]]
        rows.append({"id": "C5", "number": f"seed SD of test pass@10: SPO {sd['spo']:.3f}, PPO {sd['ppo']:.3f}; "
                     f"collapse events: SPO {ev['spo']}, PPO {ev['ppo']}",
                     "verdict": "n/a (one seed)" if np.isnan(sd["spo"]) else ["not", "partly", "reproduced"][int(sum(ok))]})
    # C6
    if s.has("spo_half_online") and s.has("spo"):
        d = s.diff("spo_half_online", "spo", p10)
        v = "reproduced" if d[1] > -MARGIN_C6 else ("partly" if d[0] > -MARGIN_C6 else "not")
        fresh = s.runs.groupby("study_run").fresh_samples.mean()
        rows.append({"id": "C6", "number": f"Δ pass@10 {fmt(*d)} with {fresh['spo_half_online']:.0f} vs "
                     f"{fresh['spo']:.0f} fresh samples", "verdict": v})
    for r in rows:
        r["claim"], r["figure"] = CLAIMS[r["id"]]
        r["rule"] = RULES[r["id"]]
    return rows


def in_study_ratio(s: Study) -> str:
    c = s.curves
    med = c[c["perf/step_s"].notna()].groupby(["study_run", "seed"])["perf/step_s"].median()
    if "spo" not in med or "ppo" not in med:
        return ""
    return f"; inside the study (1 thread, two jobs at a time) median step ×{med['spo'].mean() / med['ppo'].mean():.2f}"


def collapse_events(curves: pd.DataFrame, study_run: str) -> int:
    n = 0
    for _, g in curves[(curves.study_run == study_run) & curves["val/pass@10"].notna()].groupby("seed"):
        v = g.sort_values("step")["val/pass@10"].to_numpy()
        n += int((v[1:] < v[0] - COLLAPSE_DROP).sum())
    return n


def final_table(s: Study, runs: list[str], labels: dict, protocols=("policy",)) -> str:
    lines = ["| run | seeds | split, protocol | pass@1 | pass@10 | distinct correct / problem | entropy / token | KL(π‖π_ref) |",
             "|---|---|---|---|---|---|---|---|"]
    for split in ("test", "ood"):
        for protocol in protocols:
            for r in runs:
                if not s.has(r, split, protocol):
                    continue
                m1 = s.m(r, passk_value(1), split, protocol)
                cells = [ci(*interval(m1, s.rng)), ci(*s.point(r, passk_value(10), split, protocol)),
                         ci(*s.point(r, "distinct_correct_programs", split, protocol), d=2),
                         ci(*s.point(r, "entropy_per_token", split, protocol)),
                         ci(*s.point(r, "kl_ref", split, protocol))]
                lines.append(f"| {labels.get(r, r)} | {m1.shape[0]} | {split}, {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(s: Study, pairs: list[tuple[str, str]], labels: dict) -> str:
    lines = ["| run | against | Δ test pass@1 | Δ test pass@10 | Δ distinct correct | Δ ood pass@10 |", "|---|---|---|---|---|---|"]
    for a, b in pairs:
        if not (s.has(a) and s.has(b)):
            continue
        cells = [fmt(*s.diff(a, b, passk_value(1))), fmt(*s.diff(a, b, passk_value(10))),
                 fmt(*s.diff(a, b, "distinct_correct_programs"), d=2),
                 fmt(*s.diff(a, b, passk_value(10), split="ood")) if s.has(a, "ood") and s.has(b, "ood") else "n/a"]
        lines.append(f"| {labels.get(a, a)} | {labels.get(b, b)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wall_time(jobs: pd.DataFrame) -> tuple[float, float]:
    start = (jobs.end_time - jobs.s).min()
    return float(jobs.end_time.max() - start), float(jobs.s.sum())


def render(s: Study, rows: list[dict], scale: str, study: str, figures: Path, out: Path) -> str:
    labels = common_labels(s.data_dir)
    rel = os.path.relpath(figures, out.parent)
    span, total = wall_time(s.jobs)
    r0 = s.runs.iloc[0]
    seeds = s.runs.groupby("group").seed.nunique().to_dict()
    n = int(s.pp.n.iloc[0])
    main = ["sft", *[r for r in MAIN if r in labels]]
    off = ["spo", "spo_half_online", "ppo"] + list(s.runs[s.runs.group == "offpolicy"].study_run.unique())
    abl = list(s.runs[s.runs.group == "ablation"].study_run.unique())
    ref = {"is": "spo_half_online"}
    fam = dict(zip(s.runs.study_run, s.runs.family.fillna("")))
    claims_md = claims_table(rows)
    txt = f"""# spolab study results: scale `{scale}`, study `{study}`

Generated by `analysis/report.py` (Snakemake rule `report`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the
CSVs that `analysis/export.py` read out of MLflow. Do not edit: rerun `snakemake --cores 2`.
Paper: T. Cohen et al., *Soft Policy Optimization: Online Off-Policy RL for Sequence Models*, arXiv:2503.05453
(2025). This is a miniature (DESIGN §3): it tests the direction of each claim, with intervals.

## Settings
- Task: list-DSL program synthesis ("code contests in miniature"); the policy is a {n_params(s)} Llama trained from
  scratch by SFT, then RL from the SFT policy (= π_ref).
- RL budget, every run: {int(r0.updates)} updates × {int(r0.batch_size)} trajectories, lr {r0.lr}; seeds per
  group: {", ".join(f"{g} {k}" for g, k in seeds.items())}.
- Held-out evaluation: {n} samples per problem; `policy` protocol (T 1) for every run, `paper` protocol
  (T 0.4, top-p 0.95, the paper's) for SFT and the main runs; test = unseen problems of seen behaviour classes,
  ood = unseen classes.
- Intervals: 95 % two-level bootstrap (seeds, then problems), {2000} resamples, generator seed {SEED}.
- Wall time: **{span / 60:.1f} min** from the first job's start to the last job's end (Snakemake `benchmark:`
  files; figures and report excluded), {total / 60:.1f} job-minutes in all, on this machine's 2 cores.

## Claims

{claims_md}

How each verdict is computed:
""" + "\n".join(f"- **{r['id']}**: {r['rule']}" for r in rows) + f"""

## Main comparison (F1, F2, F3, F6, F9)
{final_table(s, main, labels, ("policy", "paper"))}

Differences against PPO and against online SPO (95 % CI):

{diff_table(s, [("spo", "ppo"), ("grpo", "ppo"), ("rloo", "ppo"), ("spo_half_online", "spo"), ("spo", "sft")], labels)}

![F1]({rel}/f1_pass_vs_fresh.png)
![F2]({rel}/f2_pass_at_k.png)
![F3]({rel}/f3_diversity.png)

## Off-policy sources (F4, claims C3 and C6)
{final_table(s, off, labels)}

Each source against online SPO:

{diff_table(s, [(r, "spo") for r in off if r not in ("spo", "ppo")], labels)}

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
{diff_table(s, [(r, ref.get(fam.get(r, ""), "spo")) for r in abl], labels)}

![F8]({rel}/f8_ablations.png)
"""
    return txt, claims_md


def n_params(s: Study) -> str:
    b = s.bench[s.bench["size"] == s.bench["size"].iloc[0]] if not s.bench.empty else s.bench
    return f"{b.params_M.iloc[0]:.2f} M-parameter" if len(b) and "params_M" in b else "small"


def claims_table(rows: list[dict]) -> str:
    lines = ["| id | claim | figure | our number (95 % CI) | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['id']} | {r['claim']} | {r['figure']} | {r['number']} | **{r['verdict']}** |")
    return "\n".join(lines)


def bench_table(s: Study) -> str:
    if s.bench.empty:
        return "No benchmark CSV in this export."
    cols = ["variant", "size", "step_s", "step_s_vs_ppo", "update_s", "update_s_vs_ppo", "train_state_MB",
            "train_state_MB_vs_ppo", "peak_activations_MB", "peak_rss_above_baseline_MB"]
    return s.bench[[c for c in cols if c in s.bench]].to_markdown(index=False, floatfmt=".3g")


def exact_table(s: Study) -> str:
    e = read(s.data_dir, "exact")
    last = e.sort_values("step").groupby("run").tail(1).set_index("run")
    cols = [c for c in ["exact/kl_to_optimum", "exact/kl_conditioned_to_policy", "exact/success_prob",
                        "exact/entropy"] if c in last]
    return last[["step", *cols]].to_markdown(floatfmt=".4f")


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
    txt, claims_md = render(s, rows, args.scale, args.study, args.figures, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(txt)
    args.claims.parent.mkdir(parents=True, exist_ok=True)
    args.claims.write_text(claims_md + "\n")
    print(claims_md)


if __name__ == "__main__":
    main()
