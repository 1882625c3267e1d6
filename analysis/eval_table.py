"""Print (and optionally write) a markdown table of every evaluated policy of a scale.

    python analysis/eval_table.py --scale default [--out results/tables/eval_default.md]

Reads ``results/<scale>/eval/<name>/<split>-<protocol>/eval.json`` (written by spolab.evaluate);
each cell is the point estimate with its 95 % bootstrap interval over problems.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ["pass@1", "pass@5", "pass@10", "distinct_correct_programs", "functional_classes_correct",
           "entropy_per_token", "kl_ref"]


def load(root: Path) -> list[dict]:
    rows = []
    for path in sorted(root.glob("*/*/eval.json")):
        d = json.loads(path.read_text())
        name, (split, protocol) = path.parent.parent.name, path.parent.name.split("-", 1)
        row = {"policy": name, "split": split, "protocol": protocol}
        for c in COLUMNS:
            key = f"{split}/{c}"
            if key in d:
                row[c] = f"{d[key]:.3f} [{d[key + '_ci_lo']:.3f}, {d[key + '_ci_hi']:.3f}]"
        rows.append(row)
    if not rows:
        raise SystemExit(f"no eval.json under {root}: run the pipeline first")
    return rows


def to_markdown(rows: list[dict]) -> str:
    cols = ["policy", "split", "protocol", *[c for c in COLUMNS if any(c in r for r in rows)]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r["split"], r["protocol"], r["policy"])):
        lines.append("| " + " | ".join(r.get(c, "") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="default")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    table = to_markdown(load(Path("results") / args.scale / "eval"))
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
