"""Tests for spolab.tracking against a real MLflow sqlite store (no mocks)."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from spolab.config import config_hash, flatten, run_identity
from spolab.errors import OperationalError
from spolab.tracking import (
    Tracker,
    _retry,
    git_sha,
    init_mlflow,
    mlflow_key,
    read_metrics,
    verify_mirror,
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


def test_git_sha_from_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    assert git_sha(repo / "sub") == "unknown"  # not a repository
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    assert git_sha(repo) == "unknown"  # no commit yet
    (repo / "f").write_text("x")
    run("add", "f")
    run("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_sha(repo / "sub") == sha.strip()[:12]


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
        t.log_artifact(run / "config.yaml")  # no MLflow: nothing to copy (config.yaml is always one)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.jsonl", "summary.json", "tracking.json"]
    record = json.loads((run / "tracking.json").read_text())
    assert record["run_name"] == "r" and record["status"] == "FINISHED" and record["artifacts"] == []
    assert not list(tmp_path.rglob("*.db"))
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 2]  # the summary's new values are the last row
    assert {k for k in rows[2] if k != "time"} == {"step", "final"}
    assert rows[0]["eval/pass@1"] == 0.25 and rows[0]["bad"] is None and rows[0]["n"] == 7
    assert all(isinstance(r["time"], float) for r in rows)
    assert "NaN" not in (run / "metrics.jsonl").read_text()  # strict JSON
    assert json.loads((run / "summary.json").read_text()) == {"final": 0.5, "inf": None}
    assert OmegaConf.to_container(OmegaConf.load(run / "config.yaml")) == CFG
    with pytest.raises(RuntimeError):
        t.log({"x": 1.0}, step=3)


def test_torn_jsonl_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 0, "a": 1}\n{"step": 2, "ti')
    with Tracker(tmp_path, {}, tracking_uri=None, resume_step=1) as t:
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
    assert (run / "mlflow_run_id").read_text().split()[0] == t.run_id
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
    t2 = _tracker(run, store, flush_every_s=0, resume_step=1)
    client = MlflowClient(store["tracking_uri"])
    assert t2.resumed and t2.run_id == t1.run_id and t2.last_step == 1
    assert client.get_run(t2.run_id).info.status == "RUNNING"
    t2.log({"loss": 1.0}, step=2)
    t2.finish()
    assert client.get_run(t1.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(t1.run_id, "loss")] == [1, 2]
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    runs = client.search_runs([store["exp_id"]], filter_string=f"tags.run_dir = '{run.resolve()}'")
    assert len(runs) == 1
    assert verify_mirror(run, client) == []


def _abandon(t: Tracker) -> None:
    """What a SIGKILL leaves: the file as written, MLflow as last flushed, no finish()."""
    t._fh.close()
    t._finished = True


def test_clean_start_never_inherits(tmp_path: Path, store: dict[str, str]) -> None:
    """A rerun without a checkpoint (killed before its first one, or finished) starts clean: the
    old rows are gone and the folder's old MLflow run is superseded (soft-deleted)."""
    run, client = tmp_path / "run", MlflowClient(store["tracking_uri"])
    t1 = _tracker(run, store, flush_every_s=0)
    for step in range(3):
        t1.log({"loss": float(step)}, step=step)
    _abandon(t1)
    t2 = _tracker(run, store, flush_every_s=0)
    assert t2.run_id != t1.run_id and read_metrics(run) == []
    assert client.get_run(t1.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(t1.run_id).data.tags["superseded_by"] == t2.run_id
    for step in range(3):
        t2.log({"loss": float(step)}, step=step)
    t2.finish()
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2] and verify_mirror(run, client) == []
    live = client.search_runs([store["exp_id"]], filter_string=f"tags.run_dir = '{run.resolve()}'")
    assert [r.info.run_id for r in live] == [t2.run_id]


def test_other_config_is_a_new_run(tmp_path: Path, store: dict[str, str]) -> None:
    """A folder rerun with another config gets a fresh MLflow run whose params are the new config's."""
    run, client = tmp_path / "run", MlflowClient(store["tracking_uri"])
    with _tracker(run, store) as t1:
        t1.log({"loss": 1.0}, step=1)
    other = {**CFG, "algo": {**CFG["algo"], "lr": 3e-5}}
    with _tracker(run, store, cfg=other) as t2:
        t2.log({"loss": 0.5}, step=1)
    assert t2.run_id != t1.run_id
    assert client.get_run(t2.run_id).data.params["algo.lr"] == "3e-05"
    assert client.get_run(t2.run_id).data.tags["config_hash"] == run_identity(other)
    assert [m.value for m in client.get_metric_history(t2.run_id, "loss")] == [0.5]
    assert [r["loss"] for r in read_metrics(run)] == [0.5]


