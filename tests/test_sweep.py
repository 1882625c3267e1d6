"""Hydra multiruns keep every job (spolab.cli): `python -m spolab.<step> -m key=a,b` gives each job its
own folder <out_dir>/<swept key=value> and its own MLflow run <name>,<swept key=value>; a single run
(what Snakemake starts) is composed exactly as before."""

from __future__ import annotations

import subprocess
import sys

import yaml
from mlflow import MlflowClient

from conftest import ONE_THREAD
from spolab.cli import sweep_overrides
from spolab.tracking import read_metrics, verify_mirror


def test_single_runs_get_no_sweep_layout():
    """Without -m nothing is added: Snakemake's jobs keep their out_dir and name exactly."""
    assert sweep_overrides("rl", ["scale=smoke", "name=spo-s0", "algo.beta=0.05"]) == []
    got = sweep_overrides("rl", ["-m", "scale=smoke", "algo.beta=0.05,0.2", "hydra.sweep.dir=/elsewhere"])
    assert got == ["hydra.sweep.subdir=${hydra.job.override_dirname}",  # the command line's sweep.dir wins
                   "hydra.job.config.override_dirname.exclude_keys=[scale]"]  # only swept keys name a job


def test_rl_sweep_keeps_both_runs(smoke_q0, tmp_path):
    """A 2-job sweep over β: two folders, each with its own metrics (every update once), two MLflow runs
    named after the swept value whose `algo.beta` param matches their folder, nothing in the cwd."""
    smoke = smoke_q0.parent
    out, cwd = tmp_path / "rl", tmp_path / "cwd"
    cwd.mkdir()
    cmd = [sys.executable, "-m", "spolab.rl", "-m", "scale=smoke", f"data_dir={smoke}/data",
           f"sft_dir={smoke}/sft/model", f"q0_path={smoke}/q0/q0.json", f"out_dir={out}",
           f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art",
           "updates=2", "eval_every=2", "ckpt_every=2", "algo.beta=0.05,0.2"]
    done = subprocess.run(cmd, cwd=cwd, env=ONE_THREAD, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    assert list(cwd.iterdir()) == []  # no ./multirun, no ./outputs
    assert (out / "multirun.yaml").exists()  # Hydra's sweep record, beside its jobs
    jobs = {"0.05": out / "algo.beta=0.05", "0.2": out / "algo.beta=0.2"}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(p.name for p in jobs.values())
    for beta, folder in jobs.items():
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        assert (cfg["algo"]["beta"], cfg["name"]) == (float(beta), f"spo-online-s0,algo.beta={beta}")
        assert cfg["out_dir"] == str(folder)
        rows = read_metrics(folder)
        assert [r["step"] for r in rows if "rollout/reward" in r] == [1, 2]  # its own updates, each once
        steps = [r["step"] for r in rows]
        assert steps == sorted(steps), steps  # one run's rows: no other job's appended after them
        assert (folder / "summary.json").exists() and (folder / "model" / "config.json").exists()

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("spolab-smoke")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'rl'")  # active runs only: none superseded
    assert sorted(r.info.run_name for r in runs) == [f"spo-online-s0,{p.name}" for p in jobs.values()]
    for r in runs:
        beta = r.data.params["algo.beta"]
        assert r.info.status == "FINISHED" and r.info.run_name.endswith(f"algo.beta={beta}")
        assert r.data.tags["run_dir"] == str(jobs[beta].resolve())
        assert [m.step for m in client.get_metric_history(r.info.run_id, "rollout/reward")] == [1, 2]
        assert verify_mirror(jobs[beta], client, r.info.run_id) == []  # the folder's points, exactly
