"""F2: pass@k for k = 1..20 at the end of training, main runs and the SFT policy.

Unbiased pass@k per problem from eval_per_problem (n samples, n_correct correct), mean over seeds
and problems with the two-level 95 % bootstrap band (seeds, then problems; one draw of seeds and
problems serves every k). Rows: the sampled protocols (policy, then paper) where they were evaluated
(the study samples the C1/C2 pair, SPO online and PPO, and the SFT policy, on test only: those rows have
the test panels alone), then the exact
protocol, where every run and split has pass@k = 1 − (1 − P_θ(correct | x))^k from its exact success mass;
columns: the test split's pass@k (band: the SFT policy's interval) and its difference to the SFT
policy (paired over problems; intervals at k = 1, 5, 10, 20), then the same for the OOD split. Each panel's y-range fits its own data. Claim tested: C1 (does an RL
method that raises pass@1 keep pass@k at large k, or trade coverage away against SFT?).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from common import EXACT, Data, entries, labels, matrix, passk_value, per_problem, present, protocol_text
from plot import CI_TEXT, SEED, cli, fig_legend, no_data, palette, styled
from stats import diff_intervals, intervals

K_MAX = 20  # largest k drawn (capped by the samples per problem)
BARS_AT = (1, 5, 10, 20)  # k where the difference panels draw their intervals


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    pp, names, colour = per_problem(data), labels(data), palette(data)
    studies = ["sft", *present(pp, entries(data, "main"), "main")]
    protocols = [p for p in ("policy", "paper", EXACT) if (pp.protocol == p).any()] or ["policy"]
    sampled = pp.n[pp.protocol.isin(protocols) & (pp.protocol != EXACT)]  # the exact protocol samples nothing (n 0)
    ks = np.arange(1, int(min(K_MAX, sampled.min())) + 1 if len(sampled) else K_MAX + 1)
    evaluated = set(zip(pp.study_run, pp.split, pp.protocol))

    fig = Figure(figsize=(22, 5.4 * len(protocols) + 0.8), layout="constrained")
    grid = fig.add_gridspec(len(protocols), 4)
    axes = []
    for r, protocol in enumerate(protocols):
        n = int(pp.n[pp.protocol == protocol].min()) if (pp.protocol == protocol).any() else 0
        # a split's pair of panels only where the protocol evaluated it (the study samples test only)
        splits = [sp for sp in ("test", "ood") if ((pp.protocol == protocol) & (pp.split == sp)).any()] or ["test"]
        for c, split in enumerate(splits):
            ax, dax = fig.add_subplot(grid[r, 2 * c]), fig.add_subplot(grid[r, 2 * c + 1])
            axes += [ax, dax]
            name = "OOD" if split == "ood" else split
            ms = {sr: np.stack([matrix(pp, passk_value(k), study_run=sr, split=split, protocol=protocol)
                                for k in ks]) for sr in studies if (sr, split, protocol) in evaluated}  # (K, S, P)
            for i, (sr, m) in enumerate(ms.items()):
                point, lo, hi = intervals(m, rng)
                ax.plot(ks, point, color=colour(sr), label=names.get(sr, sr), lw=2, ls="--" if sr == "sft" else "-")
                if sr == "sft":  # one band only: the runs' intervals are in the difference panel
                    ax.fill_between(ks, lo, hi, color=colour(sr), alpha=0.15, lw=0, label="SFT's 95 % CI")
                elif "sft" in ms:
                    d, dlo, dhi = diff_intervals(m, ms["sft"], rng)
                    dax.plot(ks, d, color=colour(sr), lw=2)
                    at = np.isin(ks, BARS_AT)
                    dodge = np.exp(0.05 * (i - len(ms) / 2))  # side by side on the log axis
                    dax.errorbar(ks[at] * dodge, d[at], yerr=[d[at] - dlo[at], dhi[at] - d[at]], fmt="o",
                                 ms=4, color=colour(sr), capsize=3, lw=1.4)
            title = (f"{name}, exact (no sampling: 1 − (1 − P)^k)" if protocol == EXACT else
                     f"{name}, {protocol} protocol ({protocol_text(data, protocol)}, n = {n})")
            for a, ylabel, what in ((ax, "pass@k (fraction of problems)", title),
                                    (dax, "pass@k − pass@k(SFT)", f"{name}, {protocol}: difference to SFT")):
                if not a.lines:
                    no_data(a, f"{split} / {protocol}")
                    continue
                a.set(xscale="log", xlabel="k (samples per problem)", ylabel=ylabel, title=what)
                ticks = [k for k in (1, 2, 5, 10, 20) if k <= ks[-1]]
                a.set_xticks(ticks, [str(k) for k in ticks])
            if dax.lines:
                dax.axhline(0, color=colour("sft"), ls="--", lw=1.2)
    fig_legend(fig, axes)
    fig.suptitle(f"F2 pass@k at the end of training ({CI_TEXT}, seeds then problems; "
                 "differences paired over problems)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
