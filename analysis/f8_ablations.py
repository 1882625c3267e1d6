"""F8: SPO hyper-parameter ablations, one family at a time against its reference run.

Families: terminal loss (squared vs BCE), β (0.03, 0.1 = reference, 0.3), optimizer steps per
batch (1 vs 4), the Q̂0 estimator (Monte-Carlo vs shrunk) and importance weights on replayed data
(half-online SPO without vs with). The reference is online SPO for every family except the
importance weights, whose reference is half-online SPO. Final test pass@1, pass@10 and distinct
correct programs per problem (policy protocol), mean with the two-level (seeds, then problems)
95 % bootstrap interval and one dot per seed; the dashed segment is the family's reference.
Question: which design choice of SPO matters, and which is free?
"""

import matplotlib.pyplot as plt
import numpy as np

import common

args = common.cli(__doc__.splitlines()[0])
rng = np.random.default_rng(0)
runs, pp, names = common.read(args.data, "runs"), common.read_per_problem(args.data), common.labels(args.data)
FAMILIES = {"loss": "terminal loss", "beta": "β", "steps": "steps per batch", "q0": "Q̂0 estimator",
            "is": "IS weights on replay"}
evaluated = set(pp.study_run[(pp.split == "test") & (pp.protocol == "policy")])
abl = runs[(runs.group == "ablation") & runs.study_run.isin(evaluated)]
beta = runs.groupby("study_run").beta.first()
families = []  # (family, [study runs in x order], reference)
for fam in [f for f in FAMILIES if f in set(abl.family)] + sorted(set(abl.family.dropna()) - set(FAMILIES)):
    ref = "spo_half_online" if fam == "is" else "spo"
    members = list(dict.fromkeys(abl.study_run[abl.family == fam]))
    studies = ([ref] if ref in evaluated else []) + members
    if fam == "beta":
        studies.sort(key=lambda s: beta.get(s, np.nan))
    families.append((fam, studies, ref))
METRICS = [(common.passk_value(1), "test pass@1"), (common.passk_value(10), "test pass@10"),
           ("distinct_correct_programs", "test distinct correct programs per problem")]

width = max(10, 1.2 * sum(len(s) + 1 for _, s, _ in families))
fig, axes = plt.subplots(3, 1, figsize=(width, 14), sharex=True, layout="constrained")
for ax, (value, name) in zip(axes, METRICS):
    x, ticks = 0, []
    for fam, studies, ref in families:
        start = x
        for sr in studies:
            m = common.matrix(pp, value, study_run=sr, split="test", protocol="policy")
            point, _, _ = common.errpoint(ax, x, m, rng, common.colour(sr))
            if sr == ref:
                ref_point = point
            label = f"SPO β={beta[sr]:g}" if fam == "beta" and sr == ref else names.get(sr, sr)
            ticks.append((x, label + (" (ref)" if sr == ref else "")))
            x += 1
        if ref in studies:
            ax.hlines(ref_point, start - 0.4, x - 0.6, ls="--", color=common.colour(ref), lw=1.2)
        ax.axvline(x, color="0.6", lw=0.8)
        ax.text((start + x - 1) / 2, 1.01, FAMILIES.get(fam, fam), transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=11, fontweight="bold")
        x += 1
    if not families:
        common.no_data(ax, f"{name} of the SPO ablations")
        continue
    ax.set_ylabel(name)
    ax.set_xlim(-0.6, x - 1.4)
axes[-1].set_xticks([t for t, _ in ticks], [lab for _, lab in ticks], rotation=30, ha="right")
fig.suptitle(f"F8 SPO ablations by family, final test evaluation, policy protocol\n({common.CI_TEXT}, "
             "seeds then problems; dots: seeds; dashed: the family's reference)")
common.savefig(fig, args.out)
