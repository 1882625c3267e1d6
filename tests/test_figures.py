"""The figure scripts of analysis/ on a small synthetic export (the seven CSVs of analysis/export.py),
and the interval helpers of analysis/common.py against independent calculations.

Two exports: a full one (3 seeds, every group, bench.csv) and a smoke-like one (1 seed, three main
runs, no off-policy or ablation runs, no bench.csv). Every script must exit 0 on both and write a
real PNG.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from math import comb
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analysis"))
import common  # noqa: E402

SCRIPTS = sorted((ROOT / "analysis").glob("f[0-9]_*.py"))
STEPS, EVAL_EVERY, N_PROBLEMS, N = 30, 10, 20, 20

# study_run -> group, label, family, algo, data_mix, beta, loss, steps_per_batch, q0_estimator, is_weights,
# and "skill" (how fast the synthetic run improves)
_S = ("squared", 1, "mc", False)  # SPO's defaults of loss, steps_per_batch, q0_estimator, is_weights
STUDY = {
    "spo": ("main", "SPO online", "", "spo", "online", 0.1, *_S, 0.8),
    "spo_half_online": ("main", "SPO half-online", "", "spo", "half_online", 0.1, *_S, 0.7),
    "ppo": ("main", "PPO", "", "ppo", "online", 0.1, "", 1, "", False, 0.6),
    "grpo": ("main", "GRPO", "", "grpo", "online", 0.1, "", 1, "", False, 0.65),
    "rloo": ("main", "RLOO", "", "rloo", "online", 0.1, "", 1, "", False, 0.55),
    "spo_expert": ("offpolicy", "SPO + expert", "", "spo", "expert", 0.1, *_S, 0.9),
    "spo_random": ("offpolicy", "SPO + random", "", "spo", "random", 0.1, *_S, 0.3),
    "spo_offline_only": ("offpolicy", "SPO offline only", "", "spo", "offline_only", 0.1, *_S, 0.2),
    "spo_bce": ("ablation", "SPO BCE loss", "loss", "spo", "online", 0.1, "bce", 1, "mc", False, 0.7),
    "spo_beta003": ("ablation", "SPO β=0.03", "beta", "spo", "online", 0.03, *_S, 0.9),
    "spo_beta03": ("ablation", "SPO β=0.3", "beta", "spo", "online", 0.3, *_S, 0.5),
    "spo_steps4": ("ablation", "SPO 4 steps/batch", "steps", "spo", "online", 0.1, "squared", 4, "mc", False,
                   0.85),
    "spo_q0_shrunk": ("ablation", "SPO shrunk Q̂0", "q0", "spo", "online", 0.1, "squared", 1, "shrunk", False,
                      0.8),
    "spo_half_online_is": ("ablation", "SPO half-online + IS", "is", "spo", "half_online", 0.1, "squared", 1,
                           "mc", True, 0.75),
}
SMOKE = ["spo", "ppo", "grpo"]
VAL = ["val/pass@1", "val/pass@10", "val/distinct_correct_programs", "val/functional_classes_correct",
       "val/entropy_per_token", "val/kl_ref", "val/distinct_programs"]


def _runs_and_curves(rng, study_runs, seeds):
    runs, curves = [], []
    for sr in study_runs:
        group, label, family, algo, mix, beta, loss, spb, q0, isw, skill = STUDY[sr]
        fresh = {"online": 64, "half_online": 32, "offline_only": 0}.get(mix, 48)  # fresh samples per update
        for seed in seeds:
            name, step_s = f"{sr}-s{seed}", (2.5 if algo == "ppo" else 1.2) * rng.uniform(0.9, 1.1)
            runs.append(dict(run_name=name, study_run=sr, group=group, label=label, family=family, algo=algo,
                             data_mix=mix, seed=seed, beta=beta, loss=loss, steps_per_batch=spb,
                             q0_estimator=q0, is_weights=isw, lr=1e-5, updates=STEPS,
                             train_wall_s=STEPS * step_s, job_s=STEPS * step_s + 30, job_max_rss_mb=900.0,
                             fresh_samples=fresh * STEPS))
            for step in range(STEPS + 1):
                t = step / STEPS
                row = {"run_name": name, "study_run": sr, "group": group, "label": label, "algo": algo,
                       "data_mix": mix, "seed": seed, "step": step, "perf/wall_s": step * step_s,
                       "data/fresh_samples": step * fresh}
                if step > 0:
                    row.update({"rollout/reward": 0.2 + 0.6 * skill * t + rng.normal(0, 0.05),
                                "rollout/success": 0.2 + 0.6 * skill * t,
                                "rollout/entropy_per_token": 1 - 0.5 * t,
                                "rollout/kl_behaviour_ref": 2 * t, "opt/grad_norm": abs(rng.normal(1, 0.3)),
                                "perf/step_s": step_s * rng.uniform(0.8, 1.2), "perf/update_s": step_s / 2,
                                "data/frac_fresh": fresh / 64, "data/frac_online": fresh / 64})
                if step % EVAL_EVERY == 0 or step == STEPS:
                    p1 = 0.25 + 0.4 * skill * t + rng.normal(0, 0.02)
                    noise = rng.normal(0, 0.1, size=4)
                    row.update(dict(zip(VAL, [p1, min(1.0, p1 + 0.3), 3 + 2 * skill * t + noise[0],
                                              2 + skill * t + noise[1], 1 - 0.4 * t + noise[2] / 5,
                                              (8 - 4 * skill) * t + abs(noise[3]) * t, 12 - 4 * t])))
                curves.append(row)
    return pd.DataFrame(runs), pd.DataFrame(curves)


def _per_problem(rng, study_runs, seeds):
    difficulty = {"test": rng.normal(0, 1.5, N_PROBLEMS), "ood": rng.normal(-1, 1.5, N_PROBLEMS)}
    rows = []
    for sr in ["sft", *study_runs]:
        group, skill = ("sft", 0.35) if sr == "sft" else (STUDY[sr][0], STUDY[sr][-1])
        seeds_sr = [None] if sr == "sft" else seeds
        for split in ("test", "ood"):
            for protocol in ("policy", "paper") if sr in ("sft", "spo", "ppo") else ("policy",):
                for seed in seeds_sr:  # the SFT policy has no seed: an empty cell, as in the export
                    z = 3 * skill - 1.5 + difficulty[split] + rng.normal(0, 0.3, N_PROBLEMS)
                    correct = rng.binomial(N, 1 / (1 + np.exp(-z)))
                    for j, c in enumerate(correct):
                        rows.append(dict(model="sft" if seed is None else f"{sr}-s{seed}", study_run=sr,
                                         group=group, seed=seed, split=split, protocol=protocol,
                                         problem_id=f"{split}-{j:03d}", n=N, n_correct=c,
                                         distinct_correct_programs=min(c, rng.integers(1, 6)),
                                         functional_classes_correct=min(c, rng.integers(1, 3)),
                                         entropy_per_token=rng.uniform(0.3, 1.0), kl_ref=rng.uniform(0, 5)))
    pp = pd.DataFrame(rows)
    # eval.csv: the per-model means of eval_per_problem, with placeholder intervals (no figure reads them)
    keys = ["model", "study_run", "group", "split", "protocol"]
    ev = pp.assign(**{"pass@1": pp.n_correct / pp.n}).groupby(keys, dropna=False).mean(numeric_only=True)
    ev = ev.reset_index()
    for m in ("pass@1", "distinct_correct_programs", "kl_ref"):
        ev[m + "_ci_lo"], ev[m + "_ci_hi"] = ev[m] - 0.05, ev[m] + 0.05
    return pp, ev


def _exact():
    rows = []
    for run, tau, floor in [("spo_squared", 20, 1e-4), ("spo_bce", 25, 0.3), ("ppo", 40, 0.05)]:
        for s in range(0, 201, 5):
            decay = np.exp(-s / tau)
            rows.append({"run": run, "step": s, "exact/kl_to_optimum": 2 * decay + floor,
                         "exact/kl_conditioned_to_policy": decay, "exact/kl_to_ref": 2 - np.exp(-s / 50),
                         "exact/entropy": 1 + np.exp(-s / 50), "exact/success_prob": 0.9 - 0.6 * decay})
    return pd.DataFrame(rows)


def _bench():
    rows = []
    for size, scale in (("s", 1.0), ("m", 3.0)):
        # TRL's trainer has no separate update time
        for v, step, update, state in [("spo", 0.4, 0.23, 7), ("spo_half_online", 0.37, 0.26, 7),
                                       ("ppo", 1.1, 0.93, 12), ("grpo", 0.39, 0.22, 7),
                                       ("rloo", 0.39, 0.22, 7), ("trl_grpo", 0.9, None, 9)]:
            rows.append(dict(variant=v, size=size, device="cpu", step_s=step * scale, sample_s=0.08 * scale,
                             update_s=None if update is None else update * scale,
                             train_state_MB=state * scale,
                             peak_activations_MB=None if v == "trl_grpo" else 148 * scale,
                             peak_rss_above_baseline_MB=260 * scale))
    b = pd.DataFrame(rows)
    ppo = b[b.variant == "ppo"].set_index("size")
    for c in ("step_s", "update_s", "train_state_MB"):
        b[c + "_vs_ppo"] = b[c] / b["size"].map(ppo[c])
    return b


def write_export(folder: Path, study_runs: list[str], seeds: list[int], bench: bool) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    runs, curves = _runs_and_curves(rng, study_runs, seeds)
    pp, ev = _per_problem(rng, study_runs, seeds)
    jobs = pd.DataFrame([dict(rule="train", name=r, s=60.0, max_rss_mb=900.0, end_time="2025-01-01T00:00:00")
                         for r in runs.run_name])
    tables = {"runs": runs, "curves": curves, "eval": ev, "eval_per_problem": pp, "exact": _exact(),
              "jobs": jobs}
    if bench:
        tables["bench"] = _bench()
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"full": write_export(root / "full", list(STUDY), [0, 1, 2], bench=True),
            "smoke": write_export(root / "smoke", SMOKE, [0], bench=False)}


def test_every_figure_script_writes_a_png(exports, tmp_path):
    assert len(SCRIPTS) == 9, [s.name for s in SCRIPTS]

    def run(job):
        script, variant = job
        out = tmp_path / variant / f"{script.stem}.png"
        p = subprocess.run([sys.executable, str(script), "--data", str(exports[variant]), "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        return script, variant, out, p

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the scripts are single-threaded
        results = list(pool.map(run, [(s, v) for s in SCRIPTS for v in exports]))
    for script, variant, out, p in results:
        assert p.returncode == 0, f"{script.name} on the {variant} export:\n{p.stderr[-3000:]}"
        assert out.exists() and out.stat().st_size > 10_000, f"{script.name} ({variant}): no or tiny PNG"
        img = matplotlib.image.imread(out)
        assert img.ndim == 3 and img.shape[2] in (3, 4) and min(img.shape[:2]) > 200
        assert img[..., :3].std() > 0.01, f"{script.name} ({variant}): blank image"


def test_interval_single_seed_is_the_problem_mean():
    m = np.random.default_rng(1).uniform(0, 1, size=(1, 25))
    point, lo, hi = common.interval(m, np.random.default_rng(2), n_boot=1000)
    assert point == pytest.approx(m.mean())
    assert lo <= point <= hi
    # one seed: only problems are resampled, so the 95 % interval spans about ±1.96 standard errors
    se = m.std(ddof=1) / np.sqrt(m.shape[1])
    assert 2.5 * se < hi - lo < 5.5 * se


def test_diff_interval_of_a_matrix_with_itself_is_centred_on_zero():
    m = np.random.default_rng(3).uniform(size=(3, 20))
    point, lo, hi = common.diff_interval(m, m, np.random.default_rng(4), n_boot=500)
    assert point == 0.0 and lo <= 0.0 <= hi


def test_intervals_matches_interval_per_statistic():
    ms = np.random.default_rng(5).uniform(size=(4, 3, 30))  # K × seeds × problems
    point, lo, hi = common.intervals(ms, np.random.default_rng(6), n_boot=3000)
    for k in range(4):
        p, lo_k, hi_k = common.interval(ms[k], np.random.default_rng(7), n_boot=3000)
        assert point[k] == pytest.approx(p)
        assert lo[k] == pytest.approx(lo_k, abs=0.02) and hi[k] == pytest.approx(hi_k, abs=0.02)


def test_passk_value_against_the_closed_form():
    g = pd.DataFrame({"n": [20, 20, 20], "n_correct": [0, 3, 20]})
    want = [1 - comb(20 - c, 5) / comb(20, 5) for c in g.n_correct]
    assert common.passk_value(5)(g) == pytest.approx(want)
