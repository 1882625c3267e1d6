"""F4: the off-policy data-source ablation of SPO (claim C3: SPO learns from data it did not sample).

For every off-policy study run (SPO trained on expert programs, an earlier run's samples, another
policy's samples, other decoding settings, random programs, or offline data only) and the
references online SPO, half-online SPO (replay) and PPO: final pass@1, pass@10 and distinct
correct programs per problem (policy protocol), mean with the two-level (seeds, then problems)
95 % bootstrap interval and one dot per seed; top row test split, bottom row OOD split. The dashed
line is online SPO. Question: which off-policy sources help, which are harmless, which hurt?
"""

import matplotlib.pyplot as plt
import numpy as np

import common

args = common.cli(__doc__.splitlines()[0])
rng = np.random.default_rng(0)
pp, names = common.read_per_problem(args.data), common.labels(args.data)
REFERENCES = ["spo", "spo_half_online", "ppo"]
studies = [s for s in REFERENCES if s in set(pp.study_run)]
studies += common.present(pp, common.OFFPOLICY, "offpolicy")
METRICS = [(common.passk_value(1), "pass@1"), (common.passk_value(10), "pass@10"),
           ("distinct_correct_programs", "distinct correct programs per problem")]

fig, axes = plt.subplots(2, 3, figsize=(17, 4 + 1.1 * max(len(studies), 3)), sharey=True,
                         layout="constrained")
for row, split in zip(axes, ("test", "ood")):
    for ax, (value, name) in zip(row, METRICS):
        for y, sr in enumerate(studies):
            m = common.try_matrix(pp, value, study_run=sr, split=split, protocol="policy")
            if m is None:
                continue
            point, _, _ = common.errpoint(ax, y, m, rng, common.colour(sr), horizontal=True)
            if sr == "spo":
                ax.axvline(point, ls="--", color=common.colour("spo"), lw=1.2, label="online SPO (reference)")
        if not ax.collections and not ax.lines:
            common.no_data(ax, f"{split} {name} of the off-policy runs")
            continue
        ax.set(xlabel=name, title=f"{'OOD' if split == 'ood' else 'test'}: {name}")
        n_ref = sum(s in REFERENCES for s in studies)
        if 0 < n_ref < len(studies):
            ax.axhline(n_ref - 0.5, color="0.5", lw=0.8)  # references above, off-policy sources below
for ax in axes[:, 0]:
    ax.set_yticks(range(len(studies)), [names.get(s, s) for s in studies])
    ax.set_ylim(len(studies) - 0.5, -0.5)
common.fig_legend(fig, axes)
missing = "" if set(studies) - set(REFERENCES) else "\n(this export has no off-policy runs: references only)"
fig.suptitle(f"F4 SPO with off-policy data sources, final evaluation, policy protocol ({common.CI_TEXT}, "
             f"seeds then problems; dots: seeds){missing}")
common.savefig(fig, args.out)
