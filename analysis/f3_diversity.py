"""F3: diversity over training and at the end, main runs (claim C2: SPO keeps more distinct correct
solutions; PPO collapses).

Top three rows, one panel per algorithm (small multiples): validation distinct correct programs
and functionally distinct correct classes (both per problem, out of n samples) and per-token
entropy against updates, seed mean with a 95 % bootstrap band over seeds; thin grey lines are the
other algorithms' seed means, the dashed line the SFT policy (step 0). Bottom row: the same three
quantities on the test split at the end (policy protocol) for each main run and the SFT policy,
mean with the two-level (seeds, then problems) 95 % bootstrap interval and one dot per seed.
Question: does a method reach its pass@k by concentrating on one program per problem (falling
distinct counts, falling entropy), or does it keep several?
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from common import MAIN, Data, labels, per_problem, present, table, try_matrix
from plot import CI_TEXT, SEED, cli, colour, errpoint, fig_legend, has_data, no_data, small_multiples, styled

PANELS = [("distinct_correct_programs", "distinct correct programs\nper problem"),
          ("functional_classes_correct", "functionally distinct\ncorrect classes per problem"),
          ("entropy_per_token", "policy entropy\n(nats per token)")]  # eval_per_problem column, label


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    runs, curves, pp, names = table(data, "runs"), table(data, "curves"), per_problem(data), labels(data)
    main = present(runs, MAIN, "main")

    fig = Figure(figsize=(4 * max(len(main), 4) + 1, 19), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1.25])
    grid = top.subplots(len(PANELS), max(len(main), 1), sharex=True, sharey="row", squeeze=False)
    for row, (metric, ylabel) in zip(grid, PANELS):
        small_multiples(row, curves, main, f"val/{metric}", "step", rng, names)
        row[0].set_ylabel(f"validation {ylabel}")
    for ax, sr in zip(grid[0], main):
        ax.set_title(names.get(sr, sr))
    for ax in grid[-1]:
        ax.set_xlabel("update (optimizer steps)")
    top.suptitle(f"validation during training ({CI_TEXT} band)")

    finals = bottom.subplots(1, len(PANELS))
    studies = ["sft", *main]
    for ax, (metric, ylabel) in zip(finals, PANELS):
        for i, sr in enumerate(studies):
            m = try_matrix(pp, metric, study_run=sr, split="test", protocol="policy")
            if m is not None:
                errpoint(ax, i, m, rng, colour(sr))
        if not has_data(ax):
            no_data(ax, f"final test {metric}")
            continue
        ax.set_xticks(range(len(studies)), [names.get(s, s) for s in studies], rotation=25, ha="right")
        ax.set_xlim(-0.6, len(studies) - 0.4)
        ax.set(ylabel=ylabel.replace("\n", " "), title=f"final test: {ylabel.replace(chr(10), ' ')}")
    bottom.suptitle(f"final test evaluation, policy protocol ({CI_TEXT}, seeds then problems; dots: seeds)")
    fig_legend(fig, grid)
    fig.suptitle("F3 diversity over training and at the end, main runs (claim C2)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
