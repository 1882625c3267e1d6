"""F9: the reward-KL frontier: pass@1, pass@10 and distinct correct programs against KL(π_θ‖π_ref).

Every validation checkpoint of every run (curves rows with val metrics): x = KL(π_θ‖π_ref) per
sequence (nats), y = the validation metric; one line per run (seed) joins its checkpoints in step
order, coloured by algorithm for the main group, thin grey for the off-policy and ablation runs;
a filled marker is the final checkpoint, the black star the SFT policy (step 0, KL 0). Purpose
(claim C2): separate "keeps diversity" from "moved less". A method that merely stayed closer to
π_ref sits on the same curve as the others, only further left; one that keeps diversity sits above
the others at the same KL.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from common import MAIN, Data, labels, present, table
from plot import cli, colour, fig_legend, no_data, styled

PANELS = [("val/pass@1", "validation pass@1"), ("val/pass@10", "validation pass@10"),
          ("val/distinct_correct_programs", "distinct correct programs per problem")]


@styled
def plot(data: Data) -> Figure:
    runs, curves, names = table(data, "runs"), table(data, "curves"), labels(data)
    main = present(runs, MAIN, "main")
    val = curves[curves["val/kl_ref"].notna()] if "val/kl_ref" in curves else curves.iloc[:0]
    val = val.sort_values(["run_name", "step"])  # checkpoints in step order

    fig = Figure(figsize=(19, 6.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (metric, ylabel) in zip(axes, PANELS):
        d = val[val[metric].notna()] if metric in val else val.iloc[:0]
        if d.empty:
            no_data(ax, f"{metric} against val/kl_ref")
            continue
        others = sorted(set(d.study_run) - set(main))
        for _, r in [run for sr in [*main, *others] for run in d[d.study_run == sr].groupby("run_name")]:
            sr, ck = r.study_run.iloc[0], r[r.step > 0]
            is_main = sr in main
            col = colour(sr) if is_main else "0.6"
            ax.plot(r["val/kl_ref"], r[metric], color=col, lw=1.4 if is_main else 0.8,
                    alpha=0.85 if is_main else 0.5, zorder=3 if is_main else 1,
                    label=names.get(sr, sr) if is_main else "off-policy / ablation runs")
            if not ck.empty:
                ax.scatter(ck["val/kl_ref"].iloc[-1], ck[metric].iloc[-1], color=col, s=40 if is_main else 18,
                           edgecolor="k" if is_main else "none", lw=0.6, zorder=4 if is_main else 2)
        sft = d[d.step == 0]
        if not sft.empty:
            ax.scatter(sft["val/kl_ref"].mean(), sft[metric].mean(), marker="*", s=260, color="k", zorder=5,
                       label=names["sft"] + ", step 0 (seed mean)")
        ax.set(xlabel="KL(π_θ‖π_ref) per sequence (nats)", ylabel=ylabel, title=f"{ylabel} against KL to π_ref")
    axes[0].scatter([], [], color="0.3", edgecolor="k", s=40, label="final checkpoint")
    fig_legend(fig, axes)
    fig.suptitle("F9 frontier over every checkpoint: does a method keep diversity, or did it just move less from "
                 "π_ref? (one line per seed, no averaging) (claim C2)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
