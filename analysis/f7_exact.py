"""F7: the exact tabular testbed, KL(π_θ‖π*) against updates.

Tabular policies trained with the same losses as the language-model runs, where the soft optimum
π* ∝ π_ref·exp(r/β) and every quantity is computed exactly by enumeration (spolab.exact; one
seed). a: KL(π_θ‖π*) (log scale): SPO with the squared loss should converge to π* (claim: SPO's
fixed point is the KL-regularised optimum), BCE to its own optimum π_ref(·|success), PPO towards
π* only as far as its clipped, sampled updates take it; b: KL(π_ref(·|success)‖π_θ), the distance
to BCE's optimum; c: probability of success. A dotted line marks π*'s success probability where
the export carries it (column exact/optimum_success_prob). One row of panels per β the testbed ran at
(the workflow runs conf/exact.yaml's `betas`: the main comparison's β, where π* is close to π_ref(·|success),
and a larger one).
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
    """One row of panels per β the testbed ran at (exact.csv's ``beta``; one row where it is absent)."""
    exact = table(data, "exact", optional=True)
    exact = exact if exact is not None else pd.DataFrame(columns=["run", "step"])
    if "beta" not in exact:
        exact = exact.assign(beta=np.nan)
    betas = sorted(exact.beta.dropna().unique()) or [np.nan]
    fig = Figure(figsize=(18, 5.0 * len(betas)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(betas), 3))
    for row, beta in zip(axes, betas):
        at = exact[exact.beta == beta] if np.isfinite(beta) else exact
        where = f"β = {beta:g}: " if np.isfinite(beta) else ""
        for ax, (metric, log, ylabel, title) in zip(row, PANELS):
            for run in [r for r in RUNS if r in set(at.run)] + sorted(set(at.run) - set(RUNS)):
                d = at[(at.run == run)].sort_values("step") if metric in at else at.iloc[:0]
                d = d[d[metric].notna()]
                if d.empty:
                    continue
                label, colour = RUNS.get(run, (run, _FALLBACK[sum(map(ord, run)) % len(_FALLBACK)]))
                ax.plot(d.step, d[metric].clip(lower=KL_FLOOR) if log else d[metric], color=colour, lw=2, label=label)
            if metric == "exact/success_prob" and "exact/optimum_success_prob" in at and ax.lines:
                ax.axhline(np.nanmean(at["exact/optimum_success_prob"]), ls=":", color="k", label="π* (soft optimum)")
            if not ax.lines:
                no_data(ax, metric)
                continue
            ax.set(xlabel="update", ylabel=ylabel, title=where + title, yscale="log" if log else "linear")
            ax.legend(loc="best")
    fig.suptitle("F7 exact testbed: KL(π_θ‖π*) against updates, per β (exact enumeration, one seed)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
