"""The figures of analysis/ drawn from the real committed export (results/data/*.csv, which
analysis/export.py wrote from the default study's MLflow runs; with what a fresh export adds, until
the study is regenerated: tests/committed_export.py), and the interval core analysis/stats.py
against independent calculations.

Each figure module's ``plot(data)`` must return a figure whose panels all hold data, whose axis
limits contain that data and fit it (no panel squashed into a corner of a shared range), plus
per-figure checks (F5: bars on linear axes from 0; F8: every tick label gives its seeds and each
family's reference is runs.csv's; F1: one panel per algorithm; F9: one band per algorithm against
KL, no per-seed lines, and the κ* and SPO − PPO the report prints). A smaller export cut from the real one (one seed, three main runs, no
off-policy runs, ablations or benchmark) must still draw, through the command line that
workflow/rules/report.smk runs.
"""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from math import comb
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import committed_export

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analysis"))
import common  # noqa: E402
import stats  # noqa: E402

MODULES = sorted(p.stem for p in (ROOT / "analysis").glob("f[0-9]_*.py"))
N_AXES = {"f4_offpolicy": 6, "f5_cost": 6, "f6_stability": 4, "f8_ablations": 3,
          "f9_frontier": 6}  # F1 and F3: a panel per main entry, F7: a row per β (n_axes, from the export)
FIT = 0.3  # a panel's data must span at least this share of its axis range (in log space on log axes)


def n_axes(name: str, real: dict[str, pd.DataFrame]) -> int:
    """Panels a figure draws for the export: F1 two per main entry (and 4 summary panels), F2 two per
    protocol and split evaluated, F3 three per main entry (and 4), F7 a row of 3 per β the exact testbed ran at;
    the others a fixed layout."""
    n_main = len(common.entries(real, "main"))
    return {"f1_pass_vs_fresh": 2 * n_main + 4, "f2_pass_at_k": 2 * len(common.per_problem(real)[["protocol", "split"]].drop_duplicates()),
            "f3_diversity": 3 * n_main + 4, "f7_exact": 3 * real["exact"].beta.nunique()}.get(name) or N_AXES[name]


@pytest.fixture(scope="module")
def real() -> dict[str, pd.DataFrame]:
    return committed_export.load()


@pytest.fixture(scope="module")
def figures(real) -> dict[str, Figure]:
    return {name: importlib.import_module(name).plot(real) for name in MODULES}


def _values(ax, axis: int) -> np.ndarray:
    """Every finite data coordinate (axis 0: x, 1: y) that ax's lines, collections and patches draw,
    skipping coordinates given in axes units (axhline's x, axvline's y, axhspan's x)."""
    out = []

    def take(artist, xy):
        if artist.get_transform().contains_branch_seperately(artist.axes.transData)[axis]:
            out.append(np.asarray(xy, dtype=float).reshape(-1, 2)[:, axis])

    for line in ax.lines:
        take(line, line.get_xydata())
    for c in ax.collections:
        if isinstance(c, PathCollection):  # scatter: offsets in data units
            if len(c.get_offsets()):
                out.append(np.asarray(c.get_offsets(), dtype=float)[:, axis])
        elif isinstance(c, LineCollection):
            for seg in c.get_segments():
                take(c, seg)
        elif isinstance(c, PolyCollection):
            for path in c.get_paths():
                take(c, path.vertices)
    for p in ax.patches:
        if isinstance(p, Rectangle):
            take(p, [(p.get_x(), p.get_y()), (p.get_x() + p.get_width(), p.get_y() + p.get_height())])
    v = np.concatenate(out) if out else np.array([])
    return v[np.isfinite(v)]


def test_there_are_nine_figure_modules():
    assert MODULES == ["f1_pass_vs_fresh", "f2_pass_at_k", "f3_diversity", "f4_offpolicy", "f5_cost",
                       "f6_stability", "f7_exact", "f8_ablations", "f9_frontier"]


@pytest.mark.parametrize("name", MODULES)
def test_every_panel_has_data_within_limits_that_fit_it(figures, real, name):
    fig = figures[name]
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes(name, real), f"{name}: {len(fig.axes)} axes"
    for i, ax in enumerate(fig.axes):
        where = f"{name} panel {i} ({ax.get_title()!r})"
        assert not any(t.get_text().startswith("no data") for t in ax.texts), f"{where}: drew no data"
        for axis, (lim, scale) in enumerate([(ax.get_xlim(), ax.get_xscale()), (ax.get_ylim(), ax.get_yscale())]):
            v = _values(ax, axis)
            assert len(v), f"{where}: nothing drawn on the {'xy'[axis]} axis"
            lo, hi = sorted(lim)
            span = hi - lo
            assert v.min() >= lo - 1e-9 * span and v.max() <= hi + 1e-9 * span, \
                f"{where}: {'xy'[axis]} data [{v.min()}, {v.max()}] outside the limits [{lo}, {hi}]"
            if scale == "log":
                v, lo, hi = np.log10(v[v > 0]), np.log10(lo), np.log10(hi)
            assert (v.max() - v.min()) >= FIT * (hi - lo), \
                f"{where}: {'xy'[axis]} data span {v.max() - v.min():.3g} of an axis range {hi - lo:.3g}"


