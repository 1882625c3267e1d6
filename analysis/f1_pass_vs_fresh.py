"""F1: pass@1 and pass@10 against fresh samples for every algorithm of the main group.

Top two rows, one panel per algorithm (small multiples, so no band hides another): validation
pass@1 / pass@10 during training against the cumulative number of fresh (newly sampled)
completions, seed mean with a 95 % bootstrap band over seeds; thin grey lines are the other
algorithms' seed means, the dashed line the SFT policy (step 0). Bottom row: final held-out pass@1
/ pass@10 on the test and OOD splits per run, exact (the policy's pass@k from its exact success mass, the
quantity the sampled policy protocol estimates, without sampling noise; every run has it) where the export
has it, else sampled under the policy protocol; its total fresh samples in the tick label, with the two-level (seeds, then problems) 95 % bootstrap interval and one dot per seed;
the dashed line and grey span are the SFT policy and its interval. Claims tested: C1 (SPO against
PPO on pass@10) and C6 (SPO half-online matches online SPO with about half the fresh samples).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from common import (
    Data,
    comparison_protocol,
    entries,
    labels,
    passk_value,
    per_problem,
    present,
    table,
    try_matrix,
)
from plot import CI_TEXT, SEED, cli, errpoint, fig_legend, has_data, no_data, palette, small_multiples, styled
from stats import interval


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    runs, curves, pp, names = table(data, "runs"), table(data, "curves"), per_problem(data), labels(data)
    colour = palette(data)
    main = present(runs, entries(data, "main"), "main")
    fresh = runs.groupby("study_run").fresh_samples.mean()

    fig = Figure(figsize=(4 * max(len(main), 4) + 1, 15), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2, 1.15])
    grid = top.subplots(2, max(len(main), 1), sharex=True, sharey="row", squeeze=False)
    for row, k in zip(grid, (1, 10)):
        small_multiples(row, curves, main, f"val/pass@{k}", "data/fresh_samples", rng, names, colour)
        row[0].set_ylabel(f"validation pass@{k}")
    for ax, sr in zip(grid[0], main):
        ax.set_title(names.get(sr, sr))
    for ax in grid[-1]:
        ax.set_xlabel("fresh samples drawn (cumulative)")
    top.suptitle(f"validation pass@1 (upper row) and pass@10 (lower row) during training ({CI_TEXT} band)")

    finals = bottom.subplots(1, 4)
    protocol = comparison_protocol(pp)  # exact where the export has it: every run is evaluated under it
    shown = [sr for sr in main if try_matrix(pp, passk_value(1), study_run=sr, split="test", protocol=protocol)
             is not None]
    for ax, (split, k) in zip(finals, [("test", 1), ("test", 10), ("ood", 1), ("ood", 10)]):
        where = dict(split=split, protocol=protocol)
        sft = try_matrix(pp, passk_value(k), study_run="sft", **where)
        if sft is not None:
            p, lo, hi = interval(sft, rng)
            ax.axhline(p, ls="--", color=colour("sft"), lw=1.2)
            ax.axhspan(lo, hi, color=colour("sft"), alpha=0.12, lw=0, label=names["sft"] + " and its 95 % CI")
        for i, sr in enumerate(shown):
            m = try_matrix(pp, passk_value(k), study_run=sr, **where)
            if m is not None:
                errpoint(ax, i, m, rng, colour(sr))
        name = "OOD" if split == "ood" else split
        if not has_data(ax):
            no_data(ax, f"final {name} pass@{k}")
            continue
        ax.set_xticks(range(len(shown)), [f"{names.get(s, s)}\n{fresh.get(s, np.nan):,.0f} fresh" for s in shown],
                      rotation=35, ha="right", fontsize=9)
        ax.set_xlim(-0.6, len(shown) - 0.4)
        ax.set(ylabel=f"{name} pass@{k}", title=f"final {name} pass@{k}, {protocol} protocol")
    bottom.suptitle(f"final evaluation per run ({CI_TEXT}, seeds then problems; dots: seeds; "
                    "tick label: the run's total fresh samples)")
    fig_legend(fig, [*grid.flat, *finals])
    fig.suptitle("F1 pass@1 and pass@10 against fresh samples, main runs (claims C1, C6)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
