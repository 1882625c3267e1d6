"""The committed export (results/data/*.csv) as a fresh export of this code would have it.

The committed CSVs come from the last default study, exported before two changes: runs.csv's
``reference`` column (the entry each ablation or off-policy source is judged against, which
analysis/export.py writes from spolab.study) and the diversity columns per solved problem and among
all samples (spolab.eval.diversity; eval_per_problem and the val/ curves). Until the study is
regenerated, :func:`load` adds what a fresh export would hold:

- ``reference``: from spolab.study, exactly as analysis/export.py writes it;
- ``distinct_correct_per_solved`` / ``functional_classes_per_solved``: exact, the unconditioned
  count where n_correct > 0, else NaN; on validation curves (n = k = 10, so val/pass@10 is the share
  of solved problems, and unsolved problems count 0) the unconditioned mean / val/pass@10, also exact;
- ``effective_programs`` (per problem and val/): **constructed**, not measured (it needs the samples):
  a stand-in of plausible size, so figures and the report have something to draw. Tests that need
  measured values read :data:`REAL` directly and are marked with :data:`STALE`.

Once the committed export is regenerated, :func:`load` changes nothing and :data:`STALE` is empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "results" / "data"
CSVS = ["runs", "curves", "eval", "eval_per_problem", "exact", "bench", "jobs"]
NEW_PER_PROBLEM = ["distinct_correct_per_solved", "functional_classes_per_solved", "effective_programs"]


def _header(name: str) -> list[str]:
    return list(pd.read_csv(REAL / f"{name}.csv", nrows=0).columns)


def _stale() -> str:
    missing = []
    if "reference" not in _header("runs"):
        missing.append("runs.csv has no `reference` column")
    if not set(NEW_PER_PROBLEM) & set(_header("eval_per_problem")):
        missing.append(f"eval_per_problem.csv has none of {NEW_PER_PROBLEM}")
    return "; ".join(missing)


STALE = _stale()  # why the committed export predates this code ("" once regenerated)
STALE_REASON = (f"the committed export predates this code's export ({STALE}): regenerate the default study "
                "(snakemake --cores 2, then its publish step) and this mark no longer applies")


def load() -> dict[str, pd.DataFrame]:
    """The committed tables, with what a fresh export adds (module docstring)."""
    from spolab.study import load_study

    t = {name: pd.read_csv(REAL / f"{name}.csv") for name in CSVS}
    runs = t["runs"]
    if "reference" not in runs:
        ref = {sp.run: sp.reference or "" for sp in load_study("default", "default")}
        runs.insert(runs.columns.get_loc("family") + 1, "reference", runs.study_run.map(ref).replace("", np.nan))
    pp = t["eval_per_problem"]
    solved = pp.n_correct > 0
    for new, old in [("distinct_correct_per_solved", "distinct_correct_programs"),
                     ("functional_classes_per_solved", "functional_classes_correct")]:
        if new not in pp:
            pp[new] = pp[old].where(solved)
    if "effective_programs" not in pp:  # constructed: grows with the problem's entropy, never below 1
        pp["effective_programs"] = 1 + 25 * pp.entropy_per_token * np.random.default_rng(0).uniform(0.8, 1.2, len(pp))
    c = t["curves"]
    for new, old in [("distinct_correct_per_solved", "distinct_correct_programs"),
                     ("functional_classes_per_solved", "functional_classes_correct")]:
        if f"val/{new}" not in c:
            c[f"val/{new}"] = c[f"val/{old}"] / c["val/pass@10"]
    if "val/effective_programs" not in c:  # constructed
        c["val/effective_programs"] = 0.6 * c["val/distinct_programs"]
    return t