def test_f1_has_one_training_panel_per_main_algorithm(figures, real):
    names = common.labels(real)
    main = common.entries(real, "main")
    titles = [ax.get_title() for ax in figures["f1_pass_vs_fresh"].axes[:len(main)]]
    assert titles == [names[s] for s in main]
    for ax, sr in zip(figures["f1_pass_vs_fresh"].axes[:len(main)], main):
        bold = [line for line in ax.lines if line.get_label() == names[sr]]
        assert len(bold) == 1 and len(ax.collections) == 1  # its own band only: no other band buries it


def test_f2_panels_do_not_share_a_y_range(figures):
    test, ood = figures["f2_pass_at_k"].axes[-4], figures["f2_pass_at_k"].axes[-2]  # the exact row: every split
    assert ood.get_ylim()[1] < 0.5 * test.get_ylim()[1]  # OOD pass@k is far lower: its own range


def test_f5_bars_sit_on_linear_axes_from_zero(figures):
    fig = figures["f5_cost"]
    bar_axes = [ax for ax in fig.axes if any(isinstance(p, Rectangle) for p in ax.patches)]
    assert len(bar_axes) == 4
    for ax in bar_axes:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0, ax.get_title()
        assert all(p.get_y() == 0 for p in ax.patches), ax.get_title()
    assert all(ax.get_yscale() == "linear" for ax in fig.axes)


ABLATED = {  # off-policy run -> (ablation entry, family, reference) it stands in for (names no study entry has)
    "spo_expert": ("spo_loss_x", "loss", "spo"), "spo_random": ("spo_steps_x", "steps", "spo"),
    "spo_decoding": ("spo_half_online_is_x", "is", "spo_half_online")}


@pytest.fixture(scope="module")
def ablated(real) -> dict[str, pd.DataFrame]:
    """The committed export with three off-policy runs relabelled as SPO ablations: F8's test input.
    The study's own ablation group is dropped; the relabelled runs (under names no study entry has) are
    real single-seed SPO runs in families with other references, which is what F8's layout logic needs."""
    out = {k: v[v.group != "ablation"].copy() if "group" in v else v.copy() for k, v in real.items()}
    for src, (name, fam, ref) in ABLATED.items():
        for t in ("runs", "curves", "eval", "eval_per_problem"):
            df, m = out[t], out[t].study_run == src
            df.loc[m, ["study_run", "group"]] = [name, "ablation"]
            for col, val in (("family", fam), ("reference", ref), ("label", f"SPO {fam} ablation")):
                if col in df:
                    df[col] = df[col].astype(object)
                    df.loc[m, col] = val
            for col in ("run_name", "model"):
                if col in df:
                    df.loc[m, col] = df.loc[m, col].str.replace(src, name, regex=False)
            out[t] = df[~(df.study_run.eq(name) & df.seed.ne(0))]  # single-seed, as the ablations study runs them
    return out


def test_f8_says_how_many_seeds_each_point_has(ablated):
    real = ablated
    fig = importlib.import_module("f8_ablations").plot(real)
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    seeds = real["runs"].groupby("label").seed.nunique()
    assert labels and all(re.search(r"\((\d+) seeds?\)$", lab) for lab in labels), labels
    for lab in labels:
        name = lab.split("\n")[0].removesuffix(" (ref)")
        if name in seeds:
            n = int(re.search(r"\((\d+) seeds?\)$", lab).group(1))
            assert n == seeds[name], lab
    assert "(1 seed)" in " ".join(labels) and "(3 seeds)" in " ".join(labels)
    assert "seed" in fig.get_suptitle()
    hollow = [ln for ln in fig.axes[0].lines if ln.get_markerfacecolor() == "white"]  # single-seed runs
    assert len(hollow) == (real["runs"].group == "ablation").sum()