def test_resume_replays_what_mlflow_lacks(tmp_path: Path, store: dict[str, str]) -> None:
    """Killed between flushes: MLflow has the points up to an older flush only; the resumed run
    replays the rest up to the checkpoint from metrics.jsonl, then the mirror is exact."""
    run, client = tmp_path / "run", MlflowClient(store["tracking_uri"])
    t1 = _tracker(run, store, flush_every_s=3600)
    for step in range(1, 7):
        t1.log({"loss": 1.0 / step, "eval/pass@1": step / 10}, step=step)
        if step == 2:
            t1.flush()  # an older flush; the checkpoint at step 4 was written but its flush never ran
    _abandon(t1)
    assert sorted(m.step for m in client.get_metric_history(t1.run_id, "loss")) == [1, 2]
    t2 = _tracker(run, store, flush_every_s=3600, resume_step=4)
    assert t2.run_id == t1.run_id
    assert sorted(m.step for m in client.get_metric_history(t1.run_id, "loss")) == [1, 2, 3, 4]
    for step in range(5, 8):
        t2.log({"loss": 1.0 / step, "eval/pass@1": step / 10}, step=step)
    t2.log_summary({"final": 1.0, "loss": 1.0 / 7})
    t2.finish()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6, 7, 7]
    assert verify_mirror(run, client) == []
    assert sorted(m.step for m in client.get_metric_history(t1.run_id, "eval/pass_at_1")) == list(range(1, 8))


def test_resume_recreates_a_run_that_is_ahead(tmp_path: Path, store: dict[str, str]) -> None:
    """Killed after a flush past the checkpoint: MLflow holds points the resumed run will log again,
    so the run is recreated from metrics.jsonl (points cannot be deleted from MLflow)."""
    run, client = tmp_path / "run", MlflowClient(store["tracking_uri"])
    t1 = _tracker(run, store, flush_every_s=0)  # every step flushed
    for step in range(1, 6):
        t1.log({"loss": float(step)}, step=step)
    _abandon(t1)
    t2 = _tracker(run, store, flush_every_s=0, resume_step=3)
    assert t2.run_id != t1.run_id and client.get_run(t1.run_id).info.lifecycle_stage == "deleted"
    for step in range(4, 6):
        t2.log({"loss": float(step) + 0.5}, step=step)
    t2.finish()
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(t2.run_id, "loss"), key=lambda m: m.step)] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5), (5, 5.5)]
    assert verify_mirror(run, client) == []


def test_verify_mirror_detects_a_gap(tmp_path: Path, store: dict[str, str]) -> None:
    run, client = tmp_path / "run", MlflowClient(store["tracking_uri"])
    t = _tracker(run, store, flush_every_s=3600)
    t.log({"loss": 1.0}, step=1)
    t.flush()
    t.log({"loss": 2.0}, step=2)
    _abandon(t)
    diff = verify_mirror(run, client)
    assert len(diff) == 1 and "step 2" in diff[0] and "MLflow 0" in diff[0]
    done = subprocess.run([sys.executable, "-m", "spolab.tracking", "sync", str(run)], capture_output=True, text=True)
    assert done.returncode == 0 and "replayed 1 points" in done.stdout, done.stderr
    assert verify_mirror(run, client) == []


