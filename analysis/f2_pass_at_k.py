"""F2: pass@k for k = 1..20 at the end of training, main runs and the SFT policy.

Unbiased pass@k per problem from eval_per_problem.csv (n samples, n_correct correct), mean over
seeds and problems with the two-level 95 % bootstrap band (seeds, then problems; one draw of
seeds and problems serves every k). Columns: test | OOD split; rows: policy protocol (T = 1), then
the paper protocol (T = 0.4, top-p 0.95) where it was evaluated. Question: does an RL method that
raises pass@1 keep pass@k at large k (coverage), or does it trade it away against the SFT policy?
"""

import matplotlib.pyplot as plt
import numpy as np

import common

args = common.cli(__doc__.splitlines()[0])
rng = np.random.default_rng(0)
pp, names = common.read_per_problem(args.data), common.labels(args.data)
studies = ["sft", *common.present(pp, common.MAIN, "main")]
protocols = ["policy"] + (["paper"] if (pp.protocol == "paper").any() else [])
PROTOCOL = {"policy": "policy protocol (T = 1, n = 20)",
            "paper": "paper protocol (T = 0.4, top-p 0.95, n = 20)"}
k_max = int(min(20, pp.n.min())) if len(pp) else 20
ks = np.arange(1, k_max + 1)
evaluated = set(zip(pp.study_run, pp.split, pp.protocol))

fig, axes = plt.subplots(len(protocols), 2, figsize=(14, 5.2 * len(protocols)), squeeze=False, sharey=True,
                         layout="constrained")
for row, protocol in zip(axes, protocols):
    for ax, split in zip(row, ("test", "ood")):
        for sr in studies:
            if (sr, split, protocol) not in evaluated:
                continue
            where = dict(study_run=sr, split=split, protocol=protocol)
            # (K, seeds, problems)
            ms = np.stack([common.matrix(pp, common.passk_value(k), **where) for k in ks])
            point, lo, hi = common.intervals(ms, rng)
            style = dict(ls="--", lw=2) if sr == "sft" else dict(lw=2)
            ax.plot(ks, point, color=common.colour(sr), label=names.get(sr, sr), **style)
            ax.fill_between(ks, lo, hi, color=common.colour(sr), alpha=0.18, lw=0)
        if not ax.lines:
            common.no_data(ax, f"{split} / {protocol}")
            continue
        ax.set(xscale="log", xlabel="k (samples per problem)", ylabel="pass@k (fraction of problems)",
               title=f"{split.upper() if split == 'ood' else split} split, {PROTOCOL[protocol]}")
        ticks = [k for k in (1, 2, 5, 10, 20) if k <= k_max]
        ax.set_xticks(ticks, [str(k) for k in ticks])
common.fig_legend(fig, axes)
fig.suptitle(f"F2 pass@k at the end of training ({common.CI_TEXT}, seeds then problems)")
common.savefig(fig, args.out)
