"""F5: what each algorithm costs (claim C4: an SPO update costs about a GRPO update, less than PPO's).

a: per-update wall time from the standalone benchmark (bench.csv, one process, medians), whole
   step (sample + score + update, light bar) and the update alone (dark bar), per model size, with
   the ratio to PPO written above; b: memory from the benchmark (optimizer + parameter state, peak
   activations, peak RSS above the process baseline); c: validation pass@10 against training
   wall clock inside the study, seed mean with a 95 % bootstrap band over seeds; d: median step
   time per run measured inside the study, mean over seeds with a 95 % bootstrap CI over seeds
   (dots: seeds). Question: is SPO's gain paid for in compute or memory?
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

import common

args = common.cli(__doc__.splitlines()[0])
rng = np.random.default_rng(0)
runs, curves = common.read(args.data, "runs"), common.read(args.data, "curves")
names = common.labels(args.data)
names["trl_grpo"] = "TRL GRPO"
bench = common.read_optional(args.data, "bench")
main = common.present(runs, common.MAIN, "main")
fig = plt.figure(figsize=(17, 16), layout="constrained")
grid = fig.add_gridspec(3, 2)
a, b, c, d = (fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, :]), fig.add_subplot(grid[2, 0]),
              fig.add_subplot(grid[2, 1]))

if bench is None or bench.empty:
    common.no_data(a, "the per-update benchmark (bench.csv)")
    common.no_data(b, "the per-update benchmark (bench.csv)")
else:
    variants = [v for v in [*common.MAIN, "trl_grpo"] if v in set(bench.variant)]
    variants += sorted(set(bench.variant) - set(variants))
    # one group of bars per model size (and device, where the export holds more than one)
    size_order = {s: i for i, s in enumerate(("xs", "s", "m", "l"))}
    devices = bench.device.nunique() > 1
    bench = bench.assign(where="model " + bench["size"] + (", " + bench.device if devices else ""))
    bench = bench.sort_values(["device", "size"], key=lambda c: c.map(size_order) if c.name == "size" else c)
    groups = list(dict.fromkeys(bench["where"]))
    rows = [(j * (len(variants) + 1) + i, bench[(bench.variant == v) & (bench["where"] == w)].iloc[0])
            for j, w in enumerate(groups) for i, v in enumerate(variants)
            if ((bench.variant == v) & (bench["where"] == w)).any()]
    for x, r in rows:
        col = common.colour(r.variant)
        a.bar(x, r.step_s, 0.8, color=col, alpha=0.4)
        a.bar(x, r.get("update_s", np.nan), 0.45, color=col)
        ratios = [f"{r.get(f'{k}_vs_ppo', np.nan):.2f}×" for k in ("step_s", "update_s")]
        a.annotate("\n".join(ratios).replace("nan×", "–"), (x, r.step_s), ha="center", va="bottom",
                   fontsize=8, xytext=(0, 2), textcoords="offset points")
        for k, (key, hatch) in enumerate([("train_state_MB", ""), ("peak_activations_MB", "//"),
                                          ("peak_rss_above_baseline_MB", "..")]):
            b.bar(x + (k - 1) * 0.27, r.get(key, np.nan), 0.27, color=col, hatch=hatch, edgecolor="white")
    centres = [j * (len(variants) + 1) + (len(variants) - 1) / 2 for j in range(len(groups))]
    algos = [Patch(color=common.colour(v), label=names.get(v, v)) for v in variants]
    for ax in (a, b):
        ax.set_xticks(centres, groups)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_ylim(top=ax.get_ylim()[1] * 2)  # head room for the ratios
        ax.grid(axis="x", visible=False)
    a.set(ylabel="seconds per update (median, log scale)",
          title="a  benchmark: time per update; numbers: step / update time relative to PPO of that size")
    a.legend(handles=[*algos, Patch(color="0.6", alpha=0.4, label="whole step (sample + score + update)"),
                      Patch(color="0.3", label="update only")], loc="upper left", bbox_to_anchor=(1.0, 1.0))
    b.set(ylabel="MB (log scale)", title="b  benchmark: memory per variant")
    memory = [Patch(facecolor="0.5", hatch=h, edgecolor="white", label=lab) for h, lab in
              [("", "train state (params + optimizer)"), ("//", "peak activations"),
               ("..", "peak RSS above baseline")]]
    b.legend(handles=[*algos, *memory], loc="upper left", bbox_to_anchor=(1.0, 1.0))

for sr in main if {"val/pass@10", "perf/wall_s"} <= set(curves) else []:
    if curves.loc[curves.study_run == sr, "val/pass@10"].notna().any():
        x, m = common.curve_xy(curves, sr, "val/pass@10", "perf/wall_s")
        common.band(c, x, m, rng, common.colour(sr), names.get(sr, sr), marker="o", ms=4)
if not c.lines:
    common.no_data(c, "val/pass@10 of the main runs")
c.set(xlabel="training wall clock (s)", ylabel="validation pass@10",
      title=f"c  pass@10 against wall clock in the study\n({common.CI_TEXT} band)")
c.legend(loc="best")

logged = curves.reindex(columns=["study_run", "seed", "perf/step_s"])  # a missing column reads as NaN
per_seed = logged.groupby(["study_run", "seed"])["perf/step_s"].median()  # (study_run, seed) -> s per update
shown = [sr for sr in main if sr in per_seed.index.get_level_values(0) and per_seed[sr].notna().any()]
for i, sr in enumerate(shown):
    v = per_seed[sr].dropna().to_numpy()
    mean, lo, hi = common.seed_band(v[:, None], rng)
    d.errorbar(i, mean[0], yerr=[[mean[0] - lo[0]], [hi[0] - mean[0]]], fmt="o", ms=8, capsize=5, lw=2,
               color=common.colour(sr))
    if len(v) > 1:
        d.scatter(i + np.linspace(-0.1, 0.1, len(v)), v, s=16, color=common.colour(sr), alpha=0.55)
if shown:
    d.set_xticks(range(len(shown)), [names.get(s, s) for s in shown], rotation=20, ha="right")
    d.set_ylim(bottom=0)
else:
    common.no_data(d, "perf/step_s of the main runs")
d.set(ylabel="median seconds per update",
      title=f"d  median step time inside the study\n({common.CI_TEXT}; dots: seeds)")
fig.suptitle("F5 cost per algorithm: benchmark (a, b) and the study's own runs (c, d)")
common.savefig(fig, args.out)
