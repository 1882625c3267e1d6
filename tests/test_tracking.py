"""Tests for spolab.tracking against a real MLflow sqlite store (no mocks)."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from spolab.tracking import (
    Tracker,
    _retry,
    config_hash,
    flatten,
    git_sha,
    init_mlflow,
    mlflow_key,
    read_metrics,
)

EXP = "test-exp"
CFG = {"algo": {"name": "spo", "lr": 1e-5, "betas": [0.9, 0.95]}, "seed": 3, "eval": {"k@1": True}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One migrated sqlite DB for the whole module (migrations take ~2 s)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'db' / 'mlflow.db'}"
    art = str(root / "artifacts")
    exp_id = init_mlflow(uri, EXP, art)
    assert init_mlflow(uri, EXP, art) == exp_id  # idempotent
    return {"tracking_uri": uri, "artifact_root": art, "experiment": EXP, "exp_id": exp_id}


def _tracker(run_dir: Path, store: dict[str, str], cfg=CFG, **kw) -> Tracker:
    args = {k: store[k] for k in ("tracking_uri", "artifact_root", "experiment")}
    return Tracker(run_dir, cfg, **(args | {"run_name": run_dir.name, "tags": {"algo": "spo"}} | kw))


def test_helpers() -> None:
    flat = flatten(OmegaConf.create({"a": {"b": "${c}", "l": [1, {"x": None}], "e": {}}, "c": 2}))
    assert flat == {"a.b": "2", "a.l.0": "1", "a.l.1.x": "None", "a.e": "{}", "c": "2"}
    assert len(flatten({"long": "x" * 10_000})["long"]) == 6000
    assert config_hash({"a": 1, "b": 2}) == config_hash(OmegaConf.create({"b": 2, "a": 1}))
    assert len(config_hash(CFG)) == 12 and config_hash(CFG) != config_hash({**CFG, "seed": 4})
    sha = git_sha()
    assert sha == "unknown" or len(sha) == 12
    assert mlflow_key("eval/pass@1") == "eval/pass_at_1"
    assert mlflow_key("loss/sft") == "loss/sft"
    assert mlflow_key("/a//b/../c/") == "a/b/__/c"
    assert mlflow_key("x" * 300) == "x" * 250


def test_git_sha_reads_dot_git(tmp_path: Path) -> None:
    sha1, sha2 = "a" * 40, "b" * 40
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (tmp_path / "repo" / "sub").mkdir()
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert git_sha(tmp_path / "repo" / "sub") == "unknown"  # no commits yet
    (git / "packed-refs").write_text(f"# pack-refs\n{sha2} refs/heads/main\n")
    assert git_sha(tmp_path / "repo" / "sub") == sha2[:12]
    (git / "refs" / "heads" / "main").write_text(sha1 + "\n")
    assert git_sha(tmp_path / "repo") == sha1[:12]
    (git / "HEAD").write_text(sha2 + "\n")  # detached
    assert git_sha(tmp_path / "repo") == sha2[:12]
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {git}\n")
    assert git_sha(wt) == sha2[:12]


def test_retry_on_locked_only() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("wrapped") from sqlite3.OperationalError("database is locked")
        return "ok"

    assert _retry(flaky, base_delay=0.001) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        _retry(lambda: (calls.append(1), int("x")), base_delay=0.001)
    assert len(calls) == 4  # non-lock errors are not retried


def test_local_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Tracker(run, OmegaConf.create(CFG), tracking_uri=None, run_name="r", tags={}) as t:
        t.log({"loss/sft": 1.5, "eval/pass@1": 0.25, "bad": float("nan"), "n": 7}, step=1)
        t.log({"loss/sft": 1.0}, step=2)
        t.log_summary({"final": 0.5, "inf": math.inf})
        t.log_artifact(run / "config.yaml")  # no-op
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.jsonl", "summary.json"]
    assert not list(tmp_path.rglob("*.db"))
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["eval/pass@1"] == 0.25 and rows[0]["bad"] is None and rows[0]["n"] == 7
    assert all(isinstance(r["time"], float) for r in rows)
    assert "NaN" not in (run / "metrics.jsonl").read_text()  # strict JSON
    assert json.loads((run / "summary.json").read_text()) == {"final": 0.5, "inf": None}
    assert OmegaConf.to_container(OmegaConf.load(run / "config.yaml")) == CFG
    with pytest.raises(RuntimeError):
        t.log({"x": 1.0}, step=3)


def test_torn_jsonl_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 0, "a": 1}\n{"step": 2, "ti')
    with Tracker(tmp_path, {}, tracking_uri=None) as t:
        assert t.last_step == 1
        t.log({"a": 3.0}, step=3)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3]


def test_mlflow_params_tags_history(tmp_path: Path, store: dict[str, str]) -> None:
    run = tmp_path / "run1"
    with _tracker(run, store, flush_every_s=3600) as t:
        for step in range(1, 6):
            t.log({"loss/sft": 1.0 / step, "eval/pass@1": step / 10, "nan": math.nan}, step=step)
        t.log_summary({"eval/pass@1": 0.9})
    client = MlflowClient(store["tracking_uri"])
    r = client.get_run(t.run_id)
    assert (run / "mlflow_run_id").read_text().strip() == t.run_id
    assert r.info.status == "FINISHED" and r.info.run_name == "run1"
    assert r.info.experiment_id == store["exp_id"]
    assert r.data.params["algo.lr"] == "1e-05" and r.data.params["algo.betas.1"] == "0.95"
    assert r.data.params["eval.k_at_1"] == "True"
    assert r.data.tags["algo"] == "spo"
    assert r.data.tags["config_hash"] == config_hash(CFG) and r.data.tags["git_sha"] == git_sha()
    hist = client.get_metric_history(t.run_id, "loss/sft")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [
        (s, 1.0 / s) for s in range(1, 6)
    ]
    hist = sorted(client.get_metric_history(t.run_id, "eval/pass_at_1"), key=lambda m: (m.step, m.timestamp))
    assert [(m.step, m.value) for m in hist] == [(s, s / 10) for s in range(1, 6)] + [(5, 0.9)]
    assert client.get_metric_history(t.run_id, "nan") == []
    arts = {a.path for a in client.list_artifacts(t.run_id)}
    assert {"config.yaml", "metrics.jsonl", "summary.json"} <= arts
    assert r.info.artifact_uri.startswith(Path(store["artifact_root"]).resolve().as_uri() + f"/{EXP}/")


def test_resume_reopens_same_run(tmp_path: Path, store: dict[str, str]) -> None:
    run = tmp_path / "run"
    t1 = _tracker(run, store, flush_every_s=0)
    t1.log({"loss": 2.0}, step=1)
    t1.finish("KILLED")  # simulate a killed job
    t2 = _tracker(run, store, flush_every_s=0)
    client = MlflowClient(store["tracking_uri"])
    assert t2.resumed and t2.run_id == t1.run_id and t2.last_step == 1
    assert client.get_run(t2.run_id).info.status == "RUNNING"
    t2.log({"loss": 1.0}, step=2)
    t2.finish()
    assert client.get_run(t1.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(t1.run_id, "loss")] == [1, 2]
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    runs = client.search_runs([store["exp_id"]], filter_string="attributes.run_name = 'run'")
    assert len(runs) == 1


def test_context_manager_marks_failed(tmp_path: Path, store: dict[str, str]) -> None:
    with pytest.raises(ZeroDivisionError):
        with _tracker(tmp_path / "boom", store) as t:
            t.log({"x": 1.0}, step=0)
            _ = 1 / 0
    r = MlflowClient(store["tracking_uri"]).get_run(t.run_id)
    assert r.info.status == "FAILED"
    assert [m.value for m in MlflowClient(store["tracking_uri"]).get_metric_history(t.run_id, "x")] == [1.0]


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spolab.tracking import Tracker
    run_dir, uri, art, exp, go = sys.argv[1:6]
    with Tracker(run_dir, {"worker": Path(run_dir).name}, run_name=Path(run_dir).name, tags={},
                 tracking_uri=uri, experiment=exp, artifact_root=art, flush_every_s=0) as t:
        Path(run_dir, "ready").touch()
        while not Path(go).exists():
            time.sleep(0.01)
        for step in range(200):
            t.log({"loss/sft": step * 0.5, "eval/pass@1": step / 200}, step=step)
        t.log_summary({"final": 1.0})
    """
)


def test_two_processes_same_db(tmp_path: Path, store: dict[str, str]) -> None:
    go = tmp_path / "go"
    dirs = [tmp_path / f"w{i}" for i in range(2)]
    for d in dirs:
        d.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                str(d),
                store["tracking_uri"],
                store["artifact_root"],
                EXP,
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for d in dirs
    ]
    deadline = time.monotonic() + 30
    while not all((d / "ready").exists() for d in dirs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
            p.communicate()[0] for p in procs if p.poll() is not None
        ]
        time.sleep(0.02)
    go.touch()  # both start logging at the same moment
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    client = MlflowClient(store["tracking_uri"])
    run_ids = {(d / "mlflow_run_id").read_text().strip() for d in dirs}
    assert len(run_ids) == 2
    for run_id in run_ids:
        assert client.get_run(run_id).info.status == "FINISHED"
        for key, f in (("loss/sft", lambda s: s * 0.5), ("eval/pass_at_1", lambda s: s / 200)):
            hist = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            assert [(m.step, m.value) for m in hist] == [(s, f(s)) for s in range(200)]
    for d in dirs:
        assert len(read_metrics(d)) == 200
