"""The claims report (analysis/report.py): each claim's verdict on constructed data, for every
outcome (reproduced / partly / not), the rule printed from the claim's docstring, and the report
of the real committed export.

The constructed tables have the real export's schema: eval_per_problem rows are built with the
columns and dtypes of results/data/eval_per_problem.csv, runs rows are the real runs.csv rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analysis"))
import report  # noqa: E402
import stats  # noqa: E402

REAL = ROOT / "results" / "data"
PP_DTYPES = pd.read_csv(REAL / "eval_per_problem.csv", nrows=50).dtypes.to_dict()  # column -> dtype
RUNS = pd.read_csv(REAL / "runs.csv")
N, P = 20, 60  # samples per problem, problems
BASE = np.full(P, 2)  # correct samples of 20 per problem: pass@10 0.763 (1 correct: 0.5, 3 correct: 0.895)


def rows(study_run: str, correct, *, split="test", protocol="policy", distinct=None, entropy=0.3) -> pd.DataFrame:
    """eval_per_problem rows of one study run: ``correct`` is a (seeds × problems) array of n_correct
    (or one row for every seed of the run in runs.csv)."""
    n_seeds = 1 if study_run == "sft" else RUNS[RUNS.study_run == study_run].seed.nunique()
    correct = np.clip(np.broadcast_to(np.atleast_2d(correct), (n_seeds, P)), 0, N)
    distinct = np.broadcast_to(np.atleast_2d(np.minimum(correct, 2) if distinct is None else distinct), (n_seeds, P))
    entropy = np.broadcast_to(np.atleast_2d(entropy), (n_seeds, P))
    group = "sft" if study_run == "sft" else RUNS.group[RUNS.study_run == study_run].iloc[0]
    out = [dict(model="sft" if study_run == "sft" else f"{study_run}-s{seed}", study_run=study_run, group=group,
                seed=seed, split=split, protocol=protocol, problem_id=f"{split}-{j:06d}", n=N,
                n_correct=int(correct[seed, j]), distinct_correct_programs=int(distinct[seed, j]),
                functional_classes_correct=int(min(distinct[seed, j], 1)), entropy_per_token=float(entropy[seed, j]),
                kl_ref=0.1) for seed in range(n_seeds) for j in range(P)]
    return pd.DataFrame(out).astype(PP_DTYPES)


def curves(pass10: dict[str, list[list[float]]]) -> pd.DataFrame:
    """curves rows: study_run -> per seed, val/pass@10 at steps 0, 50, 100 (perf/step_s 1)."""
    out = [{"run_name": f"{sr}-s{seed}", "study_run": sr, "seed": seed, "step": 50 * i, "val/pass@10": v,
            "perf/step_s": 1.0} for sr, per_seed in pass10.items() for seed, vs in enumerate(per_seed)
           for i, v in enumerate(vs)]
    return pd.DataFrame(out)


def study(*pp: pd.DataFrame, pass10=None, bench=None, runs=None) -> report.Study:
    tables = {"runs": RUNS if runs is None else runs, "eval_per_problem": pd.concat(pp, ignore_index=True),
              "curves": curves(pass10 or {"spo": [[0.5] * 3] * 3, "ppo": [[0.5] * 3] * 3})}
    if bench is not None:
        tables["bench"] = pd.DataFrame(bench)
    return report.Study(tables)


def mixed(up: int, down: int) -> np.ndarray:
    """One more correct sample on ``up`` problems, one fewer on the next ``down``, none elsewhere:
    a small mean change with a wide interval (8 up, 3 down: Δ pass@10 +0.004 [−0.015, +0.022];
    8 up, 5 down: −0.004 [−0.026, +0.018]; 5 up, 8 down: −0.024)."""
    return np.r_[np.ones(up), -np.ones(down), np.zeros(P - up - down)].astype(int)


def test_rows_have_the_real_export_schema():
    built = rows("spo", BASE)
    real = pd.read_csv(REAL / "eval_per_problem.csv", nrows=50)
    assert list(built.columns) == list(real.columns) and (built.dtypes == real.dtypes).all()
    assert built.seed.tolist() == sorted(built.seed) and built.seed.min() == 0  # seeds 0.., never empty


# ---------------------------------------------------------------- C1 … C6, every outcome
@pytest.mark.parametrize("spo, verdict", [(BASE + 1, "reproduced"), (BASE + mixed(8, 3), "partly"),
                                          (BASE + mixed(5, 8), "not")])
def test_c1(spo, verdict):
    s = study(rows("spo", spo, protocol="paper"), rows("ppo", BASE, protocol="paper"),
              rows("spo", spo), rows("ppo", BASE))
    number, got = report.c1(s)
    assert got == verdict, number
    p, lo, hi = s.diff("spo", "ppo", report.passk_value(10), protocol="paper")
    assert {"reproduced": lo > 0, "partly": p > 0 >= lo, "not": p <= 0}[verdict]


def test_c1_needs_the_paper_protocol():
    assert report.c1(study(rows("spo", BASE), rows("ppo", BASE))) is None


@pytest.mark.parametrize("distinct, entropy, verdict", [(3, 0.4, "reproduced"), (1, 0.4, "partly"), (1, 0.2, "not")])
def test_c2(distinct, entropy, verdict):
    s = study(rows("spo", BASE, distinct=distinct, entropy=entropy), rows("ppo", BASE, distinct=2, entropy=0.3))
    assert report.c2(s)[1] == verdict


@pytest.mark.parametrize("expert, random, verdict", [(+1, 0, "reproduced"), (+1, -1, "partly"), (0, -1, "not")])
def test_c3(expert, random, verdict):
    s = study(rows("spo", BASE), rows("spo_expert", BASE + expert), rows("spo_random", BASE + random),
              rows("spo_half_online", BASE))
    number, got = report.c3(s)
    assert got == verdict, number
    assert number.startswith(f"{int(expert > 0)} of 3 sources help, {int(random < 0)} hurt")


def test_c3_partly_when_most_sources_are_ahead_but_none_clearly():
    s = study(rows("spo", BASE), rows("spo_expert", BASE + mixed(8, 3)), rows("spo_random", BASE + mixed(8, 3)),
              rows("spo_half_online", BASE))
    assert report.c3(s)[1] == "partly"


def _bench(step, state):
    return [dict(variant=v, size="s", device="cpu", params_M=0.45, step_s=t, update_s=t / 2, train_state_MB=m,
                 peak_rss_above_baseline_MB=200.0) for v, t, m in [("spo", step, state), ("ppo", 1.0, 10.0)]]


@pytest.mark.parametrize("step, state, verdict", [(0.4, 6.0, "reproduced"), (0.4, 12.0, "partly"),
                                                  (1.5, 12.0, "not")])
def test_c4(step, state, verdict):
    number, got = report.c4(study(rows("spo", BASE), rows("ppo", BASE), bench=_bench(step, state)))
    assert got == verdict and f"step time ×{step:.2f}" in number


def test_c4_needs_the_benchmark():
    assert report.c4(study(rows("spo", BASE), rows("ppo", BASE))) is None


FLAT, COLLAPSE = [0.5, 0.5, 0.5], [0.5, 0.4, 0.5]  # val pass@10 at steps 0, 50, 100; 0.4 is one collapse event
SPREAD = np.stack([BASE - 1, BASE, BASE + 1])  # three seeds apart: pass@10 0.5, 0.763, 0.895


@pytest.mark.parametrize("spo, spo_curves, verdict", [
    (BASE, [FLAT] * 3, "reproduced"),  # SPO's seeds agree (SD 0), no collapse
    (BASE, [COLLAPSE] * 3, "partly"),  # SD smaller, but more collapse events than PPO
    (np.stack([BASE - 2, BASE, BASE + 4]), [COLLAPSE] * 3, "not"),  # pass@10 0, 0.763, 0.99
])
def test_c5(spo, spo_curves, verdict):
    s = study(rows("spo", spo), rows("ppo", SPREAD),
              pass10={"spo": spo_curves, "ppo": [FLAT] * 3})
    assert report.c5(s)[1] == verdict


def test_c5_is_na_with_one_seed():
    runs = RUNS[RUNS.seed == 0]
    s = study(rows("spo", BASE)[lambda d: d.seed == 0], rows("ppo", BASE)[lambda d: d.seed == 0], runs=runs)
    assert report.c5(s)[1] == "n/a (one seed)"


@pytest.mark.parametrize("half, verdict", [(BASE, "reproduced"), (BASE + mixed(8, 5), "partly"),
                                           (BASE - 1, "not")])
def test_c6(half, verdict):
    s = study(rows("spo", BASE), rows("spo_half_online", half))
    number, got = report.c6(s)
    assert got == verdict, number
    assert number.endswith("with 3200 vs 6400 fresh samples")  # from runs.csv


# ---------------------------------------------------------------- rules and the report
def test_each_rule_is_its_docstring_with_the_defaults_filled():
    assert set(report.CLAIMS) == {f"C{i}" for i in range(1, 7)}
    for cid, (_, _, fn) in report.CLAIMS.items():
        rule = report.rule(fn)
        assert "{" not in rule and "\n" not in rule and rule.split()[:3] == fn.__doc__.split()[:3], cid
    assert "margin 0.02" in report.rule(report.c6) and "more than 0.05 below" in report.rule(report.c5)
    assert f"the {stats.CONFIDENCE * 100:g} % CI" in report.rule(report.c1)


def test_report_of_the_committed_export(tmp_path):
    s = report.Study(REAL)
    rows_ = report.claims(s)
    assert [r.id for r in rows_] == [f"C{i}" for i in range(1, 7)]
    # the committed claims table is what the scripts compute from the committed CSVs: never edited by hand
    assert (ROOT / "results" / "tables" / "claims_default.md").read_text() == report.claims_table(rows_) + "\n"
    out = tmp_path / "README.md"
    text = report.render(s, rows_, "default", "default", ROOT / "results" / "figures", out)
    assert isinstance(text, str)
    for r in rows_:
        assert text.count(r.rule) == 1  # each rule stated once
    assert f"{stats.N_BOOT} resamples" in text and "2 cores" not in text and "1 thread" not in text
    assert text.count("![F") == 9
