"""F9: does SPO keep diversity, or did it just move less? Validation metrics against KL(π_θ‖π_ref).

PPO may move further from π_ref than SPO at the same number of samples (docs/design.md §3), so "SPO is more
diverse at the end" cannot by itself tell "keeps diversity" from "moved less". Panel a: how far each
main algorithm moves, KL(π_θ‖π_ref) per sequence (val/kl_ref, k1) against updates. Panels b–f: each
validation metric (the val/ keys logged every eval_every updates) against KL instead of updates, as
its change since the seed's own step 0 (the SFT policy: the seeds validate with different sampling
seeds, and subtracting removes that offset): each seed's curve is read at common KL levels
(common.at_kl: linear in KL between checkpoints, at the first time the seed reaches a level), from 0
to the largest KL every seed of that algorithm reaches, then the seed mean with a 95 % bootstrap band
over seeds. Filled markers: each algorithm's last checkpoint (seed means of KL and change); the
star: the SFT policy. The dotted line is κ*, the largest KL every seed of online SPO and of PPO
reaches, and each panel states SPO − PPO there (paired over seeds, 95 % CI): both from
common.matched_kl, the function the report's matched-KL table and claims use, so the figure and the
report print the same κ* and the same difference.
Reading: a method that only moved less sits on the others' curve, further left; one that keeps
diversity sits above them at the same KL.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from common import (
    KL,
    Data,
    checkpoint_matrix,
    curve_matrix,
    entries,
    kl_matrix,
    kl_reach,
    labels,
    matched_kl,
    present,
    roles,
    table,
)
from plot import CI_TEXT, SEED, band, cli, fig_legend, no_data, palette, styled

LEVELS = 30  # KL levels each algorithm's curve is read at
DIVERGED = 10  # a run whose final KL exceeds this multiple of the median main run's is drawn apart
PANELS = [("val/pass@1", "pass@1"), ("val/pass@10", "pass@10"), ("val/entropy_per_token", "entropy / token (nats)"),
          ("val/distinct_correct_per_solved", "distinct correct / solved problem"),
          ("val/effective_programs", "effective distinct programs")]  # curves column, label


def change_at_kl(curves, study_run: str, metric: str, levels) -> np.ndarray:
    """(seeds × levels): each seed's metric at those KL levels minus its own first checkpoint (step 0)."""
    return kl_matrix(curves, study_run, metric, levels) - checkpoint_matrix(curves, study_run, metric, last=False)


def _first_kl(curves, study_run: str, metric: str) -> float:
    """The largest first-checkpoint KL among a run's seeds: where every seed's curve starts (0 at step 0)."""
    d = curves[(curves.study_run == study_run) & curves[KL].notna() & curves[metric].notna()]
    return float(d.sort_values("step").groupby("seed")[KL].first().max())


@styled
def plot(data: Data) -> Figure:
    rng = np.random.default_rng(SEED)
    runs, curves, names, colour = table(data, "runs"), table(data, "curves"), labels(data), palette(data)
    main = present(runs, entries(data, "main"), "main")
    spo, ppo = (roles(data).get(r) for r in ("spo_online", "ppo"))  # the study file's roles
    val = curves[curves[KL].notna()] if KL in curves else curves.iloc[:0]

    # a run that diverged (final KL > DIVERGED x the median run's) would stretch every axis: not drawn,
    # named in each panel
    final = {sr: float(checkpoint_matrix(val, sr, KL).mean()) for sr in main if sr in set(val.study_run)}
    med = float(np.median(list(final.values()))) if final else np.nan
    diverged = [sr for sr, k in final.items() if np.isfinite(med) and med > 0 and k > DIVERGED * med]
    note = "; ".join(f"{names.get(sr, sr)} diverged (final KL {final[sr]:.3g} nats): not drawn" for sr in diverged)

    fig = Figure(figsize=(20, 11.5), layout="constrained")
    axes = fig.subplots(2, 3)
    ax = axes.flat[0]  # a: how far each algorithm moves
    for sr in [sr for sr in main if sr in set(val.study_run) and sr not in diverged]:
        band(ax, *curve_matrix(val, sr, KL), rng, colour(sr), names.get(sr, sr), marker="o", ms=4)
    if not ax.lines:
        no_data(ax, f"{KL} of the main runs")
    ax.set(xlabel="update (optimizer steps)", ylabel="KL(π_θ‖π_ref) per sequence (nats)",
           title="a  how far each algorithm moves from π_ref")
    if diverged:
        ax.text(0.02, 0.97, note, transform=ax.transAxes, va="top", fontsize=10,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9})

    for ax, (letter, (metric, ylabel)) in zip(axes.flat[1:], zip("bcdef", PANELS)):
        shown = [sr for sr in main if metric in val and val.loc[val.study_run == sr, metric].notna().any()
                 and sr not in diverged]
        if not shown:
            no_data(ax, f"{metric} against {KL}")
            continue
        for sr in shown:
            levels = np.linspace(_first_kl(val, sr, metric), kl_reach(val, [sr], metric), LEVELS)
            band(ax, levels, change_at_kl(val, sr, metric, levels), rng, colour(sr), names.get(sr, sr))
            last = checkpoint_matrix(val, sr, metric) - checkpoint_matrix(val, sr, metric, last=False)
            ax.scatter(checkpoint_matrix(val, sr, KL).mean(), last.mean(), color=colour(sr), s=55, edgecolor="k",
                       lw=0.7, zorder=4)
        ax.scatter(0, 0, marker="*", s=260, color="k", zorder=5, label=names["sft"] + ", step 0")
        m = matched_kl(val, spo, ppo, metric, SEED) if {spo, ppo} <= set(shown) else None
        if m is not None and m.kappa > 0:
            ax.axvline(m.kappa, ls=":", color="0.3", lw=1.4, label="κ*: the largest KL every seed of SPO and PPO reaches")
            d, lo, hi = m.at_kl
            ci = f"[{lo:+.3f}, {hi:+.3f}]" if m.seeds > 1 else "(one seed: no interval)"
            ax.text(0.98, 0.97, f"at κ* = {m.kappa:.3g}: SPO − PPO {d:+.3f} {ci}",
                    transform=ax.transAxes, ha="right", va="top", fontsize=10,
                    bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9})
        ax.axhline(0, color="0.5", lw=0.8)
        if diverged:
            ax.text(0.02, 0.03, note, transform=ax.transAxes, fontsize=9, color="0.3")
        ax.set(xlabel="KL(π_θ‖π_ref) per sequence (nats)", ylabel=f"change in validation {ylabel}\nsince step 0",
               title=f"{letter}  validation {ylabel} against KL")
    axes.flat[1].scatter([], [], color="0.5", edgecolor="k", s=55, label="last checkpoint (seed means)")
    fig_legend(fig, axes)
    fig.suptitle("F9 does SPO keep diversity, or did it just move less? Validation metrics at matched KL(π_θ‖π_ref), "
                 f"change since the SFT policy ({CI_TEXT} band over seeds) (claims C1, C2, C6)")
    return fig


def main() -> None:
    cli(plot, __doc__)


if __name__ == "__main__":
    main()
