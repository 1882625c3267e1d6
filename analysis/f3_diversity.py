"""F3: diversity over training and at the end, main runs (claim C2: SPO keeps more distinct correct
solutions).

Diversity that is not the pass rate again (spolab.eval.diversity): distinct correct programs and
functionally distinct correct classes *per solved problem* (a problem with no correct sample has no
value, so a run that solves more problems does not count as more diverse for it), the effective
number of distinct programs among all n samples (exp of the entropy of their program distribution,
whatever their correctness) and the policy's per-token entropy. Top three rows, one panel per
algorithm (small multiples): the validation value against updates, seed mean with a 95 % bootstrap
band over seeds; thin grey lines are the other algorithms' seed means, the dashed line the SFT policy
(step 0); the functional classes are left out there (with validation's 10 samples they are 1 on
nearly every solved problem). Bottom row: all four on the test split at the end (policy protocol)
for the SFT policy and each main run the study samples (the C1/C2 pair; the others are evaluated exactly,
their entropy among correct programs is in the report's tables), mean with the two-level (seeds, then problems) 95 % bootstrap
interval and one dot per seed. Question: does a method reach its pass@k by concentrating on one program per problem
(falling counts, falling entropy), or does it keep several? (F9 asks the same at matched KL.)
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from common import Data, entries, labels, per_problem, present, table, try_matrix
from plot import CI_TEXT, SEED, cli, errpoint, fig_legend, has_data, no_data, palette, small_multiples, styled

PANELS = [("distinct_correct_per_solved", "distinct correct programs\nper solved problem"),
          ("functional_classes_per_solved", "functionally distinct correct\nclasses per solved problem"),
          ("effective_programs", "effective distinct programs\n(exp entropy, all samples)"),
          ("entropy_per_token", "policy entropy\n(nats per token)")]  # eval_per_problem column, label
# validation rows: all but the functional classes, which with validation's 10 samples per problem are 1 on
# nearly every solved problem (a flat line); the final test row (20 samples) shows them
VAL_PANELS = [p for p in PANELS if p[0] != "functional_classes_per_solved"]


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    runs, curves, pp, names = table(data, "runs"), table(data, "curves"), per_problem(data), labels(data)
    colour = palette(data)
    main = present(runs, entries(data, "main"), "main")

    fig = Figure(figsize=(4 * max(len(main), 4) + 1, 20), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1.3])
    grid = top.subplots(len(VAL_PANELS), max(len(main), 1), sharex=True, sharey=False, squeeze=False)
    for row, (metric, ylabel) in zip(grid, VAL_PANELS):
        small_multiples(row, curves, main, f"val/{metric}", "step", rng, names, colour)
        row[0].set_ylabel(f"validation {ylabel}")
    for ax, sr in zip(grid[0], main):
        ax.set_title(names.get(sr, sr))
    for ax in grid[-1]:
        ax.set_xlabel("update (optimizer steps)")
    top.suptitle(f"validation during training ({CI_TEXT} band)")

    finals = bottom.subplots(1, len(PANELS))
    studies = ["sft", *[sr for sr in main if try_matrix(pp, "n", study_run=sr, split="test", protocol="policy")
                        is not None]]  # the runs sampled under the policy protocol
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
        ax.set(ylabel=f"test {ylabel}")  # the row's title says it is the final test evaluation
    bottom.suptitle(f"final test evaluation, policy protocol, runs with samples ({CI_TEXT}, seeds then problems; "
                    "dots: seeds)")
    fig_legend(fig, grid)
    fig.suptitle("F3 diversity over training and at the end, main runs (claim C2)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