def test_f8_takes_each_familys_reference_from_runs_csv(ablated):
    real = ablated
    f8 = importlib.import_module("f8_ablations")
    evaluated = set(real["eval_per_problem"].study_run)
    fams = {fam: (studies, ref) for fam, studies, ref in f8.families(real["runs"], evaluated)}
    assert fams["is"][1] == "spo_half_online" and fams["loss"][1] == "spo"  # as conf/study/default.yaml says
    runs = real["runs"].assign(reference=lambda r: r.reference.mask(r.study_run == "spo_steps_x", "spo_half_online"))
    fams = {(fam, ref): studies for fam, studies, ref in f8.families(runs, evaluated)}
    assert fams[("steps", "spo_half_online")] == ["spo_half_online", "spo_steps_x"]
    with pytest.raises(SystemExit, match="reference"):
        f8.plot({**real, "runs": real["runs"].drop(columns="reference")})


def test_f4_draws_the_reference_of_the_offpolicy_runs(figures, real):
    names = common.labels(real)
    labels = {ln.get_label() for ax in figures["f4_offpolicy"].axes for ln in ax.lines}
    assert f"{names['spo']} (reference)" in labels


def test_f9_draws_one_band_per_algorithm_against_kl(figures, real):
    fig, names = figures["f9_frontier"], common.labels(real)
    f9 = importlib.import_module("f9_frontier")
    c = real["curves"]
    final = c[c.step == c.step.max()].groupby("study_run")[common.KL].mean()
    main = [s for s in common.present(real["runs"], common.entries(real, "main"), "main")
            if final[s] <= f9.DIVERGED * final[common.present(real["runs"], common.entries(real, "main"), "main")].median()]
    diverged = set(common.present(real["runs"], common.entries(real, "main"), "main")) - set(main)  # named, not drawn
    assert all(any(names[s] in t.get_text() for t in fig.axes[0].texts) for s in diverged)
    for ax in fig.axes[1:]:
        bold = [ln.get_label() for ln in ax.lines if ln.get_label() in {names[s] for s in main}]
        assert sorted(bold) == sorted(names[s] for s in main), ax.get_title()  # one mean line each, no seed lines
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == len(main)
        assert "KL" in ax.get_xlabel() and any(t.get_text().startswith("at κ* = ") for t in ax.texts)
    assert "move less" in fig.get_suptitle()


def test_f9_prints_the_kappa_and_difference_the_report_prints(figures, real):
    """κ* is SPO's and PPO's (not lowered by half-online, which moves least), and each panel's SPO − PPO
    is the report's matched-KL number, to the digit (both from common.matched_kl)."""
    import report

    fig, f9 = figures["f9_frontier"], importlib.import_module("f9_frontier")
    s = report.Study(real)
    spo, ppo = s.e["spo_online"], s.e["ppo"]
    for ax, (metric, _) in zip(fig.axes[1:], f9.PANELS):
        m = report.matched(s, spo, ppo, metric.split("/", 1)[1], 0.02)
        d, lo, hi = m.at_kl
        assert f"at κ* = {m.kl:.3g}: SPO − PPO {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" in [t.get_text() for t in ax.texts]
        assert m.kl == common.kl_reach(real["curves"], [spo, ppo], metric) > common.kl_reach(
            real["curves"], [spo, ppo, s.e["spo_half_online"]], metric)


