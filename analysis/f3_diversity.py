"""F3: diversity over training, main runs (claim C2: SPO keeps more distinct correct solutions).

Panels a-c: validation distinct correct programs, functionally distinct correct classes (both per
problem, out of n samples) and per-token entropy against updates, seed mean with a 95 % bootstrap
band over seeds. Panel d: final test distinct correct programs per problem (policy protocol) for
each main run and the SFT policy, mean with the two-level (seeds, then problems) 95 % bootstrap
interval and one dot per seed. Question: does a method reach its pass@k by concentrating on one
program per problem (falling distinct counts, falling entropy), or does it keep several?
"""

import matplotlib.pyplot as plt
import numpy as np

import common

args = common.cli(__doc__.splitlines()[0])
rng = np.random.default_rng(0)
runs, curves = common.read(args.data, "runs"), common.read(args.data, "curves")
pp, names = common.read_per_problem(args.data), common.labels(args.data)
main = common.present(runs, common.MAIN, "main")
PANELS = [("val/distinct_correct_programs", "distinct correct programs per problem"),
          ("val/functional_classes_correct", "functionally distinct correct classes per problem"),
          ("val/entropy_per_token", "policy entropy (nats per token)")]

fig, axes = plt.subplots(2, 2, figsize=(15, 10), layout="constrained")
for ax, (metric, ylabel) in zip(axes.flat, PANELS):
    for sr in main:
        if metric in curves and curves.loc[curves.study_run == sr, metric].notna().any():
            steps, m = common.curve_matrix(curves, sr, metric)
            common.band(ax, steps, m, rng, common.colour(sr), names.get(sr, sr), marker="o", ms=4)
    if not ax.lines:
        common.no_data(ax, f"{metric} of the main runs")
    ax.set(xlabel="update (optimizer steps)", ylabel=ylabel, title=f"validation: {ylabel}")

ax = axes[1, 1]
for i, sr in enumerate(["sft", *main]):
    m = common.try_matrix(pp, "distinct_correct_programs", study_run=sr, split="test", protocol="policy")
    if m is not None:
        common.errpoint(ax, i, m, rng, common.colour(sr), names.get(sr, sr))
if ax.lines or ax.collections:
    ax.set_xticks(range(len(main) + 1), [names.get(s, s) for s in ["sft", *main]], rotation=20, ha="right")
else:
    common.no_data(ax, "final test distinct correct programs")
ax.set(ylabel="distinct correct programs per problem (of n = 20)",
       title="final test, policy protocol (dots: seeds)")
common.fig_legend(fig, axes[0])
fig.suptitle(f"F3 diversity over training, main runs ({common.CI_TEXT})")
common.savefig(fig, args.out)
