"""F4: the off-policy data-source ablation of SPO (claims C3: SPO learns from data it did not
sample, and C6: half-online SPO against online SPO).

For every off-policy study run (SPO trained on expert programs, an earlier run's samples, another
policy's samples, other decoding settings, random programs, or offline data only), the runs they are
judged against (runs.csv's ``reference``: online SPO in the default study) and, for context,
half-online SPO (replay) and PPO: final pass@1, pass@10 and the diversity among correct programs, exact
(the exact success mass, no sampling: common.comparison_protocol) where the export has it, else sampled under
the policy protocol (distinct correct programs per solved problem), mean with the two-level (seeds, then problems) 95 % bootstrap interval
and one dot per seed; top row test split, bottom row OOD split. The dashed line is the reference.
Question: which off-policy sources help, which are harmless, which hurt?
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from common import (
    Data,
    comparison_metrics,
    comparison_protocol,
    entries,
    labels,
    per_problem,
    present,
    reference,
    roles,
    table,
    try_matrix,
)
from plot import CI_TEXT, SEED, cli, errpoint, fig_legend, has_data, no_data, palette, styled

CONTEXT = ["spo_online", "spo_half_online", "ppo"]  # roles drawn after the references: SPO online, replay (C6), PPO


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    runs, pp, names, colour = table(data, "runs"), per_problem(data), labels(data), palette(data)
    sources = present(pp, entries(data, "offpolicy"), "offpolicy")
    context = [e for role in CONTEXT if (e := roles(data).get(role))]  # the study file's roles
    refs = list(dict.fromkeys(r for s in sources if (r := reference(runs, s))))  # runs.csv, from spolab.study
    top = list(dict.fromkeys(s for s in [*refs, *context] if s in set(pp.study_run)))
    studies = top + sources
    n_ref = len(top)
    protocol = comparison_protocol(pp)

    fig = Figure(figsize=(17, 4 + 1.1 * max(len(studies), 3)), layout="constrained")
    axes = fig.subplots(2, 3, sharey=True)
    for row, split in zip(axes, ("test", "ood")):
        for ax, (value, name) in zip(row, comparison_metrics(protocol)):
            for y, sr in enumerate(studies):
                m = try_matrix(pp, value, study_run=sr, split=split, protocol=protocol)
                if m is None:
                    continue
                point, _, _ = errpoint(ax, y, m, rng, colour(sr), horizontal=True)
                if sr in refs:
                    ax.axvline(point, ls="--", color=colour(sr), lw=1.2, label=f"{names.get(sr, sr)} (reference)")
            if not has_data(ax):
                no_data(ax, f"{split} {name} of the off-policy runs")
                continue
            ax.set(xlabel=name, title=f"{'OOD' if split == 'ood' else 'test'}: {name}".replace("\n", " "))
            if 0 < n_ref < len(studies):
                ax.axhline(n_ref - 0.5, color="0.5", lw=0.8)  # references above, off-policy sources below
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(studies)), [names.get(s, s) for s in studies])
        ax.set_ylim(len(studies) - 0.5, -0.5)
    fig_legend(fig, axes)
    missing = "" if sources else "\n(this export has no off-policy runs: references only)"
    fig.suptitle(f"F4 SPO with off-policy data sources, final evaluation, {protocol} protocol ({CI_TEXT}, "
                 f"seeds then problems; dots: seeds) (claims C3, C6){missing}")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
