"""F1: pass@1 and pass@10 against fresh samples for every algorithm of the main group.

Top row: validation pass@1 / pass@10 during training against the cumulative number of fresh
(newly sampled) completions, seed mean with a 95 % bootstrap band over seeds. Bottom row: final
held-out pass@1 / pass@10 on the test and OOD splits (policy protocol, T = 1, n = 20) at x = the
run's total fresh samples, with the two-level (seeds, then problems) 95 % bootstrap interval; the
dashed line is the SFT policy. Claim tested (C6): SPO half-online matches online SPO's pass@k with
about half the fresh samples.
"""

import matplotlib.pyplot as plt
import numpy as np

import common

args = common.cli(__doc__.splitlines()[0])
rng = np.random.default_rng(0)
runs, curves = common.read(args.data, "runs"), common.read(args.data, "curves")
pp, names = common.read_per_problem(args.data), common.labels(args.data)
main = common.present(runs, common.MAIN, "main")

fig = plt.figure(figsize=(19, 10), layout="constrained")
gs = fig.add_gridspec(2, 4)
top = [fig.add_subplot(gs[0, :2]), fig.add_subplot(gs[0, 2:])]
bottom = [fig.add_subplot(gs[1, i]) for i in range(4)]

for ax, k in zip(top, (1, 10)):
    metric = f"val/pass@{k}"
    for sr in main:
        if metric in curves and sr in set(curves.study_run[curves[metric].notna()]):
            x, m = common.curve_xy(curves, sr, metric, "data/fresh_samples")
            common.band(ax, x, m, rng, common.colour(sr), names.get(sr, sr), marker="o", ms=4)
    if not ax.lines:
        common.no_data(ax, f"{metric} of the main runs")
    ax.set(xlabel="fresh samples drawn (cumulative, completions)", ylabel=f"validation pass@{k}",
           title=f"validation pass@{k} during training ({common.CI_TEXT} band)")

for ax, (split, k) in zip(bottom, [("test", 1), ("test", 10), ("ood", 1), ("ood", 10)]):
    where = dict(split=split, protocol="policy")
    sft = common.try_matrix(pp, common.passk_value(k), study_run="sft", **where)
    if sft is not None:
        p, lo, hi = common.interval(sft, rng)
        ax.axhline(p, ls="--", color=common.colour("sft"), label=names["sft"] + " (shaded: its 95 % CI)")
        ax.axhspan(lo, hi, color=common.colour("sft"), alpha=0.12, lw=0)
    dodge = 0.015 * max(runs.fresh_samples.max(), 1)  # runs with equal budgets side by side, not on top
    for i, sr in enumerate(main):
        m = common.try_matrix(pp, common.passk_value(k), study_run=sr, **where)
        if m is not None:
            fresh = runs.loc[runs.study_run == sr, "fresh_samples"].mean() + (i - (len(main) - 1) / 2) * dodge
            common.errpoint(ax, fresh, m, rng, common.colour(sr), names.get(sr, sr), dots=False)
    ax.set_xlim(0, 1.1 * max(runs.fresh_samples.max(), 1))
    if not ax.lines and not ax.collections:
        common.no_data(ax, f"final {split} pass@{k}")
    name = "OOD" if split == "ood" else split
    ax.set(xlabel="total fresh samples of the run (completions)", ylabel=f"{name} pass@{k}",
           title=f"final {name} pass@{k}, policy protocol")

common.fig_legend(fig, [*top, *bottom])
fig.suptitle("F1 pass@1 and pass@10 against fresh samples (main runs; "
             f"{common.CI_TEXT}: over seeds for curves, over seeds then problems for final points)")
common.savefig(fig, args.out)
