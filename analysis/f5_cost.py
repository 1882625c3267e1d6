"""F5: what each algorithm costs (claim C4: an SPO update costs about a GRPO update, less than PPO's).

a: per-update wall time from the standalone benchmark (bench.csv, one process, medians): whole
   step (sample + score + update, light bar) and the update alone (dark bar), per model size, with
   the ratio to PPO of that size written above; b-d: memory from the benchmark, one panel each:
   optimizer + parameter state, peak activations, peak RSS above the process baseline. Every bar
   axis is linear and starts at 0, so bar lengths compare. e: validation pass@10 against training
   wall clock inside the study, seed means (F1 has their intervals); f: median step time per run measured inside the study, mean over seeds with a 95 %
   bootstrap CI over seeds (dots: seeds). Question: is SPO's gain paid for in compute or memory?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from common import Data, curve_xy, entries, labels, logged, present, table
from plot import CI_TEXT, SEED, cli, fig_legend, no_data, palette, styled
from stats import interval

MEMORY = [("train_state_MB", "b  train state (params + optimizer)"),
          ("peak_activations_MB", "c  peak activations"),
          ("peak_rss_above_baseline_MB", "d  peak RSS above the process baseline")]  # bench.csv column, title
SIZES = ("xs", "s", "m", "l")  # model sizes in bar-group order


def bench_rows(bench: pd.DataFrame, order: list[str]) -> tuple[list[tuple[float, pd.Series]], list[float], list[str]]:
    """(x, bench row) per bar, grouped by model size (and device, and full fine-tuning or LoRA, where the
    export holds more than one), in ``order`` (the main entries' order) inside a group, then TRL's GRPO and any other variant; and the
    groups' centres and names."""
    variants = [v for v in [*order, "trl_grpo"] if v in set(bench.variant)]
    variants += sorted(set(bench.variant) - set(variants))
    rank = {s: i for i, s in enumerate(SIZES)}
    devices = bench.device.nunique() > 1
    tunings = "fine_tuning" in bench and bench.fine_tuning.nunique() > 1  # full fine-tuning and LoRA: a group each
    bench = bench.assign(where="model " + bench["size"] + (", " + bench.device if devices else "")
                         + (", " + bench.fine_tuning.replace({"full": "full FT", "lora": "LoRA"}) if tunings else ""),
                         rank=bench["size"].map(rank).fillna(len(SIZES))).sort_values(["device", "rank"])
    groups = list(dict.fromkeys(bench["where"]))
    width = len(variants) + 1
    rows = [(j * width + i, r.iloc[0]) for j, w in enumerate(groups) for i, v in enumerate(variants)
            if not (r := bench[(bench.variant == v) & (bench["where"] == w)]).empty]
    return rows, [j * width + (len(variants) - 1) / 2 for j in range(len(groups))], groups


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    runs, curves, names, colour = table(data, "runs"), table(data, "curves"), labels(data), palette(data)
    names["trl_grpo"] = "TRL GRPO"
    bench = table(data, "bench", optional=True)
    main = present(runs, entries(data, "main"), "main")

    fig = Figure(figsize=(18, 17), layout="constrained")
    grid = fig.add_gridspec(3, 6, height_ratios=[1.1, 0.9, 1])
    a = fig.add_subplot(grid[0, :])
    mem = [fig.add_subplot(grid[1, 2 * i:2 * i + 2]) for i in range(3)]
    e, f = fig.add_subplot(grid[2, :3]), fig.add_subplot(grid[2, 3:])

    if bench is None or bench.empty:
        for ax in (a, *mem):
            no_data(ax, "the per-update benchmark (bench.csv)")
    else:
        rows, centres, groups = bench_rows(bench, entries(data, "main"))
        for x, r in rows:
            col = colour(r.variant)
            a.bar(x, r.step_s, 0.8, color=col, alpha=0.4)
            a.bar(x, r.get("update_s", np.nan), 0.45, color=col, label=names.get(r.variant, r.variant))
            ratios = [f"{r.get(f'{k}_vs_ppo', np.nan):.2f}×" for k in ("step_s", "update_s")]
            a.annotate("\n".join(ratios).replace("nan×", "–"), (x, r.step_s), ha="center", va="bottom",
                       fontsize=9, xytext=(0, 2), textcoords="offset points")
            for ax, (key, _) in zip(mem, MEMORY):
                value = r.get(key, np.nan)
                ax.bar(x, value, 0.8, color=col)
                ax.annotate("–" if pd.isna(value) else f"{value:.3g}", (x, 0 if pd.isna(value) else value),
                            ha="center", va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points")
        for ax in (a, *mem):
            ax.set_xticks(centres, groups)
            ax.set_xlim(-0.6, rows[-1][0] + 0.6)  # every variant's slot, also where a value is missing
            ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # from 0: bar lengths compare; head room for the labels
            ax.grid(axis="x", visible=False)
        a.set(ylabel="seconds per update (median)",
              title="a  benchmark: time per update; numbers: step / update time relative to PPO of that size")
        a.legend(handles=[Patch(color="0.6", alpha=0.4, label="whole step (sample + score + update)"),
                          Patch(color="0.3", label="update only")], loc="upper right")
        for ax, (_, title) in zip(mem, MEMORY):
            ax.set(ylabel="MB", title=f"{title} (benchmark)")

    for sr in main:
        if logged(curves, sr, "val/pass@10") and "perf/wall_s" in curves:
            x, m = curve_xy(curves, sr, "val/pass@10", "perf/wall_s")
            e.plot(x, np.nanmean(m, axis=0), color=colour(sr), lw=2, marker="o", ms=5, label=names.get(sr, sr))
    if not e.lines:
        no_data(e, "val/pass@10 of the main runs")
    e.set(xlabel="training wall clock (s)", ylabel="validation pass@10",
          title="e  pass@10 against wall clock in the study\n(seed means; the final values' intervals are in F1)")

    per_seed = (curves.reindex(columns=["study_run", "seed", "perf/step_s"])  # a missing column reads as NaN
                .groupby(["study_run", "seed"])["perf/step_s"].median())  # (study_run, seed) -> s per update
    shown = [sr for sr in main if sr in per_seed.index.get_level_values(0) and per_seed[sr].notna().any()]
    for i, sr in enumerate(shown):
        v = per_seed[sr].dropna().to_numpy()
        point, lo, hi = interval(v[:, None], rng)  # (seeds × 1): the bootstrap over seeds
        f.errorbar(i, point, yerr=[[point - lo], [hi - point]], fmt="o", ms=8, capsize=5, lw=2, color=colour(sr))
        if len(v) > 1:
            f.scatter(i + np.linspace(-0.1, 0.1, len(v)), v, s=16, color=colour(sr), alpha=0.55)
    if shown:
        f.set_xticks(range(len(shown)), [names.get(s, s) for s in shown], rotation=20, ha="right")
        f.set_xlim(-0.6, len(shown) - 0.4)
        f.set_ylim(0, f.get_ylim()[1] * 1.05)
    else:
        no_data(f, "perf/step_s of the main runs")
    f.set(ylabel="median seconds per update", title=f"f  median step time inside the study\n({CI_TEXT}; dots: seeds)")
    fig_legend(fig, [a, e])
    fig.suptitle("F5 cost per algorithm: benchmark (a-d) and the study's own runs (e, f) (claim C4)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
