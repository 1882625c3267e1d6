"""The committed export (results/data/*.csv): what the published default study exported.

Rule ``publish`` copies it from results/default/export/; tests that check committed results read it
through :func:`load`, exactly as it is (never completed or edited).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "results" / "data"
CSVS = ["runs", "curves", "eval", "eval_per_problem", "exact", "bench", "jobs", "study", "setup"]  # analysis/export.py
NEW_PER_PROBLEM = ["distinct_correct_per_solved", "functional_classes_per_solved", "effective_programs"]


def load() -> dict[str, pd.DataFrame]:
    """The committed tables, one DataFrame per CSV."""
    return {name: pd.read_csv(REAL / f"{name}.csv") for name in CSVS}
