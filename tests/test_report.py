"""The claims report (analysis/report.py): each claim's verdict on constructed data, for every
outcome (reproduced / partly / negligible / not / undecided (underpowered)), read in both directions
(an interval that excludes δ refutes a claim whether or not it is powered), the power rule, the
comparison at matched KL, C5's collapse threshold calibrated on the SFT re-validations, the ood
intervals that resample behaviour classes, references from runs.csv, the wall time from jobs.csv,
the rule printed from the claim's docstring, and the report of the committed export.

The constructed tables have the export's schema: eval_per_problem rows carry the columns
analysis/export.py writes (its PER_PROBLEM list), runs rows are the committed runs.csv rows with the
``reference`` column a fresh export writes (tests/committed_export.py), and the study and setup are the
committed study.csv and setup.csv unless a test builds its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import committed_export
from spolab.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analysis"))
import common  # noqa: E402
import export  # noqa: E402
import report  # noqa: E402
import stats  # noqa: E402

REAL = committed_export.REAL
FRESH = committed_export.load()  # the committed export, as published
RUNS0 = FRESH["runs"]  # the committed study's runs: their entries, groups and references
PP_COLUMNS = ["model", "study_run", "group", "seed", "split", "protocol", "problem_id", *export.PER_PROBLEM]
N, P = 20, 400  # samples per problem, problems
BASE = np.full(P, 2)  # correct samples of 20 per problem: pass@10 0.763 (1 correct: 0.5, 3 correct: 0.895)
UNDECIDED = report.UNDECIDED


def runs_with_seeds(n_seeds: int) -> pd.DataFrame:
    """The committed study's runs with every study run at seeds 0 … n_seeds − 1."""
    first = RUNS0.drop_duplicates("study_run")
    return pd.concat([first.assign(seed=s, run_name=first.study_run + f"-s{s}") for s in range(n_seeds)],
                     ignore_index=True)


RUNS = runs_with_seeds(3)  # constructed studies: 3 seeds per run, whatever the committed study ran


def rows(study_run: str, correct, *, split="test", protocol="policy", per_solved=None, effective=9.0, entropy=0.3,
         runs: pd.DataFrame = RUNS) -> pd.DataFrame:
    """eval_per_problem rows of one study run: ``correct`` is a (seeds × problems) array of n_correct
    (or one row for every seed of the run in ``runs``); ``per_solved`` the distinct correct programs
    (and functional classes) of a solved problem (NaN where unsolved, as the export has it)."""
    n_seeds = 1 if study_run == "sft" else runs[runs.study_run == study_run].seed.nunique()
    full = lambda v: np.broadcast_to(np.atleast_2d(v), (n_seeds, P)).astype(float)  # noqa: E731
    correct = np.clip(full(correct), 0, N).astype(int)
    per_solved = np.where(correct > 0, full(np.minimum(correct, 2) if per_solved is None else per_solved), np.nan)
    effective, entropy = full(effective), full(entropy)
    group = "sft" if study_run == "sft" else runs.group[runs.study_run == study_run].iloc[0]
    out = [dict(model="sft" if study_run == "sft" else f"{study_run}-s{seed}", study_run=study_run, group=group,
                seed=seed, split=split, protocol=protocol, problem_id=f"{split}-{j:06d}", n=N,
                n_correct=correct[seed, j], distinct_correct_programs=np.nan_to_num(per_solved[seed, j]),
                functional_classes_correct=min(np.nan_to_num(per_solved[seed, j]), 1), entropy_per_token=entropy[seed, j],
                kl_ref=0.1, distinct_correct_per_solved=per_solved[seed, j],
                functional_classes_per_solved=min(per_solved[seed, j], 1) if correct[seed, j] else np.nan,
                effective_programs=effective[seed, j]) for seed in range(n_seeds) for j in range(P)]
    return pd.DataFrame(out)[PP_COLUMNS]


