"""Export the study's runs from MLflow into tidy CSVs (docs/design.md §7): the only input of the figures
and of the claims report.

    python analysis/export.py --scale default --study default --out results/data [--bench results/bench/default/bench_cpu.csv]

Reads the MLflow database and experiment of the scale's tracking config (conf/tracking: by default
experiment ``spolab-<scale>`` of ``sqlite:///results/mlflow.db``). For every run of the
study matrix (conf/study/<study>.yaml) it takes the latest finished MLflow run of that name;
a run of the matrix missing from MLflow is an error, never silently skipped. Writes:

- ``runs.csv``: one row per RL run (study entry, group, family, label, the entry it is judged
  against (``reference``, from spolab.study), config, wall times);
- ``curves.csv``: one row per (RL run, logged update), one column per metric;
- ``eval.csv``: final held-out metrics per (model, split, protocol), with 95 % intervals;
- ``eval_per_problem.csv``: per-problem values behind them (:data:`PER_PROBLEM`: n, n_correct,
  diversity among correct samples, per solved problem and among all samples, entropy, KL), each
  problem's behaviour class (:data:`CLASS`, from the data split's problem records: the ood split's
  problems come from a few held-out classes, and the report's ood intervals resample them), then
  :data:`EXACT_PER_PROBLEM`, the exact success mass, entropy and KL among correct programs, enumeration
  size and coverage, where the evaluations computed them, and :data:`REWARD_PER_PROBLEM`, the mean reward;
- ``exact.csv``: the exact testbed's curves; ``bench.csv``: the per-update benchmark;
- ``jobs.csv``: every Snakemake job of this study: wall time and peak RSS (its ``benchmark:`` file). The
  shared jobs (data, SFT, Q̂0, sources, exact, bench) and this study's own RL runs and evaluations;
  another study's runs in the same folder (the lr sweep's) are left out;
- ``study.csv``: the study's entries as spolab.study read them (:func:`study_table`): name, label,
  colour, order, role, group, family, reference, seeds, protocols, needs and overrides;
- ``setup.csv``: key, value (:func:`setup_table`): the scale's task, model and SFT setting, each
  evaluation protocol's settings as the evaluations recorded them (their eval.json), and Q̂0's
  samples (``q0.n_ref`` per rl prompt, ``q0.n_prompts``) as its MLflow run recorded them.

The analysis reads entries, labels, colours and settings from these files, never from conf/: a
config edited after the study does not change what the report says about its runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one download per evaluation: no bars
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from spolab.atomic import swap_dir  # noqa: E402
from spolab.paths import paths  # noqa: E402
from spolab.study import entries, load_study  # noqa: E402
from spolab.tasks.io import load_split  # noqa: E402
from spolab.tracking import metric_name, tracking_settings, verify_mirror  # noqa: E402

CONFIG_COLUMNS = {  # runs.csv column -> flattened config param logged by spolab.tracking
    "algo": "algo.name", "data_mix": "data_mix.name", "beta": "algo.beta", "loss": "algo.loss",
    "steps_per_batch": "algo.steps_per_batch", "q0_estimator": "algo.q0_estimator", "is_weights": "algo.is_weights",
    "lr": "algo.lr", "updates": "updates", "batch_size": "batch_size",
}
PER_PROBLEM = ["n", "n_correct", "distinct_correct_programs", "functional_classes_correct", "entropy_per_token",
               "kl_ref", "distinct_correct_per_solved", "functional_classes_per_solved",
               "effective_programs"]  # per_problem.json keys (spolab.eval.generate); per-solved: empty when unsolved
CLASS = "class_id"  # eval_per_problem: the problem's behaviour class (empty for a task without classes)
EXACT_PER_PROBLEM = ["exact/success_mass", "exact/entropy_correct", "exact/kl_ref_correct", "exact/n_programs",
                     "exact/coverage"]  # spolab.eval.exact_mass, on the policy protocol's rows of a task that
# enumerates its solutions (empty elsewhere); exact pass@k = 1 − (1 − success_mass)^k for any k. Written after
# PER_PROBLEM, and only when some evaluation has them (an export of evaluations from before them has none)
REWARD_PER_PROBLEM = ["mean_reward"]  # the task's reward per sample, averaged per problem (partial credit under
# task.reward=fraction): last, and only where the evaluations logged it (the committed default study's predate it)


def latest_finished(client: MlflowClient, exp_id: str, filter_string: str) -> dict:
    """run_name -> the latest FINISHED run among those matching the filter."""
    out = {}
    for r in client.search_runs([exp_id], filter_string=filter_string, max_results=50000,
                                order_by=["attributes.start_time ASC"]):
        if r.info.status == "FINISHED":
            out[r.info.run_name] = r
    return out


def check_mirror(client: MlflowClient, runs: list) -> None:
    """Every exported run's MLflow metrics equal its run folder's metrics.jsonl, point for point
    (spolab.tracking.verify_mirror); a run whose folder is gone is taken from MLflow as it is."""
    bad = {}
    for r in runs:
        folder = Path(r.data.tags.get("run_dir", ""))
        if (folder / "metrics.jsonl").exists():
            diff = verify_mirror(folder, client, r.info.run_id)
            if diff:
                bad[r.info.run_name] = f"{len(diff)} points differ, e.g. {diff[0]}"
    if bad:
        raise SystemExit("MLflow does not mirror these runs' metrics.jsonl (replay them with "
                         f"`python -m spolab.tracking sync <run_dir>`): {bad}")


def history(client: MlflowClient, run) -> pd.DataFrame:
    """Every logged metric of a run, wide: one row per step."""
    cols = {}
    for key in run.data.metrics:
        h = client.get_metric_history(run.info.run_id, key)
        cols[metric_name(key)] = pd.Series({m.step: m.value for m in h})
    df = pd.DataFrame(cols).sort_index()
    df.index.name = "step"
    return df.reset_index()


def study_rl_runs(scale: str, study: str):
    """(client, experiment, specs, run name -> latest finished RL run) of a study: every run of the
    matrix must be in MLflow, never silently skipped (also analysis/lr_sweep.py's reader)."""
    specs = load_study(study, scale)  # spolab.study: the one reader of conf/study/<study>.yaml
    track = tracking_settings(scale)  # conf/tracking: the database and experiment the runs wrote to
    client = MlflowClient(track["uri"])
    exp = client.get_experiment_by_name(track["experiment"])
    if exp is None:
        raise SystemExit(f"no MLflow experiment {track['experiment']} in {track['uri']}: run the pipeline first")
    rl = latest_finished(client, exp.experiment_id, "tags.stage = 'rl'")
    missing = [sp.name for sp in specs if sp.name not in rl]
    if missing:
        raise SystemExit(f"study runs missing from MLflow (not finished?): {missing}")
    return client, exp, specs, rl


def export(scale: str, study: str, out: Path, bench: Path | None) -> dict[str, pd.DataFrame]:
    # ---- RL runs: config, summary and curves
    client, exp, specs, rl = study_rl_runs(scale, study)
    runs_rows, curves = [], []
    jobs = study_jobs(read_jobs(Path("results") / scale / "benchmarks"), [sp.name for sp in specs])
    for sp in specs:
        r = rl[sp.name]
        meta = {"run_name": sp.name, "study_run": sp.run, "group": sp.group, "label": sp.label,
                "family": sp.family, "reference": sp.reference or "", "seed": sp.seed}
        p = r.data.params
        row = {**meta, **{c: p.get(k) for c, k in CONFIG_COLUMNS.items()}}
        row["algo"] = row["algo"] or r.data.tags.get("algo")
        job = jobs[(jobs.rule == "rl") & (jobs.name == sp.name)]  # benchmarks/rl/<run name>.tsv (rl.smk)
        row.update({"train_wall_s": r.data.metrics.get("perf/wall_s"),
                    "fresh_samples": r.data.metrics.get("data/fresh_samples"),
                    "opt_steps": r.data.metrics.get("opt/steps"),  # policy optimiser steps (PPO: epochs x minibatches)
                    "job_s": float(job.s.iloc[0]) if len(job) else None,
                    "job_max_rss_mb": float(job.max_rss_mb.iloc[0]) if len(job) else None,
                    "mlflow_run_id": r.info.run_id})
        runs_rows.append(row)
        h = history(client, r)
        for k in ("algo", "data_mix"):
            meta[k] = row[k]
        curves.append(h.assign(**meta))
    runs_df = pd.DataFrame(runs_rows)
    curves_df = pd.concat(curves, ignore_index=True)
    lead = ["run_name", "study_run", "group", "label", "algo", "data_mix", "seed", "step"]
    curves_df = curves_df[lead + sorted(c for c in curves_df.columns if c not in lead)]

    # ---- held-out evaluation of SFT and every run (metrics from MLflow, per-problem from its artifact)
    ev = latest_finished(client, exp.experiment_id, "tags.stage = 'eval'")
    meta_of = {r["run_name"]: r for r in runs_rows}
    eval_rows, pp_rows, protocols = [], [], {}
    for model in ["sft", *[sp.name for sp in specs]]:
        found = [n for n in ev if n.startswith(f"eval-{model}-")]
        if not found:
            raise SystemExit(f"no finished evaluation of {model} in MLflow")
        m = meta_of.get(model, {"study_run": "sft", "group": "sft", "label": "SFT (π_ref)", "algo": "sft",
                                "data_mix": "", "seed": 0})
        for run_name in sorted(found):
            r = ev[run_name]
            split, protocol = r.data.tags["split"], r.data.tags["protocol"]
            base = {"model": model, "study_run": m["study_run"], "group": m["group"], "label": m["label"],
                    "algo": m["algo"], "data_mix": m["data_mix"], "seed": m["seed"], "split": split,
                    "protocol": protocol}
            metrics = {metric_name(k.split("/", 1)[1]): v for k, v in r.data.metrics.items()
                       if k.startswith(f"{split}/")}
            eval_rows.append({**base, **metrics})
            used = json.loads(Path(client.download_artifacts(r.info.run_id, "eval.json")).read_text())["protocol"]
            if protocols.setdefault(protocol, used) != used:
                raise SystemExit(f"evaluations of protocol {protocol!r} ran with different settings: "
                                 f"{protocols[protocol]} and {used} ({run_name}); rerun them with one")
            local = client.download_artifacts(r.info.run_id, "per_problem.json")
            pp = json.loads(Path(local).read_text())
            df = pd.DataFrame({"problem_id": pp["problem_id"],
                               **{k: pp[k] for k in PER_PROBLEM + EXACT_PER_PROBLEM + REWARD_PER_PROBLEM if k in pp}})
            pp_rows.append(df.assign(**{k: base[k] for k in ("model", "study_run", "group", "seed", "split",
                                                              "protocol")}))
    eval_df = pd.DataFrame(eval_rows)
    pp_df = pd.concat(pp_rows, ignore_index=True)
    classes = problem_classes(Path(paths(scale).data), sorted(pp_df.split.unique()))
    pp_df[CLASS] = pd.array([classes.get((sp, pid)) for sp, pid in zip(pp_df.split, pp_df.problem_id)], dtype="Int64")
    pp_df = pp_df[["model", "study_run", "group", "seed", "split", "protocol", "problem_id", CLASS,
                   *[c for c in PER_PROBLEM + EXACT_PER_PROBLEM + REWARD_PER_PROBLEM if c in pp_df.columns]]]
    for c in ("n", "n_correct"):
        pp_df[c] = pp_df[c].round().astype(int)

    # ---- exact testbed, benchmark, jobs
    exact = latest_finished(client, exp.experiment_id, "tags.stage = 'exact'")
    if not exact:
        raise SystemExit("no finished exact-testbed runs in MLflow")
    exact_df = pd.concat([history(client, r).assign(run=r.data.tags["algo"], beta=float(r.data.params["exact.beta"]))
                          for n, r in sorted(exact.items())], ignore_index=True)
    exact_df = exact_df[["run", "beta", "step", *sorted(c for c in exact_df.columns if c not in ("run", "beta", "step"))]]
    check_mirror(client, [rl[sp.name] for sp in specs] + list(ev.values()) + list(exact.values()))
    bench_df = pd.read_csv(bench) if bench and Path(bench).exists() else pd.DataFrame()

    q0 = latest_finished(client, exp.experiment_id, "tags.stage = 'q0'")
    q0_run = list(q0.values())[-1] if q0 else None  # one Q̂0 per SFT model: the latest finished
    q0_info = ({"n_ref": q0_run.data.params.get("n_ref"), "n_prompts": q0_run.data.metrics.get("q0/n_prompts")}
               if q0_run else None)
    tables = {"runs": runs_df, "curves": curves_df, "eval": eval_df, "eval_per_problem": pp_df,
              "exact": exact_df, "bench": bench_df, "jobs": jobs, "study": study_table(specs),
              "setup": setup_table(scale, sft_run_config(scale), protocols, q0_info)}
    with swap_dir(out) as new:  # every CSV written aside, the folder swapped in only when all are complete
        for name, df in tables.items():
            df.to_csv(new / f"{name}.csv", index=False, float_format="%.10g")
    for name, df in tables.items():
        print(f"wrote {out / name}.csv: {len(df)} rows")
    return tables


def study_table(specs: list) -> pd.DataFrame:
    """One row per study entry (spolab.study's RunSpecs, seeds collected), in the study file's order: what
    the analysis names, colours and orders entries by, and each entry's settings (its overrides, the lr
    sweep's lr included)."""
    seeds: dict[str, list[int]] = {}
    for sp in specs:
        seeds.setdefault(sp.run, []).append(sp.seed)
    return pd.DataFrame([{"study_run": e.run, "order": e.order, "label": e.label, "colour": e.colour, "role": e.role,
                          "group": e.group, "family": e.family, "reference": e.reference or "",
                          "seeds": " ".join(map(str, seeds[e.run])), "protocols": " ".join(e.protocols),
                          "needs": " ".join(e.needs), "overrides": e.overrides} for e in entries(specs).values()])


def setup_table(scale: str, sft_cfg, protocols: dict[str, dict], q0: dict | None = None) -> pd.DataFrame:
    """key, value rows: the scale's task, model and SFT setting as the SFT run ran (``sft_cfg``: its
    ``config.yaml``, the π_ref every run of the study starts from), each protocol's settings as its
    evaluations ran (``protocols``: name -> the ``protocol`` of their eval.json), e.g.
    ``protocol.paper.temperature`` 0.4, and, where given, Q̂0's samples as its run recorded them
    (``q0``: n_ref, the π_ref samples per rl prompt, and n_prompts): ``q0.n_ref`` 16, ``q0.n_prompts``
    4000, which the report counts in SPO's cost."""
    cfg = sft_cfg
    rows = {"scale": scale, "task": cfg.task.name, "model": cfg.model.name, "pretrained": cfg.model.name_or_path or "",
            "sft": bool(cfg.sft.enabled)}
    for name, p in sorted(protocols.items()):
        rows.update({f"protocol.{name}.{k}": v for k, v in p.items() if k != "name"})
    for k, v in (q0 or {}).items():
        if v is not None:
            rows[f"q0.{k}"] = int(float(v))
    return pd.DataFrame({"key": list(rows), "value": list(rows.values())})


def problem_classes(data_dir: Path, splits: list[str]) -> dict[tuple[str, str], int]:
    """(split, problem id) -> the problem's behaviour class: ``class_id`` of the data split's problem
    records (spolab.tasks.problems.Problem); a split or a task without classes (the code tasks'
    problems have none) gives nothing, and its rows' class_id stays empty."""
    out = {}
    for split in splits:
        try:
            problems = load_split(data_dir, split)
        except FileNotFoundError:
            continue
        out.update({(split, p.id): int(p.class_id) for p in problems if getattr(p, "class_id", None) is not None})
    return out


def sft_run_config(scale: str):
    """The resolved config the scale's SFT run wrote into its folder (results/<scale>/sft/config.yaml)."""
    path = Path(paths(scale).sft) / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{path} not found: the export describes the study from its SFT run's config; "
                         "run the SFT step first (Snakemake rule sft)")
    return OmegaConf.load(path)


