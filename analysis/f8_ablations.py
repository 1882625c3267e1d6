"""F8: SPO hyper-parameter ablations, one family at a time against its reference run.

Families: terminal loss (squared vs BCE), β (the main comparison's β = reference, and the ablated values), optimizer
steps per batch, the Q̂0 estimator and importance weights on replayed data (half-online SPO
without vs with). Each ablation's reference is runs.csv's ``reference`` column (spolab.study: online
SPO unless the study file names another; half-online SPO for the importance weights in
conf/study/ablations.yaml); a family whose entries name different references is drawn once per reference. Final test
pass@1, pass@10 and the diversity among correct programs, exact (the exact success mass, no sampling:
common.comparison_protocol) where the export has it, else sampled under the policy protocol (distinct correct
programs per solved problem), mean with the
two-level (seeds, then problems) 95 % bootstrap interval and one dot per seed; the dashed segment is
the family's reference. Ablations may have fewer seeds
than their reference: each tick label gives the run's seeds, and
single-seed runs have an open marker (their interval is over problems only).
Question: which design choice of SPO matters, and which is free?
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from common import (
    Data,
    comparison_metrics,
    comparison_protocol,
    labels,
    matrix,
    per_problem,
    reference,
    table,
)
from plot import CI_TEXT, SEED, cli, errpoint, no_data, palette, styled

FAMILIES = {"loss": "terminal loss", "beta": "β", "steps": "steps per batch", "q0": "Q̂0 estimator",
            "is": "IS weights on replay"}


def families(runs, evaluated: set[str]) -> list[tuple[str, list[str], str]]:
    """(family, its study runs in x order with the reference, reference) for the ablation group; the
    reference of each entry is runs.csv's ``reference`` (one group per family and reference)."""
    abl = runs[(runs.group == "ablation") & runs.study_run.isin(evaluated)]
    beta = runs.groupby("study_run").beta.first()
    out = []
    for fam in [f for f in FAMILIES if f in set(abl.family)] + sorted(set(abl.family.dropna()) - set(FAMILIES)):
        members = list(dict.fromkeys(abl.study_run[abl.family == fam]))
        by_ref = {}
        for sr in members:
            by_ref.setdefault(reference(runs, sr), []).append(sr)
        for ref, entries in by_ref.items():
            studies = ([ref] if ref in evaluated else []) + entries
            if fam == "beta":
                studies.sort(key=lambda s: beta.get(s, np.nan))
            out.append((fam, studies, ref))
    return out


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    runs, pp, names, colour = table(data, "runs"), per_problem(data), labels(data), palette(data)
    beta = runs.groupby("study_run").beta.first()
    protocol = comparison_protocol(pp)  # exact where the export has it: every entry is evaluated under it
    evaluated = set(pp.study_run[(pp.split == "test") & (pp.protocol == protocol)])
    fams = families(runs, evaluated)
    n_seeds = runs.groupby("study_run").seed.nunique()
    refs = {ref for _, studies, ref in fams if ref in studies}
    counts = {kind: "/".join(map(str, sorted({int(n_seeds.get(s, 1)) for _, st, _ in fams for s in st
                                               if (s in refs) == (kind == "ref")})))
              for kind in ("abl", "ref")}

    width = max(10, 1.3 * sum(len(s) + 1 for _, s, _ in fams))
    fig = Figure(figsize=(width, 14), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    ticks = []
    for row, (ax, (value, name)) in enumerate(zip(axes, comparison_metrics(protocol))):
        x = 0
        for j, (fam, studies, ref) in enumerate(fams):
            start = x
            for sr in studies:
                m = matrix(pp, value, study_run=sr, split="test", protocol=protocol)
                point, _, _ = errpoint(ax, x, m, rng, colour(sr), hollow=m.shape[0] == 1)
                if sr == ref:
                    ref_point = point
                if row == 0:
                    label = (f"{names.get(sr, sr)} β={beta[sr]:g}" if fam == "beta" and sr == ref  # e.g. PPO β=0.05
                             else names.get(sr, sr))
                    n = m.shape[0]
                    ticks.append((x, f"{label}{' (ref)' if sr == ref else ''}\n({n} seed{'s' if n > 1 else ''})"))
                x += 1
            if ref in studies:
                ax.hlines(ref_point, start - 0.4, x - 0.6, ls="--", color=colour(ref), lw=1.2)
            if j < len(fams) - 1:
                ax.axvline(x, color="0.6", lw=0.8)  # between families
            if row == 0:
                title = FAMILIES.get(fam, fam)
                if sum(f == fam for f, _, _ in fams) > 1:  # one family drawn once per reference: name it
                    title += f" (against {names.get(ref, ref)})"
                ax.text((start + x - 1) / 2, 1.01, title, transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=11, fontweight="bold")
            x += 1
        if not fams:
            no_data(ax, f"{name}:\nno SPO ablations in this study (snakemake --config study=ablations)")
            continue
        ax.set_ylabel(f"test {name}")
        ax.set_xlim(-0.6, x - 1.4)
    if ticks:
        axes[-1].set_xticks([t for t, _ in ticks], [lab for _, lab in ticks], rotation=30, ha="right")
    axes[0].legend(handles=[Line2D([], [], marker="o", color="0.3", ls="", ms=7, label="several seeds (dots: one each)"),
                            Line2D([], [], marker="o", color="0.3", mfc="white", mew=2, ls="", ms=7,
                                   label="1 seed (interval over problems only)")],
                   loc="lower left", bbox_to_anchor=(0, 1.08), ncol=2, frameon=False)
    fig.suptitle(f"F8 ablations by family, final test evaluation, {protocol} protocol: ablations have {counts['abl']} "
                 f"seed(s), references {counts['ref']}\n({CI_TEXT}, seeds then problems; dots: seeds; dashed: the "
                 "family's reference; seeds per run in the tick labels)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