def curves(pass10: dict[str, list[list[float]]], step_s: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """curves rows: study_run -> per seed, val/pass@10 at steps 0, 50, 100 (val/kl_ref 0, 0.1, 0.2);
    perf/step_s at every step: ``step_s[run]`` (seeds × steps), 1.0 where not given."""
    out = [{"run_name": f"{sr}-s{seed}", "study_run": sr, "seed": seed, "step": 50 * i, "val/pass@10": v,
            "val/kl_ref": 0.1 * i} for sr, per_seed in pass10.items() for seed, vs in enumerate(per_seed)
           for i, v in enumerate(vs)]
    c = pd.DataFrame(out)
    c["perf/step_s"] = 1.0
    for sr, t in (step_s or {}).items():  # one row per (seed, update) with only the step time
        t = np.atleast_2d(t)
        extra = pd.DataFrame([{"run_name": f"{sr}-s{s}", "study_run": sr, "seed": s, "step": j + 1, "perf/step_s": v}
                              for s in range(t.shape[0]) for j, v in enumerate(t[s])])
        c = pd.concat([c[c.study_run != sr], extra, c[c.study_run == sr].assign(**{"perf/step_s": np.nan})],
                      ignore_index=True)
    return c


def study(*pp: pd.DataFrame, pass10=None, step_s=None, bench=None, runs=None, jobs=None, entries=None,
          setup=None) -> report.Study:
    tables = {"runs": RUNS if runs is None else runs, "eval_per_problem": pd.concat(pp, ignore_index=True),
              "curves": curves(pass10 or {"spo": [[0.5] * 3] * 3, "ppo": [[0.5] * 3] * 3}, step_s),
              "study": FRESH["study"] if entries is None else entries, "setup": FRESH["setup"] if setup is None else setup}
    if bench is not None:
        tables["bench"] = pd.DataFrame(bench)
    if jobs is not None:
        tables["jobs"] = jobs
    return report.Study(tables)


def mixed(up: int, down: int) -> np.ndarray:
    """One more correct sample on ``up`` problems, one fewer on the next ``down``, none elsewhere: a
    small mean change with a narrow interval on 400 problems (24 up, 10 down: Δ pass@10 +0.001
    [−0.004, +0.006], MDE 0.007; 10 up, 24 down: −0.013 [−0.019, −0.007])."""
    return np.r_[np.ones(up), -np.ones(down), np.zeros(P - up - down)].astype(int)


def noisy(k: int) -> np.ndarray:
    """Every sample correct on 2k problems (pass@10 0.763 → 1), none on the next 0.31·2k (0.763 → 0):
    a mean change of ~0 with a wide interval that contains it (k = 40: Δ pass@10 ≈ 0, MDE ≈ 0.03), so
    neither powered nor significant."""
    up, down = 2 * k, round(0.31 * 2 * k)
    return np.r_[np.full(up, N - 2), np.full(down, -2), np.zeros(P - up - down)].astype(int)


def test_rows_have_the_export_schema():
    built = rows("spo", BASE)
    assert list(built.columns) == PP_COLUMNS
    assert built.seed.tolist() == sorted(built.seed) and built.seed.min() == 0  # seeds 0.., never empty
    assert built.distinct_correct_per_solved[built.n_correct == 0].isna().all()


def test_the_committed_export_has_the_export_schema():
    cols = [c for c in pd.read_csv(REAL / "eval_per_problem.csv", nrows=0).columns
            if c != export.CLASS]  # after problem_id in an export that reads the data splits' classes
    assert cols[: len(PP_COLUMNS)] == PP_COLUMNS
    assert cols[len(PP_COLUMNS) :] == [c for c in export.EXACT_PER_PROBLEM + export.REWARD_PER_PROBLEM if c in cols]  # where evaluations have them
    assert "reference" in pd.read_csv(REAL / "runs.csv", nrows=0).columns


# ---------------------------------------------------------------- the power rule
def test_the_power_rule_is_80_percent_power_at_alpha_005():
    assert stats.DETECT_SE == pytest.approx(1.95996 + 0.84162, abs=1e-4)  # z_0.975 + z_0.8
    assert stats.MAX_HALF_WIDTH == pytest.approx(0.70, abs=0.005)
    # a normal-theory check of the rule's meaning: at SE = δ / 2.80 a two-sided 5 % test rejects 80 % of the time
    rng = np.random.default_rng(0)
    delta, se = 0.02, 0.02 / stats.DETECT_SE
    est = rng.normal(delta, se, 200_000)
    assert np.mean(np.abs(est / se) > stats.Z_CI) == pytest.approx(0.80, abs=0.005)
    h = stats.MAX_HALF_WIDTH * delta  # the widest half-width that judges δ
    assert stats.powered(-h + 1e-9, h - 1e-9, delta, 3) and not stats.powered(-h - 1e-9, h + 1e-9, delta, 3)
    assert not stats.powered(0.0, 0.0, delta, 1)  # one seed: never, however narrow
    assert not stats.powered(np.nan, np.nan, delta, 3)


def test_verdict_reads_both_directions_and_direction():
    """The power rule guards only a null reading: an interval below δ refutes the claim however wide,
    one above 0 with a point below δ is negligible, and only an interval holding 0 and δ needs power."""
    assert report.verdict((0.05, 0.03, 0.07), 0.02, 3) == "reproduced"
    assert report.verdict((0.01, 0.005, 0.015), 0.02, 3) == "negligible"  # significant, smaller than δ
    assert report.verdict((-0.016, -0.034, 0.002), 0.02, 10) == "not"  # unpowered (MDE 0.026), but excludes δ
    assert not stats.powered(-0.034, 0.002, 0.02, 10)
    assert report.verdict((0.01, -0.003, 0.023), 0.02, 3) == "not"  # holds 0 and δ, powered: a null reading
    assert report.verdict((0.0, -0.05, 0.06), 0.02, 3) == UNDECIDED  # holds 0 and δ, unpowered
    assert report.verdict((0.05, 0.03, 0.07), 0.02, 1) == UNDECIDED  # one seed: never
    assert report.verdict((-0.05, -0.07, -0.03), 0.02, 3, sign=-1) == "reproduced"  # a claimed decrease
    assert report.verdict((0.002, -0.009, 0.014), 0.02, 10, sign=-1) == "not"
    narrow, wide = (0.01, 0.005, 0.015), (0.01, -0.03, 0.05)
    assert report.direction((0.05, 0.03, 0.07), 0.02, 3) == "ahead" and report.direction(narrow, 0.02, 3) == "ahead by < δ"
    assert report.direction(wide, 0.02, 3) == "undecided" and report.direction(narrow, 0.02, 1) == "undecided"
    assert report.direction((-0.03, -0.04, -0.02), 0.02, 3) == "behind"
    assert report.direction((-0.01, -0.015, -0.005), 0.02, 3) == "behind by < δ"
    assert report.direction((0.0, -0.005, 0.005), 0.02, 3) == "level"
    assert report.direction((0.0, -0.019, 0.019), 0.02, 3) == "level"  # unpowered, but within ±δ


# ---------------------------------------------------------------- C1 … C6, every outcome
BELOW = -np.r_[np.zeros(P - 20), np.ones(20)].astype(int)  # one fewer correct sample on the last 20 problems


@pytest.mark.parametrize("spo, verdict", [
    (BASE + 1, "reproduced"),  # Δ pass@10 +0.13, CI above 0
    (BASE + mixed(40, 0), "negligible"),  # +0.013 [+0.010, +0.017]: significant, below δ 0.02
    (BASE + mixed(10, 24), "not"),  # −0.013 [−0.019, −0.007]
    (BASE + noisy(40) + BELOW, "not"),  # −0.014 [−0.035, +0.008]: unpowered (MDE 0.031), yet it excludes δ
    (BASE + noisy(40), UNDECIDED),  # ≈ 0 [−0.021, +0.021]: holds 0 and δ, unpowered
])
def test_c1(spo, verdict):
    s = study(rows("spo", spo, protocol="paper"), rows("ppo", BASE, protocol="paper"),
              rows("spo", spo), rows("ppo", BASE))
    number, got = report.c1(s)
    assert got == verdict, number
    p, lo, hi = s.diff("spo", "ppo", report.passk_value(10), protocol="paper")
    assert {"reproduced": lo > 0 and p >= 0.02, "negligible": lo > 0 and p < 0.02, "not": hi < 0.02,
            UNDECIDED: lo <= 0 < 0.02 <= hi and not stats.powered(lo, hi, 0.02, 3)}[verdict]
    assert f"(MDE {stats.detectable(lo, hi):.3f})" in number


def test_c1_is_undecided_with_one_seed_and_needs_the_paper_protocol():
    one = RUNS[RUNS.seed == 0]
    s = study(*(rows(r, BASE + (r == "spo"), protocol=pr, runs=one) for r in ("spo", "ppo") for pr in ("paper", "policy")),
              runs=one)
    assert report.c1(s)[1] == UNDECIDED  # Δ +0.13 with a zero-width interval, but one seed
    assert report.c1(study(rows("spo", BASE), rows("ppo", BASE))) is None


@pytest.mark.parametrize("per_solved, effective, verdict", [
    (1.3, 10.0, "reproduced"),  # +0.2 correct programs per solved problem against PPO's 1.1
    (1.3, 8.0, "reproduced"),  # fewer programs among all samples: beside it, not deciding
    (1.15, 12.0, "negligible"),  # +0.05: significant, below δ 0.1, however many programs among all samples
    (1.0, 10.0, "not"),
    (1.2 + np.random.default_rng(0).normal(0, 1.5, P), 10.0, UNDECIDED),  # too noisy for δ 0.1: holds 0 and δ
])
def test_c2(per_solved, effective, verdict):
    s = study(rows("spo", BASE, per_solved=per_solved, effective=effective, entropy=0.4),
              rows("ppo", BASE, per_solved=1.1, effective=9.0, entropy=0.3))
    number, got = report.c2(s)
    assert got == verdict, number
    assert "Δ entropy/token +0.100" in number and f"Δ effective programs {effective - 9:+.2f}" in number


def test_c2_shows_coverage_beside_it():
    """Coverage, the share of test problems solved at least once: the statistic "PPO collapses" would show in."""
    spo = np.r_[np.zeros(P // 4), np.full(3 * P // 4, 2)]  # a quarter of the problems never solved
    s = study(rows("spo", spo, per_solved=1.5), rows("ppo", BASE, per_solved=1.2))
    number, got = report.c2(s)
    assert "coverage (test problems solved at least once): SPO 0.750 [" in number, number
    assert "PPO 1.000 [1.000, 1.000]" in number
    assert "Δ -0.250" in number and got == "reproduced"  # judged on the per-solved count alone
    assert "collapses" not in report.CLAIMS["C2"][0]


def test_c2_averages_the_per_solved_counts_over_solved_problems_only():
    spo = np.r_[np.zeros(P // 2), np.full(P // 2, 2)]  # half the problems unsolved: no per-solved value there
    s = study(rows("spo", spo, per_solved=1.5), rows("ppo", BASE, per_solved=1.5))
    assert s.diff("spo", "ppo", "distinct_correct_per_solved")[0] == pytest.approx(0.0)
    assert s.diff("spo", "ppo", "distinct_correct_programs")[0] == pytest.approx(-0.75)  # the pass rate, again


def val_curves(spec: dict[str, dict], seeds: int = 3) -> pd.DataFrame:
    """Validation curves at steps 0, 50 and 100 of each study run: ``kl`` its final KL(π‖π_ref) (0, kl/2,
    kl), ``pass10`` its val pass@10 at the three steps (one list for every seed, or one list per seed),
    ``pass1`` its val pass@1 (default pass10 − 0.4), ``fresh`` its final fresh samples (linear in steps).
    Step 0 is the SFT policy: 0.5 for every run (pass@1 0.1)."""
    out = []
    for sr, sp in spec.items():
        p10 = np.broadcast_to(np.atleast_2d(sp.get("pass10", [0.5, 0.5, 0.5])), (seeds, 3))
        p1 = np.broadcast_to(np.atleast_2d(sp.get("pass1", p10 - 0.4)), (seeds, 3))
        for seed in range(seeds):
            for i, step in enumerate((0, 50, 100)):
                out.append({"run_name": f"{sr}-s{seed}", "study_run": sr, "seed": seed, "step": step,
                            "val/kl_ref": sp.get("kl", 0.2) * i / 2, "val/pass@10": p10[seed, i],
                            "val/pass@1": p1[seed, i], "data/fresh_samples": sp.get("fresh", 6144) * i / 2})
    return pd.DataFrame(out)


def _c3(expert, random, half=None, runs=RUNS) -> report.Study:
    s = study(rows("spo", BASE), rows("spo_expert", BASE), rows("spo_random", BASE), rows("spo_half_online", BASE),
              runs=runs)
    s.curves = val_curves({"spo": {}, "spo_expert": {"pass10": expert}, "spo_random": {"pass10": random},
                           "spo_half_online": half or {}})
    return s


UP, DOWN, FLAT3 = [0.5, 0.55, 0.6], [0.5, 0.45, 0.4], [0.5, 0.5, 0.5]  # val pass@10 at steps 0, 50, 100
SPREAD3 = [[0.5, 0.5, 0.45], [0.5, 0.5, 0.55], [0.5, 0.5, 0.6]]  # three seeds far apart at the end


@pytest.mark.parametrize("expert, random, verdict", [
    (UP, FLAT3, "reproduced"),  # the expert source helps by 0.1 at matched KL, none hurts
    (UP, DOWN, "partly"),  # one helps, one hurts
    ([0.5, 0.5, 0.51], FLAT3, "negligible"),  # +0.01 on every seed: significant, below δ
    ([0.5, 0.5, 0.51], DOWN, "not"),  # none helps by δ, one hurts
    (FLAT3, DOWN, "not"),  # none helps
    (SPREAD3, FLAT3, UNDECIDED),  # the expert's seeds too far apart to tell
])
def test_c3(expert, random, verdict):
    number, got = report.c3(_c3(expert, random))
    assert got == verdict, number
    assert number.startswith("Δ val pass@10 at matched KL, of 3 sources:") and "(0 with one seed)" in number


def test_c3_credits_no_source_for_moving_less():
    """Half-online replay ahead of online SPO at matched samples only because it moved less (the same
    pass@10-against-KL line, a third of the KL) does not help at matched KL."""
    line = lambda kl: {"kl": kl, "pass10": [0.5, 0.5 - kl / 2, 0.5 - kl]}  # noqa: E731  (pass@10 = 0.5 − KL)
    s = _c3(FLAT3, FLAT3)
    s.curves = val_curves({"spo": line(0.3), "spo_expert": line(0.3), "spo_random": line(0.3),
                           "spo_half_online": line(0.1)})
    number, got = report.c3(s)
    m = report.matched(s, "spo_half_online", "spo", "pass@10", 0.02)
    assert m.samples[0] == pytest.approx(0.2) and m.kl == pytest.approx(0.1)  # ahead at the end, ...
    assert got == "not" and "spo_half_online (not)" in number, number  # ... level at its own KL


def test_c3_judges_each_source_against_its_reference_from_runs_csv():
    runs = RUNS.assign(reference=RUNS.reference.where(RUNS.study_run != "spo_expert", "ppo"))
    s = study(rows("spo", BASE), rows("ppo", BASE - 1), rows("spo_expert", BASE), rows("spo_half_online", BASE),
              runs=runs)
    s.curves = val_curves({"spo": {"pass10": UP}, "ppo": {}, "spo_expert": {"pass10": UP}, "spo_half_online": {}})
    number, got = report.c3(s)  # the expert equals SPO, but its reference is PPO, which it beats
    assert got == "partly" and number.startswith("Δ val pass@10 at matched KL, of 2 sources: 1 helps, 1 hurts"), number
    assert "spo_expert (helps)" in number and "spo_half_online (hurts)" in number  # half-online flat, below online SPO
    with pytest.raises(SystemExit, match="no `reference` column"):
        report.c3(study(rows("spo", BASE), rows("spo_expert", BASE), runs=RUNS.drop(columns="reference")))


def _bench(step, state):
    return [dict(variant=v, size="s", device="cpu", params_M=0.45, step_s=t, update_s=t / 2, train_state_MB=m,
                 peak_rss_above_baseline_MB=200.0) for v, t, m in [("spo", step, state), ("ppo", 1.0, 10.0)]]


def _times(mean: float, spread: float, seeds: int = 3, updates: int = 20, seed: int = 0) -> np.ndarray:
    return mean * np.exp(np.random.default_rng(seed).uniform(-spread, spread, (seeds, updates)))


def _q0_job(seconds: float) -> pd.DataFrame:
    """jobs.csv with the q0 job alone and two RL jobs after it."""
    return pd.DataFrame({"rule": ["q0", "rl", "rl"], "name": ["", "spo-s0", "ppo-s0"], "s": [seconds, 50.0, 90.0],
                         "max_rss_mb": 1.0, "end_time": [1000.0 + seconds, 1100.0 + seconds, 1100.0 + seconds]})


@pytest.mark.parametrize("spo_s, q0_s, state, verdict", [
    (0.4, 5.0, 6.0, "reproduced"),  # (96 × 0.4 + 5) / 96 = 0.45 of PPO's time, 0.6 of its memory
    (0.4, 100.0, 6.0, "partly"),  # Q̂0's 100 s make a run slower than PPO's (×1.44): memory alone
    (0.95, 1.0, 9.5, "negligible"),  # ×0.96 and ×0.95: below 1, not by e^−0.1
    (1.5, 5.0, 12.0, "not"),
])
def test_c4(spo_s, q0_s, state, verdict):
    s = study(rows("spo", BASE), rows("ppo", BASE), bench=_bench(spo_s, state), jobs=_q0_job(q0_s),
              step_s={"spo": _times(spo_s, 0.1), "ppo": _times(1.0, 0.1, seed=1)})
    number, got = report.c4(s)
    ratio = (RUNS.updates.iloc[0] * spo_s + q0_s) / RUNS.updates.iloc[0]
    assert got == verdict and f"time of one run with Q̂0: ×{ratio:.2f}" in number, number
    assert f"step time ×{spo_s:.2f} without Q̂0" in number and f"Q̂0 {q0_s:.1f} s" in number


def test_c4_rests_on_the_benchmark_not_the_loaded_study():
    """Step times inside the study, too noisy to tell 10 % (or swinging with the load), are context only."""
    s = study(rows("spo", BASE), rows("ppo", BASE), bench=_bench(0.4, 6.0), jobs=_q0_job(5.0),
              step_s={"spo": _times(0.9, 1.5), "ppo": _times(1.0, 1.5, seed=1)})
    number, got = report.c4(s)
    assert got == "reproduced" and "context only, inside the study" in number, number


def test_c4_counts_q0s_samples_where_the_export_records_them():
    u = pd.concat([FRESH["setup"], pd.DataFrame({"key": ["q0.n_ref", "q0.n_prompts"], "value": ["16", "4000"]})])
    s = study(rows("spo", BASE), rows("ppo", BASE), bench=_bench(0.4, 6.0), jobs=_q0_job(5.0), setup=u)
    assert "SPO 6144 fresh + Q̂0's, 64000 π_ref samples (16 per rl prompt × 4000 prompts)" in report.c4(s)[0]
    older = FRESH["setup"][~FRESH["setup"].key.str.startswith("q0.")]  # an export from before q0.n_ref
    s = study(rows("spo", BASE), rows("ppo", BASE), bench=_bench(0.4, 6.0), jobs=_q0_job(5.0), setup=older)
    assert "not recorded in this export" in report.c4(s)[0]


def test_c4_needs_the_benchmark_and_q0s_time():
    assert report.c4(study(rows("spo", BASE), rows("ppo", BASE))) is None
    number, got = report.c4(study(rows("spo", BASE), rows("ppo", BASE), bench=_bench(0.4, 6.0)))
    assert got == "undecided (Q̂0 not measured)" and "jobs.csv has no q0 job" in number


FLAT, COLLAPSE = [0.5, 0.5, 0.5], [0.5, 0.4, 0.5]  # val pass@10 at steps 0, 50, 100; 0.4 is one collapse event
EIGHT = runs_with_seeds(8)
STEADY = np.tile(BASE, (8, 1))  # 8 seeds that agree: SD 0
SPREAD8 = BASE + np.stack([mixed(4 * i, 0) for i in range(8)])  # 8 seeds whose means differ by ~0.001 each: SD 0.003
WIDE8 = BASE + np.stack([mixed(40 * i, 0) for i in range(8)])  # ~0.013 apart: SD 0.032


@pytest.mark.parametrize("spo, ppo, spo_curves, ppo_curves, verdict", [
    (STEADY, WIDE8, [FLAT] * 8, [FLAT] * 8, "reproduced"),  # SPO's seeds agree, PPO's spread; no collapse
    (STEADY, WIDE8, [COLLAPSE] * 8, [FLAT] * 8, "partly"),  # SD smaller, but 8 collapse events against 0
    (STEADY, SPREAD8, [FLAT] * 8, [FLAT] * 8, "negligible"),  # SD smaller by 0.003: below δ
    (WIDE8, STEADY, [FLAT] * 8, [FLAT] * 8, "not"),
    (WIDE8, STEADY, [FLAT] * 8, [COLLAPSE] * 8, "partly"),  # SD larger, but PPO collapses 8 times, SPO never
    (WIDE8, STEADY, [FLAT] * 7 + [COLLAPSE], [FLAT] * 8, "not"),  # 1 event against 0: noise (exact test)
])
def test_c5(spo, ppo, spo_curves, ppo_curves, verdict):
    s = study(rows("spo", spo, runs=EIGHT), rows("ppo", ppo, runs=EIGHT), runs=EIGHT,
              pass10={"spo": spo_curves, "ppo": ppo_curves})
    number, got = report.c5(s)
    assert got == verdict, number


def test_c5_sets_the_collapse_threshold_above_the_sft_revalidation_noise():
    """Step 0 of every run is the SFT policy validated with its seed's sampling seed: the threshold is
    the smallest drop that at most 5 % of ordered pairs of those repeats exceed, so a drop of 0.05 is
    noise here, and the rule prints the false-alarm rate."""
    starts = [0.64, 0.635, 0.62, 0.645, 0.65, 0.65, 0.64, 0.705, 0.725, 0.615]  # the committed export's SFT repeats
    ten = runs_with_seeds(10)
    curves_ = {sr: [[v, v - 0.06, v - 0.09 if sr == "ppo" and seed < 5 else v] for seed, v in enumerate(starts)]
               for sr in ("spo", "ppo")}
    s = study(rows("spo", BASE, runs=ten), rows("ppo", BASE, runs=ten), runs=ten, pass10=curves_)
    cal = report.collapse_threshold(s.curves)
    assert cal.repeats == 10 and cal.pairs == 90  # one repeat per seed: SPO's and PPO's seed s are one validation
    assert cal.false_alarm <= 0.05 and cal.drop == pytest.approx(0.085)  # 4 of 90 pairs fall more than 0.085
    assert report.collapse_events(s.curves, "spo", cal.drop) == 0  # drops of 0.06: noise
    assert report.collapse_events(s.curves, "ppo", cal.drop) == 5  # drops of 0.09
    assert report.collapse_events(s.curves, "spo", 0.05) == 10  # the old 0.05 counted every seed's noise
    rule = report.rule(report.c5, s)
    assert "false-alarm rate: 4.4 % of their 90 ordered pairs fall more than d" in rule and "d = 0.085" in rule
    assert "false-alarm rate 4.4 %" in report.c5(s)[0]


def test_c5_is_undecided_with_three_seeds_far_apart_or_one_seed():
    spread = np.stack([BASE - 1, BASE, BASE + 1])  # pass@10 0.5, 0.763, 0.895
    s = study(rows("spo", BASE), rows("ppo", spread), pass10={"spo": [FLAT] * 3, "ppo": [FLAT] * 3})
    number, got = report.c5(s)
    assert got == UNDECIDED and "MDE" in number, number
    one = RUNS[RUNS.seed == 0]
    s = study(rows("spo", BASE, runs=one), rows("ppo", BASE, runs=one), runs=one)
    assert report.c5(s)[1] == UNDECIDED


def test_c5_without_val_pass_at_10_judges_the_seed_sd_alone():
    """A validation protocol without k = 10 (real_smoke: n 4, ks [1, 4]) logs no val pass@10: the report
    says the collapse events were not counted and decides on the seed SD (it raised KeyError before)."""
    s = study(rows("spo", STEADY, runs=EIGHT), rows("ppo", WIDE8, runs=EIGHT), runs=EIGHT,
              pass10={"spo": [FLAT] * 8, "ppo": [FLAT] * 8})
    s.curves = s.curves.drop(columns="val/pass@10")
    assert report.collapse_events(s.curves, "spo", 0.05) is None and report.collapse_threshold(s.curves) is None
    number, got = report.c5(s)
    assert got == "reproduced" and "collapse events: not counted (no val pass@10 logged" in number, number


def _c6(half: dict, online: dict | None = None) -> report.Study:
    s = study(rows("spo", BASE), rows("spo_half_online", BASE + 1))  # half-online ahead on test at matched samples
    s.curves = val_curves({"spo": {"kl": 0.3, "fresh": 6144, "pass10": [0.5, 0.6, 0.6], **(online or {})},
                           "spo_half_online": {"fresh": 3072, **half}})
    return s


@pytest.mark.parametrize("half, verdict", [
    ({"kl": 0.3, "pass10": [0.5, 0.6, 0.6]}, "reproduced"),  # as far, as good, half the fresh samples on the way
    ({"kl": 0.1, "pass10": [0.5, 0.55, 0.6]}, "partly"),  # as good at its KL 0.1, which online SPO reached sooner
    ({"kl": 0.3, "pass10": [0.5, 0.52, 0.52]}, "not"),  # 0.08 below at matched KL
    ({"kl": 0.3, "pass10": [[0.5, 0.6, 0.52], [0.5, 0.6, 0.6], [0.5, 0.6, 0.68]]}, UNDECIDED),  # seeds far apart
])
def test_c6(half, verdict):
    number, got = report.c6(_c6(half))
    assert got == verdict, number
    fresh = RUNS.groupby("study_run").fresh_samples.first()
    assert (f"at matched samples (test, policy protocol, {fresh['spo_half_online']:.0f} vs {fresh['spo']:.0f} fresh "
            "samples)") in number  # the export's comparison protocol: sampled here, exact where the export has it
    assert "Δ pass@10 +0.132" in number and "Δ val pass@1" in number  # ahead on test at matched samples: beside it


def test_c6_reads_the_fresh_samples_at_matched_kl():
    """Half-online at KL 0.1 after 3072 fresh samples; online SPO passed KL 0.1 a third of the way to
    its 0.3, after 6144 / 3 = 2048."""
    number, got = report.c6(_c6({"kl": 0.1, "pass10": [0.5, 0.55, 0.6]}))
    assert "κ* 0.1 nats" in number and "fresh samples when reaching κ*: half-online 3072, online 2048" in number
    assert got == "partly"


def test_every_verdict_is_undecided_at_smoke_scale():
    """A smoke-sized export (one seed of every run, as conf/study gives the smoke scale) cut from the
    committed one: no claim that rests on an interval can be judged; C4 rests on the benchmark and Q̂0's
    job, which do not depend on the seeds."""
    t = {name: (d[d.seed == 0] if "seed" in d and name != "exact" else d) for name, d in FRESH.items()}
    rows_ = report.claims(report.Study(t))
    assert [r.id for r in rows_] == [f"C{i}" for i in range(1, 7)]
    assert all(r.verdict == UNDECIDED for r in rows_ if r.id != "C4"), [(r.id, r.verdict) for r in rows_]
    assert next(r for r in rows_ if r.id == "C4").verdict == report.c4(report.Study(FRESH))[1]


# ---------------------------------------------------------------- matched KL
def test_at_kl_reads_the_first_time_a_run_reaches_each_level():
    kl, y = np.array([0.0, 0.2, 0.1, 0.4]), np.array([1.0, 0.8, 5.0, 0.2])  # the KL falls back at step 2: skipped
    got = common.at_kl(kl, y, np.array([0.0, 0.1, 0.2, 0.3, 0.5]))
    assert got[:4] == pytest.approx([1.0, 0.9, 0.8, 0.5]) and np.isnan(got[4])  # 0.5: beyond its reach


def _kl_curves(final_kl: dict[str, float], seeds: int = 3) -> pd.DataFrame:
    """Both runs on one metric-vs-KL line, val/pass@10 = 0.6 − KL (± a small per-seed offset, shared by
    the runs' seed s, as validation with the same sampling seed shares it), each to its own final KL."""
    out = []
    for sr, top in final_kl.items():
        for seed in range(seeds):
            for i, step in enumerate((0, 50, 100)):
                kl = top * i / 2 * (1 + 0.05 * seed)
                out.append({"run_name": f"{sr}-s{seed}", "study_run": sr, "seed": seed, "step": step,
                            "val/kl_ref": kl, "val/pass@10": 0.6 - kl + 0.01 * seed})
    return pd.DataFrame(out)


def test_spo_ahead_only_because_it_moved_less_reads_so():
    s = study(rows("spo", BASE), rows("ppo", BASE))
    s.curves = _kl_curves({"spo": 0.1, "ppo": 0.3})
    m = report.matched(s, "spo", "ppo", "pass@10", 0.02)
    assert m.kl == pytest.approx(0.1)  # the smallest final KL of any seed: SPO seed 0
    assert m.samples[0] == pytest.approx(0.2 * 1.05) and m.samples[1] > 0  # ahead at the end ...
    assert m.at_kl == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)  # ... level at equal KL (the same line)
    assert m.reading.startswith("ahead only at matched samples")
    assert "moving less from π_ref" in report.matched_text(m, "val Δ pass@10")


def test_spo_ahead_at_matched_kl_too_reads_so():
    s = study(rows("spo", BASE), rows("ppo", BASE))
    c = _kl_curves({"spo": 0.1, "ppo": 0.3})
    c.loc[(c.study_run == "spo") & (c.step > 0), "val/pass@10"] += 0.05  # above the line at every KL
    s.curves = c
    assert report.matched(s, "spo", "ppo", "pass@10", 0.02).reading.startswith("both readings agree: ahead")
    assert report.matched(s, "spo", "ppo", "effective_programs", 0.5) is None  # not logged


# ---------------------------------------------------------------- wall time, rules and the report
def test_the_wall_time_comes_from_jobs_csv():
    jobs = pd.DataFrame({"rule": ["data", "rl", "rl", "eval"], "name": ["", "spo_s0", "ppo_s0", "spo-s0"],
                         "s": [60.0, 600.0, 900.0, 120.0], "max_rss_mb": 1.0,
                         "end_time": [1060.0, 1700.0, 2000.0, 2200.0]})
    # running: data 1000-1060, spo 1100-1700, ppo 1100-2000, eval 2080-2200: busy 60 + 900 + 120 = 1080
    # (gaps 1060-1100 and 2000-2080 not counted); span 1000-2200 = 1200; 60 + 600 + 900 + 120 = 1680
    assert report.wall_time(jobs) == (1080.0, 1200.0, 1680.0)
    s = study(rows("spo", BASE), rows("ppo", BASE), jobs=jobs)
    text = report.settings(s)
    assert "**18.0 min** with a job of this study running" in text
    assert "20.0 min from the first job's start to the last job's end" in text
    assert "28.0 job-minutes in all (rl 25.0, eval 2.0, data 1.0)" in text


def test_each_rule_is_its_docstring_with_the_defaults_filled_and_names_its_delta():
    assert set(report.CLAIMS) == {f"C{i}" for i in range(1, 7)}
    for cid, (_, _, fn) in report.CLAIMS.items():
        rule = report.rule(fn)
        assert "{" not in rule and "\n" not in rule and rule.split()[:3] == fn.__doc__.split()[:3], cid
        assert "δ" in rule, cid
    assert "margin δ = 0.02" in report.rule(report.c6) and "at most 0.05 of their ordered pairs" in report.rule(report.c5)
    assert "δ = 0.02" in report.rule(report.c1) and "δ = 0.1 programs" in report.rule(report.c2)
    assert "ratio is ≤ e^−0.1" in report.rule(report.c4)
    assert f"the {stats.CONFIDENCE * 100:g} % CI" in report.rule(report.c1)


def test_report_of_the_fresh_committed_export(tmp_path):
    s = report.Study(FRESH)
    rows_ = report.claims(s)
    assert [r.id for r in rows_] == [f"C{i}" for i in range(1, 7)]
    text = report.render(s, rows_, "default", "default", ROOT / "results" / "figures", tmp_path / "README.md")
    for r in rows_:
        assert text.count(r.rule) == 1  # each rule stated once
    assert text.count(report.POWER_RULE) == 1 and "MDE = 1.43 × the 95 % CI half-width" in text
    assert f"{stats.N_BOOT} resamples" in text and "2 cores" not in text and "1 thread" not in text
    busy, _, total = report.wall_time(FRESH["jobs"])
    assert f"**{busy / 60:.1f} min**" in text and f"{total / 60:.1f} job-minutes" in text
    assert text.count("![F") == 9
    assert "| SPO against | val metric (δ) | κ* (nats) |" in text and "| PPO | pass@10 (0.02) |" in text
    assert "| `effective_programs` |" in text


def test_the_committed_claims_table_is_what_the_report_computes():
    """The committed claims table is what the scripts compute from the committed CSVs: never edited by
    hand (regenerated with the study)."""
    rows_ = report.claims(report.Study(REAL))
    assert (ROOT / "results" / "tables" / "claims_default.md").read_text() == report.claims_table(rows_) + "\n"


def test_the_export_keeps_only_this_studys_jobs():
    """jobs.csv (and so the report's wall time) holds the shared jobs and this study's runs, never another
    study's runs that share the benchmarks folder (analysis/export.py study_jobs, its doctest)."""
    import doctest

    import export

    result = doctest.testmod(export)
    assert result.attempted >= 1 and result.failed == 0
    jobs = pd.read_csv(ROOT / "results" / "data" / "jobs.csv")
    assert not jobs.name.fillna("").str.contains("_lr").any()  # the lr sweep's runs are not the study's


def _setup(scale: str) -> pd.DataFrame:
    """setup.csv as the export writes it at ``scale``, with the committed export's protocol settings."""
    u = FRESH["setup"]
    protocols = {}
    for key, value in zip(u.key, u.value):
        if key.startswith("protocol."):
            _, name, field = key.split(".", 2)
            protocols.setdefault(name, {})[field] = value
    return export.setup_table(scale, load_config("sft", [f"scale={scale}"]), protocols)


def test_the_settings_name_the_scales_task_and_model():
    """The miniature's report says it trains from scratch; real_smoke's says SmolLM2 on HumanEval with SFT
    off (it said "list-DSL ... trained from scratch" at every scale), read from the exported setup.csv."""
    smoke = study(rows("spo", BASE), rows("ppo", BASE), setup=_setup("smoke"))
    assert "list-DSL program synthesis" in report.task_line(smoke) and "from scratch" in report.task_line(smoke)
    real_smoke = study(rows("spo", BASE), rows("ppo", BASE), setup=_setup("real_smoke"))
    real = report.task_line(real_smoke)
    assert "HumanEval" in real and "`smollm2`" in real and "SFT off" in real and "from scratch" not in real
    assert "unseen classes" in report.settings(smoke) and "unseen classes" not in report.settings(real_smoke)


def test_the_settings_state_each_entrys_beta_where_entries_differ():
    """β edited for SPO alone: the report says the main comparison ran at PPO's, GRPO's and RLOO's 0.05
    and online SPO at 0.1 (it printed the first run's β, 0.1, as every entry's)."""
    s = study(rows("spo", BASE), rows("ppo", BASE))
    assert "β 0.05 in the main comparison" in report.settings(s)
    runs = RUNS.assign(beta=RUNS.beta.where(RUNS.study_run != "spo", 0.1))
    text = report.settings(study(rows("spo", BASE), rows("ppo", BASE), runs=runs))
    assert "β 0.05 (SPO online 0.1) in the main comparison" in text, text
    runs = RUNS.assign(updates=RUNS.updates.where(RUNS.study_run != "ppo", 48))  # a budget edited for PPO
    assert "RL budget, every run: 96 updates × 64 trajectories" in report.settings(s)
    text = report.settings(study(rows("spo", BASE), rows("ppo", BASE), runs=runs))
    assert "RL budget: 96 (PPO 48) updates × 64 trajectories" in text, text


def test_the_report_quotes_the_exported_protocol_and_labels_not_todays_conf():
    """The protocol's temperature and the entries' labels come from the export (setup.csv, study.csv): a
    conf/ edited after the study does not change what the report says about its runs."""
    u = FRESH["setup"].copy()
    u.loc[u.key == "protocol.paper.temperature", "value"] = "0.6"
    entries = FRESH["study"].assign(label=FRESH["study"].label.where(FRESH["study"].study_run != "ppo", "PPO-clip"))
    s = study(rows("spo", BASE, protocol="paper"), rows("ppo", BASE, protocol="paper"), setup=u, entries=entries)
    text = report.settings(s)
    assert "`paper` protocol (T 0.6, top-p 0.95)" in text, text
    assert report.labels(s.data)["ppo"] == "PPO-clip"


def test_the_claims_compare_the_entries_the_study_gives_each_role():
    """Which entries C1 compares comes from study.csv's roles: renamed entries are still compared, and a
    study without an online-SPO role has no C1."""
    renamed = {"spo": "spo_v2", "ppo": "ppo_v2"}
    runs = RUNS.assign(study_run=RUNS.study_run.replace(renamed))
    entries = FRESH["study"].assign(study_run=FRESH["study"].study_run.replace(renamed))
    pp = [rows(r, BASE + (r == "spo"), protocol=pr) for r in ("spo", "ppo") for pr in ("paper", "policy")]
    pp = [d.assign(study_run=d.study_run.replace(renamed)) for d in pp]
    s = study(*pp, runs=runs, entries=entries)
    assert s.e["spo_online"] == "spo_v2" and report.c1(s)[1] == "reproduced"
    no_role = entries.assign(role=entries.role.where(entries.study_run != "spo_v2", ""))
    assert report.c1(study(*pp, runs=runs, entries=no_role)) is None


def test_the_committed_study_and_setup_are_what_the_export_writes(tmp_path):
    """results/data/study.csv and setup.csv are analysis/export.py's study_table and setup_table of the
    published default study (its protocols as conf/protocol gives them), and read back through common
    as the figures and the report read them: entries in the study file's order, labels, colours, roles."""
    from omegaconf import OmegaConf

    from spolab.config import load_protocol
    from spolab.study import entries, load_study

    specs = load_study("default", "default")
    q0 = load_config("q0", ["scale=default"])  # Q̂0's samples, as its MLflow run records them
    protocols = yaml.safe_load((ROOT / "workflow/config.yaml").read_text())["eval_protocols"]  # the SFT model's
    written = {"study": export.study_table(specs),
               "setup": export.setup_table("default", load_config("sft", ["scale=default"]),
                                           {p: dict(sorted(OmegaConf.to_container(load_protocol(p)).items()))
                                            for p in protocols},  # as eval.json holds them
                                           {"n_ref": q0.n_ref, "n_prompts": q0.task.splits.rl})}
    for name, t in written.items():
        t.to_csv(tmp_path / f"{name}.csv", index=False, float_format="%.10g")
        assert (tmp_path / f"{name}.csv").read_text() == (REAL / f"{name}.csv").read_text(), name
    first = entries(specs)
    assert common.entries(tmp_path) == list(first)
    assert common.entries(tmp_path, "main") == [r for r, e in first.items() if e.group == "main"]
    assert common.labels(tmp_path) == {**{r: e.label for r, e in first.items()}, "sft": common.SFT["label"]}
    assert common.colours(tmp_path) == {**{r: e.colour for r, e in first.items()}, "sft": common.SFT["colour"]}
    assert common.roles(tmp_path) == {e.role: r for r, e in first.items() if e.role}
    assert common.protocol_text(tmp_path, "paper") == "T 0.4, top-p 0.95"
    assert common.protocol_text(tmp_path, "policy") == "T 1"
    with pytest.raises(SystemExit, match="study.csv not in"):
        common.study({"runs": RUNS0})  # an export from before study.csv: rerun the export


# ---------------------------------------------------------------- ood: problems clustered in behaviour classes
def _clustered(n_classes: int = 30, per_class: int = 10, seeds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(seeds × problems) pass@10-like scores whose problems share their class's difficulty (most of
    the variance between classes, as on ood), and the problems' class labels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(n_classes), per_class)
    level = rng.uniform(0, 0.3, n_classes)[labels]  # each class's difficulty
    return np.clip(level + rng.normal(0, 0.03, (seeds, len(labels))), 0, 1), labels


def test_the_cluster_bootstrap_widens_the_interval_of_clustered_problems():
    m, labels = _clustered()
    iid = stats.interval(m, np.random.default_rng(0))
    by_class = stats.interval(m, np.random.default_rng(0), clusters=labels)
    assert iid[0] == by_class[0]  # the same point
    assert (by_class[2] - by_class[1]) > 2 * (iid[2] - iid[1])  # 300 "independent" problems are 30 classes
    # the classes' SE: the SD of 30 class means / √30, the interval about ±1.96 of it
    se = m.mean(axis=0).reshape(30, 10).mean(axis=1).std(ddof=1) / np.sqrt(30)
    assert (by_class[2] - by_class[1]) / 2 == pytest.approx(1.96 * se, rel=0.25)
    # problems that do not cluster (labels shuffled across classes of equal difficulty): about the iid width
    flat = np.random.default_rng(1).normal(0.15, 0.1, (3, 300))
    w = [np.subtract(*stats.interval(flat, np.random.default_rng(0), clusters=c)[2:0:-1]) for c in (None, labels)]
    assert w[1] == pytest.approx(w[0], rel=0.3)
    d = stats.diff_interval(m[:1] + 0.01, m[:1], np.random.default_rng(0), clusters=labels)  # one seed: no seed draw
    assert d[0] == pytest.approx(0.01) and d[1] == pytest.approx(0.01) and d[2] == pytest.approx(0.01)  # paired


def _ood_rows(study_run: str, correct: np.ndarray, labels: np.ndarray | None) -> pd.DataFrame:
    r = rows(study_run, correct, split="ood")
    if labels is not None:
        r.insert(r.columns.get_loc("problem_id") + 1, "class_id", np.tile(labels, len(r) // len(labels)))
    return r


def test_the_report_resamples_ood_classes_where_the_export_has_them():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), P // 40)
    hard = rng.integers(0, 4, 40)[labels]  # correct samples per problem: a class's difficulty
    spo, ppo = hard + rng.integers(0, 2, P), hard + rng.integers(0, 2, P)
    test_rows = [rows("spo", BASE), rows("ppo", BASE)]
    with_classes = study(*test_rows, _ood_rows("spo", spo, labels), _ood_rows("ppo", ppo, labels))
    without = study(*test_rows, _ood_rows("spo", spo, None), _ood_rows("ppo", ppo, None))
    a, b = (x.diff("spo", "ppo", report.passk_value(10), split="ood") for x in (with_classes, without))
    assert a[0] == b[0] and a[2] - a[1] > b[2] - b[1]  # wider, by class
    p, q = (x.point("spo", report.passk_value(10), split="ood") for x in (with_classes, without))
    assert p[2] - p[1] > 1.5 * (q[2] - q[1])
    assert with_classes.diff("spo", "ppo", report.passk_value(10)) == without.diff("spo", "ppo", report.passk_value(10))
    assert "resamples the classes, then the problems within each drawn class" in report.settings(with_classes)
    assert "from 40 held-out behaviour classes" in report.settings(with_classes)
    text = report.settings(without)
    assert "**ood intervals treat its problems as independent**" in text and "too narrow" in text


def test_ood_intervals_resample_the_classes_where_the_export_has_them_and_say_so_where_not():
    """The committed export has each problem's class: its ood intervals resample the classes. An export
    from before class_id cannot, and its report says its ood intervals treat the problems as independent."""
    assert FRESH["eval_per_problem"].loc[FRESH["eval_per_problem"].split == "ood", "class_id"].notna().all()
    assert "each replicate resamples the classes" in report.settings(report.Study(FRESH))
    older = {**FRESH, "eval_per_problem": FRESH["eval_per_problem"].drop(columns="class_id")}
    assert "**ood intervals treat its problems as independent**" in report.settings(report.Study(older))


def test_the_export_reads_each_problems_class_from_the_data_split(tmp_path):
    from spolab.tasks.problems import Problem
    from spolab.utils import write_jsonl

    probs = [Problem(f"ood-{i:06d}", "ood", cid, "sort", [[[1, 2], [1, 2]]], []) for i, cid in enumerate([7, 7, 3])]
    write_jsonl(tmp_path / "ood.jsonl", (p.to_json() for p in probs))
    got = export.problem_classes(tmp_path, ["ood", "test"])  # no test split here: its rows keep an empty class
    assert got == {("ood", "ood-000000"): 7, ("ood", "ood-000001"): 7, ("ood", "ood-000002"): 3}


def test_the_export_records_q0s_samples_in_the_setup():
    cfg = load_config("sft", ["scale=smoke"])
    t = export.setup_table("smoke", cfg, {}, {"n_ref": "16", "n_prompts": 4000.0})
    u = dict(zip(t.key, t.value))
    assert u["q0.n_ref"] == 16 and u["q0.n_prompts"] == 4000
    assert "q0.n_ref" not in set(export.setup_table("smoke", cfg, {}).key)


# ---------------------------------------------------------------- κ*: one function for the report and F9
def test_the_report_and_f9_compute_kappa_for_the_pair_only():
    """κ* of SPO against PPO is theirs, not lowered by a third run that moves less (half-online): the
    report's matched() and F9 both take it from common.matched_kl."""
    s = study(rows("spo", BASE), rows("ppo", BASE))
    c = _kl_curves({"spo": 0.3, "ppo": 0.4, "spo_half_online": 0.05})
    s.curves = c
    m = report.matched(s, "spo", "ppo", "pass@10", 0.02)
    assert m.kl == pytest.approx(0.3) and m.kl == common.matched_kl(c, "spo", "ppo", "val/pass@10", report.SEED).kappa
    assert common.matched_kl(c, "spo", "ppo", "val/pass@10", report.SEED).at_kl == m.at_kl


def _decisive_study(spo05, spo5, exact_mass=None) -> report.Study:
    """SPO and PPO at β 0.05 (the committed entries) and at β 0.5 (constructed entries of the ablation
    group): ``spo05`` / ``spo5`` are the n_correct changes of SPO against PPO at each β."""
    base = RUNS[RUNS.study_run.isin(["spo", "ppo"])]
    extra = pd.concat([base[base.study_run == r].assign(study_run=f"{r}_beta05", group="ablation", beta=0.5,
                                                         run_name=lambda d, r=r: f"{r}_beta05-s" + d.seed.astype(str))
                       for r in ("spo", "ppo")], ignore_index=True)
    runs = pd.concat([base, extra], ignore_index=True)
    pp = [rows("spo", BASE + spo05, runs=runs), rows("ppo", BASE, runs=runs),
          rows("spo_beta05", BASE + spo5, runs=runs), rows("ppo_beta05", BASE, runs=runs)]
    if exact_mass is not None:
        pp = [d.assign(**{"exact/success_mass": exact_mass, "exact/entropy_correct": 1.0}) for d in pp]
    entries = pd.DataFrame({"study_run": ["spo", "ppo", "spo_beta05", "ppo_beta05"],
                            "label": ["SPO online", "PPO", "SPO β 0.5", "PPO β 0.5"],
                            "role": ["spo_online", "ppo", "", ""], "group": ["main", "main", "ablation", "ablation"]})
    entries = FRESH["study"].iloc[:0].reindex(columns=FRESH["study"].columns).pipe(
        lambda e: pd.concat([e, entries], ignore_index=True))
    return study(*pp, runs=runs, entries=entries)


def test_the_decisive_table_orders_settings_by_beta_and_compares_each_spo_with_ppo_at_its_beta():
    s = _decisive_study(mixed(10, 24), mixed(0, 0), exact_mass=0.3)
    table = report.decisive_table(s, report.labels(s.data)).splitlines()
    assert [line.split(" | ")[0].lstrip("| ") for line in table[2:]] == ["SPO online", "PPO", "SPO β 0.5", "PPO β 0.5"]
    assert "exact success mass" in table[0] and "0.300 [0.300, 0.300]" in table[2]  # exact columns where exported
    ppo_row = table[3].split(" | ")
    assert ppo_row[-2:] == ["–", "– |"]  # PPO is not compared with itself
    assert report.ci(*s.diff("spo", "ppo", common.passk_value(10))) in table[2]


def test_the_decisive_table_leaves_out_exact_columns_the_export_lacks():
    s = _decisive_study(mixed(0, 0), mixed(0, 0))
    assert "exact" not in report.decisive_table(s, report.labels(s.data)).splitlines()[0]


@pytest.mark.parametrize("spo05, spo5, expected", [
    (mixed(0, 100), mixed(100, 0), {"beats PPO": "SPO β 0.5", "trails PPO": "SPO online"}),  # Δ −0.066, +0.033
    (mixed(10, 24), mixed(24, 0), {"beats PPO by < δ (negligible)": "SPO β 0.5",  # Δ +0.008: significant, < δ
                                   "trails PPO by < δ (negligible)": "SPO online"}),  # Δ −0.013
    (mixed(0, 0), noisy(40), {"level": "SPO online", "undecided": "SPO β 0.5"}),  # no change; a wide CI around 0
])
def test_the_decisive_summary_reads_each_spo_setting_against_ppo_in_both_directions_with_its_delta(spo05, spo5, expected):
    s = _decisive_study(spo05, spo5)
    line = report.decisive_summary(s, report.labels(s.data))
    assert line.startswith("- pass@10, SPO − PPO at the same β (δ 0.02):")
    words = ["beats PPO", "beats PPO by < δ (negligible)", "level", "trails PPO by < δ (negligible)", "trails PPO",
             "undecided"]
    for w in words:
        assert f"{w}: {expected.get(w, 'none')}" in line, (w, line)


def test_the_decisive_summary_reads_the_exact_entropy_among_correct_programs_against_its_own_delta():
    s = _decisive_study(mixed(0, 0), mixed(0, 0), exact_mass=0.3)
    spo = s.pp.study_run == "spo"
    s.pp.loc[spo, "exact/entropy_correct"] = 1.05  # +0.05 nats on every problem: significant, below δ 0.1
    line = report.decisive_summary(s, report.labels(s.data)).splitlines()[1]
    assert line.startswith("- exact entropy among correct programs, SPO − PPO at the same β (δ 0.1):")
    assert "beats PPO by < δ (negligible): SPO online +0.050" in line or "beats PPO by < δ (negligible): SPO online 0.050" in line




def test_a_pretrained_study_is_read_against_pi_ref_under_its_one_protocol():
    """real_smoke evaluates under `paper` only: the comparison protocol falls back to it (no exact, no policy),
    and the report's section against π_ref gives each run's test pass@1 and mean reward, their differences
    from π_ref's on the same problems (computed here by hand), the fresh reward's first and last third of the
    updates and the validation's first and last points; the miniature's report has no such section."""
    one = runs_with_seeds(1)
    ups = np.r_[np.ones(P // 2), np.zeros(P - P // 2)].astype(int)  # SPO: one more correct sample on half the problems
    pp = pd.concat([rows(r, BASE + (ups if r == "spo" else 0), protocol="paper", runs=one)
                    for r in ("sft", "spo", "ppo")], ignore_index=True)
    pp["mean_reward"] = pp.n_correct / N + 0.1
    real = study(pp, runs=one, setup=_setup("real_smoke"))
    assert report.comparison_protocol(real.pp) == "paper" and real.compare == "paper"
    real.curves = pd.DataFrame([{"run_name": f"{r}-s0", "study_run": r, "seed": 0, "step": i,
                                 "rollout/reward": 0.1 * i if r == "spo" else 0.2, "val/pass@1": 0.05 * i}
                                for r in ("spo", "ppo") for i in range(6)])
    text = report.against_reference(real, report.labels(real.data))
    row = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    want = (P // 2) / N / P  # Δ pass@1: 1/N more on half the problems
    assert f"{want:+.3f} [" in row["SPO online"] and "+0.000" in row["PPO"], text
    assert f"{want:+.3f} [" in row["SPO online"].split(" | ")[5]  # the mean reward moves with it
    assert "0.050 → 0.450" in row["SPO online"] and "0.200 → 0.200" in row["PPO"]  # first/last third of 6 updates
    assert "0.000 → 0.250" in row["SPO online"] and "π_ref (SFT off)" in row
    rendered = report.render(real, report.claims(real), "real_smoke", "default", ROOT / "results/figures",
                             ROOT / "results/README.md")
    assert "## Against π_ref" in rendered
    smoke = study(rows("spo", BASE), rows("ppo", BASE), setup=_setup("smoke"))
    assert report.comparison_protocol(smoke.pp) == "policy"
    assert "## Against π_ref" not in report.render(smoke, report.claims(smoke), "smoke", "default",
                                                   ROOT / "results/figures", ROOT / "results/README.md")