def study_jobs(jobs: pd.DataFrame, run_names: list[str]) -> pd.DataFrame:
    """The jobs of one study: every job of a rule with one job (data, sft, q0, sources, exact, bench:
    shared by every study at a scale), and of the per-run rules only this study's RL runs and the
    evaluations of SFT and of those runs. Another study's runs, which share the benchmarks folder
    (``rl/spo_lr1e-4-s0.tsv`` of the lr sweep), are not this study's time.

    >>> j = pd.DataFrame({"rule": ["sft", "rl", "rl", "eval", "eval"], "name": ["", "spo-s0", "spo_lr1e-4-s0",
    ...                   "sft", "spo_lr1e-4-s0"], "s": 1.0, "max_rss_mb": 1.0, "end_time": 1.0})
    >>> study_jobs(j, ["spo-s0"])[["rule", "name"]].values.tolist()
    [['sft', ''], ['rl', 'spo-s0'], ['eval', 'sft']]
    """
    mine = set(run_names)
    keep = (jobs.name == "") | jobs.name.isin(mine) | ((jobs.rule == "eval") & (jobs.name == "sft"))
    return jobs[keep].reset_index(drop=True)


def read_jobs(bench_dir: Path) -> pd.DataFrame:
    """One row per Snakemake job from its benchmark file: rule, job name, seconds, peak RSS, end time.

    The rules write ``<bench_dir>/<rule>.tsv`` for a rule with one job (``sft.tsv``) and
    ``<bench_dir>/<rule>/<name>.tsv`` for one job per model or run (``rl/spo-s0.tsv``, ``eval/sft.tsv``:
    the name is the study run name, see spolab.study.parse_run_name): the rule is the folder, never
    split out of a name. ``export``'s own file is left out: it is a previous export's, not this study's.
    """
    rows = []
    root = Path(bench_dir)
    single = [(f.stem, "", f) for f in root.glob("*.tsv")]
    per_job = [(f.parent.name, f.stem, f) for f in root.glob("*/*.tsv")]
    for rule, name, f in sorted(single + per_job):
        d = pd.read_csv(f, sep="\t")
        if d.empty or rule == "export":
            continue
        rows.append({"rule": rule, "name": name, "s": float(d["s"].iloc[-1]),
                     "max_rss_mb": float(d["max_rss"].iloc[-1]) if "max_rss" in d else None,
                     "end_time": f.stat().st_mtime})
    return pd.DataFrame(rows, columns=["rule", "name", "s", "max_rss_mb", "end_time"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="default")
    ap.add_argument("--study", default="default")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bench", type=Path, default=None, help="the benchmark CSV (spolab.bench)")
    args = ap.parse_args(argv)
    export(args.scale, args.study, args.out, args.bench)


if __name__ == "__main__":
    sys.exit(main())
