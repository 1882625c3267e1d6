"""Print (and optionally write) a markdown table of every evaluated policy of the study.

    python analysis/eval_table.py --data results/data [--out results/tables/eval_default.md]

Reads ``eval.csv`` of the export (analysis/export.py, from MLflow: the one route of results);
each cell is the point estimate with its 95 % bootstrap interval over problems.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from spolab.atomic import write_text

COLUMNS = ["pass@1", "pass@5", "pass@10", "distinct_correct_programs", "functional_classes_correct",
           "distinct_correct_per_solved", "functional_classes_per_solved", "effective_programs", "entropy_per_token",
           "kl_ref"]  # eval.csv columns, those of an older export skipped


def to_markdown(ev: pd.DataFrame) -> str:
    """One row per (policy, split, protocol): ``point [lo, hi]`` for each column the export holds."""
    cols = [c for c in COLUMNS if c in ev and ev[c].notna().any()]
    lines = ["| " + " | ".join(["policy", "split", "protocol", *cols]) + " |", "|" + "---|" * (3 + len(cols))]
    for _, r in ev.sort_values(["split", "protocol", "model"]).iterrows():
        cells = [f"{r[c]:.3f} [{r[c + '_ci_lo']:.3f}, {r[c + '_ci_hi']:.3f}]" if pd.notna(r[c]) else "" for c in cols]
        lines.append("| " + " | ".join([r["model"], r["split"], r["protocol"], *cells]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of the exported CSVs (analysis/export.py)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    path = args.data / "eval.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found: run analysis/export.py (Snakemake rule export) first")
    table = to_markdown(pd.read_csv(path))
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, table)


if __name__ == "__main__":
    main()
