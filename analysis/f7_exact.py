"""F7: the exact tabular testbed, KL(π_θ‖π*) against updates.

Tabular policies trained with the same losses as the language-model runs, where the soft optimum
π* ∝ π_ref·exp(r/β) and every quantity is computed exactly by enumeration (spolab.exact; one
seed). a: KL(π_θ‖π*) (log scale): SPO with the squared loss should converge to π* (claim: SPO's
fixed point is the KL-regularised optimum), BCE to its own optimum π_ref(·|success), PPO towards
π* only as far as its clipped, sampled updates take it; b: KL(π_ref(·|success)‖π_θ), the distance
to BCE's optimum; c: probability of success. A dotted line marks π*'s success probability where
the export carries it (column exact/optimum_success_prob).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common import Data, table
from plot import _FALLBACK, cli, no_data, styled

RUNS = {"spo_squared": ("SPO, squared loss", "#1f77b4"), "spo_bce": ("SPO, BCE loss", "#8c6d31"),
        "ppo": ("PPO", "#d62728")}  # exact.csv run (spolab.exact's variants, no study entries) -> label, colour
PANELS = [("exact/kl_to_optimum", True, "KL(π_θ‖π*) (nats, log scale)", "a  KL(π_θ‖π*) against updates"),
          ("exact/kl_conditioned_to_policy", True, "KL(π_ref(·|success)‖π_θ) (nats, log scale)",
           "b  KL to BCE's optimum π_ref(·|success)"),
          ("exact/success_prob", False, "P(success) under π_θ", "c  probability of success")]
KL_FLOOR = 1e-8  # a KL of exactly 0 cannot sit on a log axis: drawn at this floor


@styled
def plot(data: Data) -> Figure:
    exact = table(data, "exact", optional=True)
    exact = exact if exact is not None else pd.DataFrame(columns=["run", "step"])
    fig = Figure(figsize=(18, 5.5), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (metric, log, ylabel, title) in zip(axes, PANELS):
        for run in [r for r in RUNS if r in set(exact.run)] + sorted(set(exact.run) - set(RUNS)):
            d = exact[(exact.run == run)].sort_values("step") if metric in exact else exact.iloc[:0]
            d = d[d[metric].notna()]
            if d.empty:
                continue
            label, colour = RUNS.get(run, (run, _FALLBACK[sum(map(ord, run)) % len(_FALLBACK)]))
            ax.plot(d.step, d[metric].clip(lower=KL_FLOOR) if log else d[metric], color=colour, lw=2, label=label)
        if metric == "exact/success_prob" and "exact/optimum_success_prob" in exact and ax.lines:
            ax.axhline(np.nanmean(exact["exact/optimum_success_prob"]), ls=":", color="k", label="π* (soft optimum)")
        if not ax.lines:
            no_data(ax, metric)
            continue
        ax.set(xlabel="update", ylabel=ylabel, title=title, yscale="log" if log else "linear")
        ax.legend(loc="best")
    fig.suptitle("F7 exact testbed: KL(π_θ‖π*) against updates (exact enumeration, one seed)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
