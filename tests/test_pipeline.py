"""The Snakemake DAG: dry runs at every scale, and the smoke scale end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SCALES = sorted(p.stem for p in (REPO / "conf" / "scale").glob("*.yaml"))


def snakemake(wd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The repo's workflow with ``wd`` as working directory: every output lands under wd."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(wd), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("scale", SCALES)
def test_dry_run(scale, tmp_path):
    res = snakemake(tmp_path, "-n", "--cores", "2", "--config", f"scale={scale}")
    assert res.returncode == 0, res.stderr[-3000:]
    for rule in ["mlflow_init", "data", "sft", "q0", "rl", "eval", "exact"]:
        assert rule in res.stdout


def test_lint():
    res = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_smoke_dag_end_to_end(tmp_path):
    """`snakemake --cores 2 --config scale=smoke` runs everything, tracks it, and is then up to date."""
    wd = tmp_path
    args = ["--cores", "2", "--config", "scale=smoke"]
    res = snakemake(wd, *args)
    assert res.returncode == 0, res.stderr[-5000:]
    evals = sorted(p.relative_to(wd / "results/smoke/eval").as_posix()
                   for p in (wd / "results/smoke/eval").glob("*/*/eval.json"))
    models = ["grpo-s0", "ppo-s0", "rloo-s0", "sft", "spo-s0", "spo_half_online-s0"]
    assert evals == [f"{m}/{s}/eval.json" for m in models for s in ["ood-paper", "ood-policy", "test-paper", "test-policy"]]
    assert (wd / "results/smoke/benchmarks/sft.tsv").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{wd}/results/mlflow.db")
    exp = client.get_experiment_by_name("spolab-smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs)
    stages = sorted(r.data.tags["stage"] for r in runs)
    assert stages == sorted(["sft", "q0"] + ["rl"] * 5 + ["eval"] * 24 + ["exact"] * 3)
    sft = [r for r in runs if r.data.tags["stage"] == "sft"][0]
    assert client.get_metric_history(sft.info.run_id, "loss/sft")
    assert sft.data.params["model.name"] == "xs" and "git_sha" in sft.data.tags
    ppo = [r for r in runs if r.data.tags["stage"] == "rl" and r.data.tags["algo"] == "ppo"][0]
    assert len(client.get_metric_history(ppo.info.run_id, "rollout/reward")) == 6

    assert (wd / "results/smoke/tables/eval_smoke.md").exists() and (wd / "results/bench/smoke/bench_cpu.md").exists()
    again = snakemake(wd, *args, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
