"""F6: training stability, one thin line per seed (claim C5: SPO trains as stably as the baselines).

Main runs only, coloured by algorithm: validation pass@1 and KL(π_θ‖π_ref) per sequence at each
evaluation, and the gradient norm and mean rollout reward at every update, both smoothed with a
rolling mean over 10 updates. No interval here: each seed is drawn, so a collapse, a spike or a
diverging seed stays visible instead of being averaged away.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from common import Data, entries, labels, present, table
from plot import cli, fig_legend, no_data, palette, styled

SMOOTH = 10  # updates in the rolling mean of the per-update metrics
PANELS = [("val/pass@1", 1, "validation pass@1", "validation pass@1"),
          ("val/kl_ref", 1, "KL(π_θ‖π_ref) per sequence (nats)", "validation KL to the reference policy"),
          ("opt/grad_norm", SMOOTH, "gradient norm (before clipping)", f"gradient norm, rolling mean of {SMOOTH}"),
          ("rollout/reward", SMOOTH, "mean reward of the batch", f"rollout reward, rolling mean of {SMOOTH}")]


@styled
def plot(data: Data) -> Figure:
    runs, curves, names, colour = table(data, "runs"), table(data, "curves"), labels(data), palette(data)
    main = present(runs, entries(data, "main"), "main")
    fig = Figure(figsize=(15, 10), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, (metric, window, ylabel, title) in zip(axes.flat, PANELS):
        for sr in main:
            for i, (_, run) in enumerate(curves[curves.study_run == sr].groupby("run_name")):
                d = run[run[metric].notna()].sort_values("step") if metric in run else run.iloc[:0]
                if d.empty:
                    continue
                y = d[metric].rolling(window, min_periods=1).mean()
                ax.plot(d.step, y, color=colour(sr), lw=1.1, alpha=0.8, ms=3, marker="o" if window == 1 else None,
                        label=names.get(sr, sr) if i == 0 else None)
        if not ax.lines:
            no_data(ax, f"{metric} of the main runs")
        ax.set(xlabel="update (optimizer steps)", ylabel=ylabel, title=title)
    fig_legend(fig, axes)
    fig.suptitle("F6 stability: every seed of the main runs (one line per seed, no averaging) (claim C5)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
