"""The claims report (analysis/report.py): each claim's verdict on constructed data, for every
outcome (reproduced / partly / not / undecided (underpowered)), the power rule, the comparison at
matched KL, references from runs.csv, the wall time from jobs.csv, the rule printed from the claim's
docstring, and the report of the committed export.

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
    cols = list(pd.read_csv(REAL / "eval_per_problem.csv", nrows=0).columns)
    assert cols[: len(PP_COLUMNS)] == PP_COLUMNS
    assert cols[len(PP_COLUMNS) :] == [c for c in export.EXACT_PER_PROBLEM if c in cols]  # where evaluations have them
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


def test_decide_and_direction():
    narrow, wide = (0.01, 0.005, 0.015), (0.01, -0.03, 0.05)
    assert report.decide("partly", (narrow, 0.02, 3)) == "partly"
    assert report.decide("partly", (narrow, 0.02, 3), (wide, 0.02, 3)) == UNDECIDED
    assert report.decide("partly", (narrow, 0.02, 1)) == UNDECIDED
    assert report.direction(narrow, 0.02, 3) == "ahead" and report.direction(wide, 0.02, 3) == "undecided"
    assert report.direction((-0.01, -0.015, -0.005), 0.02, 3) == "behind"
    assert report.direction((0.0, -0.005, 0.005), 0.02, 3) == "level"


# ---------------------------------------------------------------- C1 … C6, every outcome
@pytest.mark.parametrize("spo, verdict", [(BASE + 1, "reproduced"), (BASE + mixed(24, 10), "partly"),
                                          (BASE + mixed(10, 24), "not"), (BASE + noisy(40), UNDECIDED)])
def test_c1(spo, verdict):
    s = study(rows("spo", spo, protocol="paper"), rows("ppo", BASE, protocol="paper"),
              rows("spo", spo), rows("ppo", BASE))
    number, got = report.c1(s)
    assert got == verdict, number
    p, lo, hi = s.diff("spo", "ppo", report.passk_value(10), protocol="paper")
    assert {"reproduced": lo > 0, "partly": p > 0 >= lo, "not": p <= 0, UNDECIDED: True}[verdict]
    assert stats.powered(lo, hi, 0.02, 3) == (verdict != UNDECIDED)
    assert f"(MDE {stats.detectable(lo, hi):.3f})" in number


def test_c1_is_undecided_with_one_seed_and_needs_the_paper_protocol():
    one = RUNS[RUNS.seed == 0]
    s = study(*(rows(r, BASE + (r == "spo"), protocol=pr, runs=one) for r in ("spo", "ppo") for pr in ("paper", "policy")),
              runs=one)
    assert report.c1(s)[1] == UNDECIDED  # Δ +0.13 with a zero-width interval, but one seed
    assert report.c1(study(rows("spo", BASE), rows("ppo", BASE))) is None


@pytest.mark.parametrize("per_solved, effective, verdict", [
    (1.3, 10.0, "reproduced"),  # both above PPO's 1.1 and 9.0
    (1.3, 8.0, "partly"),  # more correct programs per solved problem, fewer programs overall
    (1.0, 8.0, "not"),
    (1.1 + np.random.default_rng(0).normal(0, 1.5, P), 10.0, UNDECIDED),  # per-solved counts too noisy for δ 0.1
])
def test_c2(per_solved, effective, verdict):
    s = study(rows("spo", BASE, per_solved=per_solved, effective=effective, entropy=0.4),
              rows("ppo", BASE, per_solved=1.1, effective=9.0, entropy=0.3))
    number, got = report.c2(s)
    assert got == verdict, number
    assert "Δ entropy/token +0.100" in number


def test_c2_averages_the_per_solved_counts_over_solved_problems_only():
    spo = np.r_[np.zeros(P // 2), np.full(P // 2, 2)]  # half the problems unsolved: no per-solved value there
    s = study(rows("spo", spo, per_solved=1.5), rows("ppo", BASE, per_solved=1.5))
    assert s.diff("spo", "ppo", "distinct_correct_per_solved")[0] == pytest.approx(0.0)
    assert s.diff("spo", "ppo", "distinct_correct_programs")[0] == pytest.approx(-0.75)  # the pass rate, again


@pytest.mark.parametrize("expert, random, verdict", [(+1, 0, "reproduced"), (+1, -1, "partly"), (0, -1, "not"),
                                                     (noisy(40), 0, UNDECIDED)])
def test_c3(expert, random, verdict):
    s = study(rows("spo", BASE), rows("spo_expert", BASE + expert), rows("spo_random", BASE + random),
              rows("spo_half_online", BASE))
    number, got = report.c3(s)
    assert got == verdict, number
    if verdict != UNDECIDED:
        assert number.startswith(f"{int(np.all(expert == 1))} of 3 sources help, {int(random < 0)} hurt")
        assert "3 of 3 comparisons powered" in number


def test_c3_judges_each_source_against_its_reference_from_runs_csv():
    runs = RUNS.assign(reference=RUNS.reference.where(RUNS.study_run != "spo_expert", "ppo"))
    s = study(rows("spo", BASE), rows("ppo", BASE - 1), rows("spo_expert", BASE), rows("spo_half_online", BASE),
              runs=runs)
    number, got = report.c3(s)  # expert equals SPO, but its reference is PPO, which it beats
    assert got == "reproduced" and number.startswith("1 of 2 sources help"), number
    with pytest.raises(SystemExit, match="no `reference` column"):
        report.c3(study(rows("spo", BASE), rows("spo_expert", BASE), runs=RUNS.drop(columns="reference")))


def _bench(step, state):
    return [dict(variant=v, size="s", device="cpu", params_M=0.45, step_s=t, update_s=t / 2, train_state_MB=m,
                 peak_rss_above_baseline_MB=200.0) for v, t, m in [("spo", step, state), ("ppo", 1.0, 10.0)]]


def _times(mean: float, spread: float, seeds: int = 3, updates: int = 20, seed: int = 0) -> np.ndarray:
    return mean * np.exp(np.random.default_rng(seed).uniform(-spread, spread, (seeds, updates)))


@pytest.mark.parametrize("spo_s, spread, state, verdict", [
    (0.4, 0.1, 6.0, "reproduced"), (0.4, 0.1, 12.0, "partly"), (1.5, 0.1, 12.0, "not"),
    (0.9, 1.5, 6.0, UNDECIDED),  # step times too noisy to tell 10 %
])
def test_c4(spo_s, spread, state, verdict):
    s = study(rows("spo", BASE), rows("ppo", BASE), bench=_bench(spo_s, state),
              step_s={"spo": _times(spo_s, spread), "ppo": _times(1.0, spread, seed=1)})
    number, got = report.c4(s)
    assert got == verdict and f"step time ×{spo_s:.2f}" in number, number


def test_c4_needs_the_benchmark():
    assert report.c4(study(rows("spo", BASE), rows("ppo", BASE))) is None


FLAT, COLLAPSE = [0.5, 0.5, 0.5], [0.5, 0.4, 0.5]  # val pass@10 at steps 0, 50, 100; 0.4 is one collapse event
EIGHT = runs_with_seeds(8)
STEADY = np.tile(BASE, (8, 1))  # 8 seeds that agree: SD 0
SPREAD8 = BASE + np.stack([mixed(4 * i, 0) for i in range(8)])  # 8 seeds whose means differ by ~0.001 each


@pytest.mark.parametrize("spo, ppo, spo_curves, verdict", [
    (STEADY, SPREAD8, [FLAT] * 8, "reproduced"),  # SPO's seeds agree, PPO's spread a little; no collapse
    (STEADY, SPREAD8, [COLLAPSE] * 8, "partly"),  # SD smaller, but more collapse events than PPO
    (SPREAD8, STEADY, [COLLAPSE] * 8, "not"),
])
def test_c5(spo, ppo, spo_curves, verdict):
    s = study(rows("spo", spo, runs=EIGHT), rows("ppo", ppo, runs=EIGHT), runs=EIGHT,
              pass10={"spo": spo_curves, "ppo": [FLAT] * 8})
    number, got = report.c5(s)
    assert got == verdict, number


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
    s = study(rows("spo", STEADY, runs=EIGHT), rows("ppo", SPREAD8, runs=EIGHT), runs=EIGHT,
              pass10={"spo": [FLAT] * 8, "ppo": [FLAT] * 8})
    s.curves = s.curves.drop(columns="val/pass@10")
    assert report.collapse_events(s.curves, "spo", 0.05) is None
    number, got = report.c5(s)
    assert got == "reproduced" and "collapse events: not counted (no val pass@10 logged)" in number, number


@pytest.mark.parametrize("half, verdict", [(BASE, "reproduced"), (BASE + mixed(91, 64), "partly"),
                                           (BASE - 1, "not"), (BASE + noisy(40), UNDECIDED)])
def test_c6(half, verdict):
    s = study(rows("spo", BASE), rows("spo_half_online", half))
    number, got = report.c6(s)
    assert got == verdict, number
    fresh = RUNS.groupby("study_run").fresh_samples.first()
    assert number.endswith(f"with {fresh['spo_half_online']:.0f} vs {fresh['spo']:.0f} fresh samples")  # runs.csv


def test_every_verdict_is_undecided_at_smoke_scale():
    """A smoke-sized export (one seed of every run, as conf/study gives the smoke scale) cut from the
    committed one: no claim has the power to judge."""
    t = {name: (d[d.seed == 0] if "seed" in d and name != "exact" else d) for name, d in FRESH.items()}
    rows_ = report.claims(report.Study(t))
    assert [r.id for r in rows_] == [f"C{i}" for i in range(1, 7)]
    assert all(r.verdict == UNDECIDED for r in rows_), [(r.id, r.verdict) for r in rows_]


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
    assert "margin δ = 0.02" in report.rule(report.c6) and "more than 0.05 below" in report.rule(report.c5)
    assert "δ = 0.02" in report.rule(report.c1) and "δ_c = 0.1 and δ_a = 0.5" in report.rule(report.c2)
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
    written = {"study": export.study_table(specs),
               "setup": export.setup_table("default", load_config("sft", ["scale=default"]),
                                           {p: OmegaConf.to_container(load_protocol(p))
                                                       for p in ("policy", "paper")})}
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