def _small_export(real: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The real export cut down to a smoke-sized study: seed 0 of SPO, PPO and GRPO (and SFT),
    no off-policy runs, no ablations, no benchmark."""
    keep = {"sft", "spo", "ppo", "grpo"}
    out = {}
    for name, t in real.items():
        if "study_run" in t and "seed" in t:  # study.csv keeps every entry: a smoke study has them all
            t = t[t.study_run.isin(keep) & (t.seed == 0)]
        if name == "jobs":
            t = t[t.rule != "rl"]
        if name != "bench":
            out[name] = t
    return out


def test_every_figure_draws_a_smaller_export_through_its_command_line(real, tmp_path):
    small = tmp_path / "export"
    small.mkdir()
    for name, t in _small_export(real).items():
        t.to_csv(small / f"{name}.csv", index=False)

    def run(name):
        out = tmp_path / f"{name}.png"
        p = subprocess.run([sys.executable, str(ROOT / "analysis" / f"{name}.py"), "--data", str(small),
                            "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        return name, out, p

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the scripts are single-threaded
        results = list(pool.map(run, MODULES))
    for name, out, p in results:
        assert p.returncode == 0, f"{name}:\n{p.stderr[-3000:]}"
        img = matplotlib.image.imread(out)
        assert img.ndim == 3 and min(img.shape[:2]) > 200 and img[..., :3].std() > 0.01, f"{name}: blank image"


def test_the_small_export_shows_what_is_missing(real):
    f5 = importlib.import_module("f5_cost").plot(_small_export(real))
    missing = [ax for ax in f5.axes if any(t.get_text().startswith("no data") for t in ax.texts)]
    assert len(missing) == 4  # the four benchmark panels
    f8 = importlib.import_module("f8_ablations").plot(_small_export(real))
    assert all(any(t.get_text().startswith("no data") for t in ax.texts) for ax in f8.axes)


# ---------------------------------------------------------------- analysis/stats.py
def _naive(m: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """The two-level bootstrap as a plain loop, drawing in the order stats.replicates documents:
    every replicate's seeds first (all of them), then every replicate's problems."""
    S, P = m.shape
    seeds, problems = rng.integers(0, S, size=(n_boot, S)), rng.integers(0, P, size=(n_boot, P))
    return np.array([m[seeds[b]][:, problems[b]].mean() for b in range(n_boot)])


def test_interval_is_the_percentile_two_level_bootstrap():
    m = np.random.default_rng(1).uniform(size=(3, 40))
    point, lo, hi = stats.interval(m, np.random.default_rng(2), n_boot=500)
    boots = _naive(m, np.random.default_rng(2), 500)
    assert point == pytest.approx(m.mean())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])))


def test_interval_single_seed_spans_about_four_standard_errors():
    m = np.random.default_rng(1).uniform(0, 1, size=(1, 25))
    point, lo, hi = stats.interval(m, np.random.default_rng(2), n_boot=1000)
    se = m.std(ddof=1) / np.sqrt(m.shape[1])  # one seed: only problems are resampled, ±1.96 SE
    assert lo <= point <= hi and 2.5 * se < hi - lo < 5.5 * se


def test_diff_interval_pairs_the_problems():
    a = np.random.default_rng(3).uniform(size=(1, 60))
    point, lo, hi = stats.diff_interval(a, a + 0.1, np.random.default_rng(4), n_boot=500)
    # the same problems in both replicates: every replicate's difference is exactly −0.1. Resampling
    # the problems of each run independently would give an interval about ±0.1 wide.
    assert point == pytest.approx(-0.1) and lo == pytest.approx(-0.1) and hi == pytest.approx(-0.1)
    b = np.random.default_rng(5).uniform(size=(3, 60)) + 0.2
    point, lo, hi = stats.diff_interval(a, b, np.random.default_rng(6), n_boot=1000)
    assert point == pytest.approx(a.mean() - b.mean()) and lo < point < hi < 0
    with pytest.raises(ValueError, match="different problem sets"):
        stats.diff_interval(a, b[:, :50], np.random.default_rng(0))


def test_intervals_is_interval_per_statistic_on_one_draw():
    ms = np.random.default_rng(5).uniform(size=(4, 3, 30))  # K × seeds × problems
    point, lo, hi = stats.intervals(ms, np.random.default_rng(7), n_boot=700)
    for k in range(4):  # every k sees the same seeds and problems: exactly interval() of that k
        assert (point[k], lo[k], hi[k]) == pytest.approx(stats.interval(ms[k], np.random.default_rng(7), n_boot=700))
    d, dlo, dhi = stats.diff_intervals(ms, ms[::-1], np.random.default_rng(8), n_boot=300)
    assert d == pytest.approx(-d[::-1]) and np.all(dlo <= d) and np.all(d <= dhi)


def test_seed_band_resamples_seeds_only():
    v = np.array([[0.0, 1.0, np.nan], [2.0, 3.0, 4.0], [4.0, 5.0, np.nan]])  # seeds × steps
    mean, lo, hi = stats.seed_band(v, np.random.default_rng(0), n_boot=400)
    assert mean == pytest.approx([2.0, 3.0, 4.0])
    assert lo[0] >= 0.0 and hi[0] <= 4.0 and lo[0] < 2.0 < hi[0]
    assert lo[2] == hi[2] == 4.0  # only one seed logged the last step
    one = stats.seed_band(v[:1, :2], np.random.default_rng(0))
    assert all(np.array_equal(x, [0.0, 1.0]) for x in one)


def test_stats_docstring_examples_run():
    result = doctest.testmod(stats)
    assert result.attempted >= 5 and result.failed == 0


def test_passk_value_against_the_closed_form():
    g = pd.DataFrame({"n": [20, 20, 20], "n_correct": [0, 3, 20]})
    want = [1 - comb(20 - c, 5) / comb(20, 5) for c in g.n_correct]
    assert common.passk_value(5)(g) == pytest.approx(want)