def test_read_only_database_names_the_uri(tmp_path: Path, tmpfs) -> None:
    """A database on a read-only file system (root ignores chmod): one line that names the URI."""
    init_mlflow(f"sqlite:///{tmp_path / 'made.db'}", EXP, str(tmp_path / "art"))
    db = tmpfs.path / "mlflow.db"
    shutil.copy(tmp_path / "made.db", db)  # made elsewhere: no open handle keeps the mount busy
    tmpfs.remount(ro=True)
    with pytest.raises(OperationalError, match=rf"MLflow tracking database sqlite:///{db}: .*(?i:read-?only)"):
        Tracker(tmp_path / "run", CFG, tracking_uri=f"sqlite:///{db}", experiment=EXP,
                artifact_root=str(tmp_path / "art"))
    done = subprocess.run([sys.executable, "-m", "spolab.tracking", "init", "--uri", f"sqlite:///{db}",
                           "--experiment", "another", "--artifact-root", str(tmp_path / "art")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and str(db) in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


_INIT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spolab.tracking import Tracker
    run_dir, uri, art, go = sys.argv[1:5]
    while not Path(go).exists():
        time.sleep(0.005)
    with Tracker(run_dir, {"worker": Path(run_dir).name}, run_name=Path(run_dir).name, tags={},
                 tracking_uri=uri, experiment="parallel", artifact_root=art, flush_every_s=0) as t:
        for step in range(20):
            t.log({"loss": step * 0.5}, step=step)
    """
)


def test_parallel_first_use_of_a_fresh_database(tmp_path: Path) -> None:
    """8 jobs start together on a database that does not exist yet (docs/design.md §7): none crashes,
    none loses a point, and the database is usable afterwards."""
    uri, art, go = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}", str(tmp_path / "art"), tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _INIT, str(tmp_path / f"w{i}"), uri, art, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(8)]
    inits = [subprocess.Popen([sys.executable, "-m", "spolab.tracking", "init", "--uri", uri, "--experiment",
                               "parallel", "--artifact-root", art], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    go.touch()
    outs = [p.communicate()[0] for p in procs + inits]
    assert [p.returncode for p in procs + inits] == [0] * 10, outs
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("parallel")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    for i in range(8):
        assert verify_mirror(tmp_path / f"w{i}", client) == []
        assert len(client.get_metric_history((tmp_path / f"w{i}" / "mlflow_run_id").read_text().split()[0], "loss")) == 20


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
    run_ids = {(d / "mlflow_run_id").read_text().split()[0] for d in dirs}
    assert len(run_ids) == 2
    for run_id in run_ids:
        assert client.get_run(run_id).info.status == "FINISHED"
        for key, f in (("loss/sft", lambda s: s * 0.5), ("eval/pass_at_1", lambda s: s / 200)):
            hist = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            assert [(m.step, m.value) for m in hist] == [(s, f(s)) for s in range(200)]
    for d in dirs:
        assert len(read_metrics(d)) == 201  # 200 steps and the summary's row
        assert verify_mirror(d, client) == []


# --------------------------------------------------------------------------- a lost database, rebuilt


def _mlflow_view(client: MlflowClient, run_id: str) -> dict:
    """What a run holds, without what a rebuild cannot keep (its id) or must not (its run_dir tag is the
    folder's path, the same here)."""
    r = client.get_run(run_id)
    history = {k: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, k))
               for k in r.data.metrics}
    artifacts = sorted(a.path for a in client.list_artifacts(run_id))
    return {"name": r.info.run_name, "status": r.info.status, "start": r.info.start_time, "end": r.info.end_time,
            "params": r.data.params, "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
            "history": history, "artifacts": artifacts}


def _forget_engines() -> None:
    """Close MLflow's per-URI engines of this process: after a database file is deleted and rebuilt by
    another process, a cached engine would keep reading the deleted file."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for engine in SqlAlchemyStore._engine_map.values():
        engine.dispose()
    SqlAlchemyStore._engine_map.clear()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spolab.tracking", *args], capture_output=True, text=True, cwd=cwd)


def test_rebuild_recreates_a_deleted_database(tmp_path: Path) -> None:
    """Fault injection: the database is deleted after the runs. `verify` says so in one line, `rebuild`
    recreates every run from its folder (name, status, times, params, tags, every point with its time,
    artifacts), and a second rebuild keeps them (they mirror their folders)."""
    db = tmp_path / "db" / "mlflow.db"
    store = {"tracking_uri": f"sqlite:///{db}", "artifact_root": str(tmp_path / "art"), "experiment": EXP}
    root = tmp_path / "results"
    with _tracker(root / "a", store, flush_every_s=0) as t:
        for step in range(3):
            t.log({"loss/x": step * 0.5, "val/pass@1": 0.1 * step}, step=step)
        (root / "a" / "per_problem.json").write_text("{}\n")
        t.log_artifact(root / "a" / "per_problem.json")
        t.log_summary({"final": 2.0})
    with pytest.raises(ZeroDivisionError), _tracker(root / "b", store, flush_every_s=0) as t:
        t.log({"loss/x": 1.0}, step=0)
        _ = 1 / 0
    client = MlflowClient(store["tracking_uri"])
    ids = {d: (root / d / "mlflow_run_id").read_text().split()[0] for d in "ab"}
    before = {d: _mlflow_view(client, ids[d]) for d in "ab"}
    assert before["a"]["status"] == "FINISHED" and before["b"]["status"] == "FAILED"
    db.unlink()

    res = _cli("verify", str(root / "a"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "does not exist" in res.stderr and "rebuild" in res.stderr
    assert not db.exists()  # verify never creates an empty database

    res = _cli("rebuild", str(root))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("rebuilt as") == 2, res.stdout
    _forget_engines()  # this process still holds a connection to the deleted file (MLflow caches engines)
    client = MlflowClient(store["tracking_uri"])
    for d in "ab":
        new_id = (root / d / "mlflow_run_id").read_text().split()[0]
        assert new_id != ids[d]
        assert _mlflow_view(client, new_id) == before[d], d
        assert verify_mirror(root / d) == []
    res = _cli("rebuild", str(root))
    assert res.returncode == 0 and res.stdout.count("kept") == 2, res.stdout + res.stderr

    # a folder written before tracking.json existed: kept while it mirrors, named when it cannot be rebuilt
    (root / "a" / "tracking.json").unlink()
    res = _cli("rebuild", str(root))
    assert res.returncode == 0 and res.stdout.count("kept") == 2, res.stdout + res.stderr
    db.unlink()
    res = _cli("rebuild", str(root))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "1 of 2 run folders" in res.stderr and "no readable tracking.json" in res.stderr, res.stderr


def test_rebuild_a_run_tracked_without_mlflow(tmp_path: Path) -> None:
    """tracking.uri=null: `sync` says in one line that the folder is not mirrored; `rebuild --uri` mirrors it."""
    run = tmp_path / "local"
    with Tracker(run, OmegaConf.create(CFG), tracking_uri=None, run_name="local", tags={"stage": "rl"}) as t:
        t.log({"loss/x": 1.0}, step=1)
        t.log_summary({"final": 0.5})
    res = _cli("sync", str(run))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "tracking.uri=null" in res.stderr, res.stderr
    res = _cli("rebuild", str(run))
    assert res.returncode == 2 and "--uri" in res.stderr and "Traceback" not in res.stderr, res.stderr
    uri = f"sqlite:///{tmp_path}/m.db"
    res = _cli("rebuild", str(run), "--uri", uri)
    assert res.returncode == 0, res.stderr
    assert verify_mirror(run) == []
    r = MlflowClient(uri).get_run((run / "mlflow_run_id").read_text().split()[0])
    assert r.info.run_name == "local" and r.info.status == "FINISHED" and r.data.tags["stage"] == "rl"
    assert r.data.params == {mlflow_key(k): v for k, v in flatten(CFG).items()}
    assert r.data.metrics == {"loss/x": 1.0, "final": 0.5}


_SIGTERM_WORKER = textwrap.dedent(
    """
    import logging, sys, time
    from pathlib import Path
    from spolab.tracking import Tracker
    logging.basicConfig(level=logging.INFO)
    run_dir, uri, art, exp = sys.argv[1:5]
    with Tracker(run_dir, {"w": 1}, run_name="term", tags={}, tracking_uri=uri, experiment=exp,
                 artifact_root=art, flush_every_s=0) as t:
        t.log({"x": 1.0}, step=0)
        Path(run_dir, "ready").touch()
        while True:
            time.sleep(0.01)
    """
)


def test_sigterm_is_logged_and_ends_the_run_killed(tmp_path: Path, store: dict[str, str]) -> None:
    """Fault injection: SIGTERM a job inside `with tracker:`. Its log says it was terminated, it exits
    143 without a traceback, and its MLflow run ends KILLED with every point it logged."""
    import signal

    run = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_WORKER, str(run), store["tracking_uri"],
                             store["artifact_root"], store["experiment"]], stderr=subprocess.PIPE, text=True)
    while not (run / "ready").exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 143, err
    assert "received SIGTERM" in err and "Traceback" not in err, err
    r = MlflowClient(store["tracking_uri"]).get_run((run / "mlflow_run_id").read_text().split()[0])
    assert r.info.status == "KILLED" and r.data.metrics == {"x": 1.0}
    assert json.loads((run / "tracking.json").read_text())["status"] == "KILLED"


def test_a_stale_running_run_is_never_left_running(tmp_path: Path, store: dict[str, str]) -> None:
    """A job SIGKILLed mid-run leaves its MLflow run RUNNING (nothing can run in the killed process). A
    resume adopts it and ends it FINISHED; a clean start marks it KILLED before superseding it."""
    client = MlflowClient(store["tracking_uri"])
    t = _tracker(tmp_path / "r", store, flush_every_s=0)
    t.log({"x": 1.0}, step=1)
    t.flush()  # ... and then the process dies: no finish()
    stale = t.run_id
    assert client.get_run(stale).info.status == "RUNNING"
    with _tracker(tmp_path / "r", store, resume_step=1) as t2:
        t2.log({"x": 2.0}, step=2)
    assert t2.run_id == stale and client.get_run(stale).info.status == "FINISHED"
    t3 = _tracker(tmp_path / "r", store, flush_every_s=0)  # killed again, then a clean start
    with _tracker(tmp_path / "r", store) as t4:
        t4.log({"x": 3.0}, step=1)
    old = client.get_run(t3.run_id)
    assert old.info.status == "KILLED" and old.info.lifecycle_stage == "deleted"
    assert client.get_run(t4.run_id).info.status == "FINISHED"
