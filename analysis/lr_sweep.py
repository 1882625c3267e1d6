"""The learning-rate sweep's table and its one rule (conf/study/lr_sweep.yaml, docs/design.md §2).

    python analysis/lr_sweep.py --scale default --study lr_sweep --out results/default/study_lr_sweep/tables/lr_sweep_default.md

Reads the sweep's RL runs from MLflow (the one route of results: analysis/export.py's readers), and
for each setting picks the learning rate by :func:`choose`. A setting is an algorithm with its data mix
and its other overrides (``spo`` online, ``spo half_online``, ``spo algo.loss=bce``; spolab.study.setting_of):
a mix that trains on stored data, another loss or another β is its own configuration, and one lr need not
suit both (online SPO's lr 1e-4 made half-online SPO diverge). Selection uses the ``val`` split only,
never ``test``: the main study's test numbers stay untouched by the choice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from export import history, study_rl_runs  # noqa: E402  (analysis/ is on sys.path when run as a script)
from spolab.atomic import write_text  # noqa: E402
from spolab.study import setting_of  # noqa: E402  (what one lr is chosen for)

LAST = 3  # validation points averaged per run
TIE = 0.005  # a smaller lr within this much of the best wins


def choose(table: pd.DataFrame) -> pd.Series:
    """Rule: per setting, the lr with the highest ``score`` (mean validation pass@1 over each run's
    last :data:`LAST` validation points, averaged over seeds); among lrs within :data:`TIE` of the
    best, the smallest. Returns setting -> chosen lr.

    >>> t = pd.DataFrame({"setting": ["a", "a", "a", "b", "b"], "lr": [1e-5, 3e-5, 1e-4, 1e-5, 1e-4],
    ...                   "score": [0.20, 0.297, 0.30, 0.10, 0.30]})
    >>> choose(t).to_dict()  # a: 3e-5 is within 0.005 of 1e-4's 0.30 and smaller; b: 1e-4 by 0.2
    {'a': 3e-05, 'b': 0.0001}
    """
    out = {}
    for name, g in table.groupby("setting"):
        best = g.score.max()
        out[name] = float(g[g.score >= best - TIE].lr.min())
    return pd.Series(out, name="lr")


def sweep_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, lr): the rule's score and the final validation point, means over seeds."""
    val = curves.dropna(subset=["val/pass@1"])
    rows = []
    for (name, lr, seed), g in val.groupby(["setting", "lr", "seed"]):
        g = g.sort_values("step")
        last = g.iloc[-1]
        rows.append({"setting": name, "lr": lr, "seed": seed, "score": g["val/pass@1"].iloc[-LAST:].mean(),
                     "final_pass@1": last["val/pass@1"], "final_pass@10": last.get("val/pass@10", np.nan),
                     "final_kl_ref": last.get("val/kl_ref", np.nan), "start_pass@1": g["val/pass@1"].iloc[0],
                     "updates": int(last["step"]), "val_points": len(g)})
    per_seed = pd.DataFrame(rows)
    t = per_seed.groupby(["setting", "lr"], as_index=False).agg(
        score=("score", "mean"), final_pass1=("final_pass@1", "mean"), final_pass10=("final_pass@10", "mean"),
        final_kl=("final_kl_ref", "mean"), start_pass1=("start_pass@1", "mean"), seeds=("seed", "nunique"),
        updates=("updates", "max"), val_points=("val_points", "max"))
    chosen = choose(t)
    t["chosen"] = [chosen[a] == lr for a, lr in zip(t.setting, t.lr)]
    return t


def to_markdown(t: pd.DataFrame, scale: str) -> str:
    head = (f"# Learning-rate sweep ({scale} scale)\n\n"
            f"Rule (analysis/lr_sweep.py `choose`): per setting (an algorithm, with its data mix unless online and its other overrides), the lr with the highest validation pass@1 "
            f"averaged over each run's last {LAST} validation points and over seeds; a smaller lr within {TIE} of "
            "the best wins. Selection reads `val` only. ✔ marks the chosen lr: a study with `lr_from_sweep` "
            "(conf/study/default.yaml) gives each entry the chosen lr of its setting from this table's CSV.\n\n")
    lines = ["| setting | lr | score (val pass@1, last 3) | val pass@1 start → end | val pass@10 end | KL(π‖π_ref) end "
             "| seeds | updates | chosen |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.sort_values(["setting", "lr"]).iterrows():
        lines.append(f"| {r.setting} | {r.lr:g} | {r.score:.3f} | {r.start_pass1:.3f} → {r.final_pass1:.3f} | "
                     f"{r.final_pass10:.3f} | {r.final_kl:.3f} | {r.seeds} | {r.updates} | {'✔' if r.chosen else ''} |")
    return head + "\n".join(lines) + "\n"


def read_curves(scale: str, study: str) -> pd.DataFrame:
    client, _, specs, rl = study_rl_runs(scale, study)
    frames = []
    for sp in specs:
        r = rl[sp.name]
        frames.append(history(client, r).assign(setting=setting_of(sp.override_list),
                                                lr=float(r.data.params["algo.lr"]), seed=sp.seed, run_name=sp.name))
    return pd.concat(frames, ignore_index=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="default")
    ap.add_argument("--study", default="lr_sweep")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    t = sweep_table(read_curves(args.scale, args.study))
    text = to_markdown(t, args.scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, text)
    write_text(args.out.with_suffix(".csv"), t.to_csv(index=False, float_format="%.6g"))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
