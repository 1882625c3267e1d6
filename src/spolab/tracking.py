"""Per-run tracking: the run folder's ``metrics.jsonl`` / ``config.yaml`` / ``summary.json``, and
their MLflow mirror.

The run folder is the source of truth; MLflow mirrors it exactly:

- **A run is its config.** A :class:`Tracker` either starts a run *clean* (the folder's previous
  metrics and summary are removed, the MLflow run they belonged to is soft-deleted and a fresh
  one is created) or *resumes* one at the step of its checkpoint (``resume_step``; the caller
  checks that the checkpoint belongs to the same config, :mod:`spolab.checkpoint`). Nothing is
  ever appended to another config's metrics, and params are never merged.
- **Every point of metrics.jsonl reaches MLflow, whatever was killed.** Buffered points are sent
  every ``flush_every_s``, at every checkpoint (:meth:`Tracker.flush`) and at the end. On resume
  the file is cut at the checkpoint's step, and whatever MLflow lacks up to it is replayed from
  the file; if MLflow holds points the file does not (sent after the checkpoint, before the
  kill), the run is recreated from the file. :func:`verify_mirror` checks the two agree, and
  ``python -m spolab.tracking sync <run_dir>`` replays a folder by hand.
- **MLflow can be rebuilt from the folders.** Each run folder also holds ``tracking.json`` (its run
  name, tags, experiment, start time, the artifacts it logged and how it ended). With ``config.yaml``
  (params) and ``metrics.jsonl`` (every point, with its time) that is the whole MLflow run, so
  ``python -m spolab.tracking rebuild results/<scale>`` (or ``rebuild <run_dir>``, ``--uri`` for a
  run tracked with ``tracking.uri=null``) recreates every run after the database is lost; a folder
  whose run already mirrors it is left alone.
- **A killed run is marked so.** Inside ``with tracker:`` a SIGTERM is logged (one line saying the job
  was terminated) and ends the run KILLED (SIGINT too); an exception ends it FAILED. A run killed
  harder (SIGKILL) stays RUNNING until its folder is rerun: a resume adopts it and finishes it, a clean
  start marks it KILLED before superseding it.
- **Parallel first use is safe.** Creating the sqlite database (its migrations) and the
  experiment happens under a file lock next to the database, so jobs started together never race.

MLflow is reached only through an explicit ``MlflowClient`` (no global state), so several
trackers and processes share one database. An MLflow failure (read-only or locked database)
becomes an :class:`~spolab.errors.OperationalError` that names the URI.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from spolab.atomic import atomic_path, write_json, write_text
from spolab.config import flatten, load_config, run_identity, to_container
from spolab.errors import OperationalError, SpolabError, causes

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["NullTracker", "Tracker", "db_stamp", "git_sha", "init_mlflow", "metric_name", "mlflow_key", "read_metrics", "rebuild",
           "rebuild_all", "run_folders", "tracking_settings", "verify_mirror"]

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
DEFAULT_EXPERIMENT = "spolab"
DEFAULT_ARTIFACT_ROOT = "results/mlartifacts"

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
RUN_ID_FILE = "mlflow_run_id"
RECORD_FILE = "tracking.json"  # what MLflow holds beyond config.yaml and metrics.jsonl (rebuild)

# MLflow limits (mlflow.utils.validation, MLflow 3.x).
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250

_RESERVED_KEYS = frozenset({"step", "time"})
_INVALID_KEY_CHARS = re.compile(r"[^/\w.\- :]")

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def mlflow_key(key: str) -> str:
    """Sanitise a metric/param/tag key for MLflow (``@`` -> ``_at_``, bad chars -> ``_``).

    MLflow keys may hold only ``[/\\w.\\- :]``, must be path-normalised (no ``//``, ``.``/``..``
    segments, leading or trailing ``/``) and at most 250 characters.
    """
    k = _INVALID_KEY_CHARS.sub("_", str(key).replace("@", "_at_"))
    parts = [{".": "_", "..": "__"}.get(p, p) for p in k.split("/") if p]
    return "/".join(parts)[:MAX_KEY_LENGTH].rstrip("/") or "_"


def metric_name(key: str) -> str:
    """The inverse of :func:`mlflow_key` for spolab's metric names (the only character they hold
    that MLflow refuses is ``@``, as in ``pass@10``): ``val/pass_at_10`` -> ``val/pass@10``."""
    return key.replace("_at_", "@")


def tracking_settings(scale: str) -> dict[str, Any]:
    """(uri, experiment, artifact_root, flush_every_s) of a scale, from conf/tracking (the one place
    they are written: entry points, the mlflow_init rule and the export all read them here)."""
    return to_container(load_config("rl", [f"scale={scale}"]).tracking)


def _abs_sqlite_uri(uri: str) -> str:
    """Make a relative ``sqlite:///path`` URI absolute (relative to the current directory)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = uri[len(prefix) :]
        if path and not path.startswith("/") and not path.startswith(":memory:"):
            return prefix + str(Path(path).resolve())
    return uri


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith(":memory:"):
        return Path(uri[len(prefix) :])
    return None


@contextlib.contextmanager
def _db_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock next to a sqlite database (``<db>.lock``): the first use of a fresh
    database (its migrations) and the creation of experiments happen under it, one process at a
    time. A no-op for other stores."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of an exception chain, one line (SQLAlchemy wraps sqlite3's message)."""
    *_, last = causes(exc)
    text = str(last).strip().splitlines()
    return f"{type(last).__name__}: {text[0] if text else ''}"


def _is_lock_error(exc: BaseException) -> bool:
    """True when ``exc`` or its cause chain is a transient sqlite 'database is locked'."""
    return any("locked" in str(e).lower() for e in causes(exc))  # sqlite3/sqlalchemy OperationalError, MlflowException


def _retry(fn: Callable[..., T], *args: Any, attempts: int = 8, base_delay: float = 0.1, **kwargs: Any) -> T:
    """Call ``fn`` retrying sqlite lock errors with jittered exponential backoff (~12 s in all)."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if i == attempts - 1 or not _is_lock_error(e):
                raise
            delay = min(base_delay * 2**i, 5.0) * (0.5 + random.random())
            log.debug("MLflow DB locked (%s); retry %d/%d in %.2fs", e, i + 1, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _operational(uri: str, what: str, exc: BaseException) -> OperationalError:
    """An MLflow failure as one actionable line that names the database."""
    cause = _root_cause(exc)
    hint = ("another process holds the database's write lock; wait for it or stop it, then rerun"
            if _is_lock_error(exc) else
            "check that the database file and its folder exist and are writable, or run with tracking.uri=null")
    return OperationalError(f"MLflow tracking database {uri}: {what} failed ({cause}); {hint}")


def _client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient; its store (and, for a fresh sqlite file, the migrations) is created under the lock."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    with _db_lock(tracking_uri):
        return _retry(MlflowClient, tracking_uri=tracking_uri)


def _chunks(seq: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _json_safe(v: Any) -> Any:
    """Metric value for jsonl: ints stay ints, floats finite or ``None``."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int):
        return v
    f = float(v)
    return f if math.isfinite(f) else None


def git_sha(path: str | os.PathLike[str] | None = None) -> str:
    """Short (12 hex) HEAD commit of the repository holding ``path`` (default: this file), from
    ``git rev-parse``; ``"unknown"`` without git or outside a repository. Never raises."""
    where = Path(path if path is not None else __file__).resolve()
    where = where if where.is_dir() else where.parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        sha = out.stdout.strip()
        return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{12,40}", sha) else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``run_dir/metrics.jsonl`` back (skips a torn last line from a killed job)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping malformed line in %s: %.80s", path, line)
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))  # aside, fsync'ed, renamed (spolab.atomic)


def points(rows: Sequence[Mapping[str, Any]]) -> Counter:
    """The MLflow points a list of metrics.jsonl rows stands for: a multiset of (MLflow key, step,
    value); ``None`` (a non-finite value) is not sent to MLflow."""
    out: Counter = Counter()
    for r in rows:
        for k, v in r.items():
            if k not in _RESERVED_KEYS and v is not None:
                out[(mlflow_key(k), int(r["step"]), float(v))] += 1
    return out


def mlflow_points(client: MlflowClient, run_id: str) -> Counter:
    """Every metric point of an MLflow run, as the same multiset as :func:`points`."""
    run = _retry(client.get_run, run_id)
    out: Counter = Counter()
    for key in run.data.metrics:
        for m in _retry(client.get_metric_history, run_id, key):
            out[(key, int(m.step), float(m.value))] += 1
    return out


def _replay(client: MlflowClient, run_id: str, rows: Sequence[Mapping[str, Any]], have: Counter) -> int:
    """Log the points of ``rows`` that MLflow does not ``have`` yet (with their original timestamps)."""
    from mlflow.entities import Metric

    have = Counter(have)
    todo = []
    for r in rows:
        ts = int(float(r.get("time", time.time())) * 1000)
        for k, v in r.items():
            if k in _RESERVED_KEYS or v is None:
                continue
            p = (mlflow_key(k), int(r["step"]), float(v))
            if have[p] > 0:
                have[p] -= 1
            else:
                todo.append(Metric(p[0], p[2], ts, p[1]))
    for chunk in _chunks(todo, MAX_METRICS_PER_BATCH):
        _retry(client.log_batch, run_id, metrics=chunk, synchronous=True)
    return len(todo)


def run_link(run_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """(MLflow run id, tracking URI) of a run folder, from its ``mlflow_run_id`` file."""
    path = Path(run_dir) / RUN_ID_FILE
    if not path.exists():
        raise OperationalError(f"{run_dir} has no {RUN_ID_FILE}: it is not mirrored in MLflow (run with "
                               "tracking.uri=null, or never opened); mirror it with `python -m spolab.tracking "
                               f"rebuild {run_dir} --uri sqlite:///results/mlflow.db`")
    lines = path.read_text().split()
    return lines[0], lines[1] if len(lines) > 1 else DEFAULT_TRACKING_URI


def _existing_client(uri: str) -> MlflowClient:
    """A client of a database that must already exist: a missing sqlite file is one OperationalError
    (opening it would create an empty database, and every run would then be 'not found')."""
    path = _sqlite_path(uri)
    if path is not None and not path.exists():
        raise OperationalError(f"MLflow tracking database {uri} does not exist (deleted or never created); "
                               "rebuild it from the run folders with `python -m spolab.tracking rebuild "
                               "results/<scale>`")
    return _client(uri)


def _get_run(client: MlflowClient, run_id: str, uri: str, run_dir: str | os.PathLike[str]):
    from mlflow.exceptions import MlflowException

    try:
        return _retry(client.get_run, run_id)
    except MlflowException as e:
        raise OperationalError(f"MLflow run {run_id} of {run_dir} is not in {uri} ({_root_cause(e)}); rebuild it "
                               f"with `python -m spolab.tracking rebuild {run_dir}`") from e


def verify_mirror(run_dir: str | os.PathLike[str], client: MlflowClient | None = None,
                  run_id: str | None = None) -> list[str]:
    """Differences between a run folder's metrics.jsonl and its MLflow run (empty: they agree).

    Each entry names a (key, step, value) point and how many times each side holds it."""
    run_dir = Path(run_dir)
    if client is None or run_id is None:
        linked, uri = run_link(run_dir)
        run_id = run_id or linked
        client = client or _existing_client(uri)
        _get_run(client, run_id, uri, run_dir)
    want, have = points(read_metrics(run_dir)), mlflow_points(client, run_id)
    return [f"{k} step {s} value {v}: metrics.jsonl {want[(k, s, v)]}, MLflow {have[(k, s, v)]}"
            for (k, s, v) in sorted(set(want) | set(have), key=str) if want[(k, s, v)] != have[(k, s, v)]]


# --------------------------------------------------------------------------- public helpers


def init_mlflow(tracking_uri: str, experiment: str, artifact_root: str) -> str:
    """Create the MLflow DB (running migrations) and ``experiment`` if missing; return its id.

    Runs under the database's file lock, so any number of processes may call it at once. The
    experiment's artifact location is ``file://<abs artifact_root>/<experiment>``. Idempotent.
    """
    tracking_uri = _abs_sqlite_uri(tracking_uri)
    client = _client(tracking_uri)
    with _db_lock(tracking_uri):
        exp = _retry(client.get_experiment_by_name, experiment)
        if exp is None:
            location = (Path(artifact_root).resolve() / experiment).as_uri()
            return _retry(client.create_experiment, experiment, artifact_location=location)
        if exp.lifecycle_stage == "deleted":
            _retry(client.restore_experiment, exp.experiment_id)
        return exp.experiment_id


# --------------------------------------------------------------------------- tracker


class Tracker:
    """Writes ``config.yaml``/``metrics.jsonl``/``summary.json`` into ``run_dir``, mirrored to MLflow.

    ``resume_step=None`` starts the run clean; ``resume_step=k`` continues the same run after its
    checkpoint at step k (metrics past k are dropped: the resumed run logs them again).
    ``tracking_uri=None`` disables MLflow (local files only). Use as a context manager: the
    MLflow run ends FINISHED, or FAILED on an exception.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        cfg: Mapping[str, Any] | DictConfig,
        *,
        resume_step: int | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        tracking_uri: str | None = DEFAULT_TRACKING_URI,
        experiment: str = DEFAULT_EXPERIMENT,
        artifact_root: str | os.PathLike[str] = DEFAULT_ARTIFACT_ROOT,
        flush_every_s: float = 30.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.flush_every_s = flush_every_s
        self.cfg = to_container(cfg)
        self.config_hash = run_identity(self.cfg)
        self.git_sha = git_sha()
        self.resumed = resume_step is not None
        self._finished = False
        self._buffer: list = []
        self._last_flush = time.monotonic()
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.tracking_uri = _abs_sqlite_uri(tracking_uri) if tracking_uri else None

        # ---- local files: a clean start drops the folder's old metrics; a resume cuts them at its step
        metrics_path = self.run_dir / METRICS_FILE
        rows = [r for r in read_metrics(self.run_dir) if "step" in r and self.resumed and r["step"] <= resume_step]
        _write_rows(metrics_path, rows)
        (self.run_dir / SUMMARY_FILE).unlink(missing_ok=True)
        with atomic_path(self.run_dir / CONFIG_FILE) as tmp:
            OmegaConf.save(config=OmegaConf.create(self.cfg), f=tmp, resolve=True)
        self.last_step: int = resume_step if self.resumed else 0
        self._at_last_step: dict[str, Any] = {}  # values logged at last_step (log_summary skips repeats)
        self._fh = metrics_path.open("a")

        # ---- the record MLflow is rebuilt from (with config.yaml and metrics.jsonl): name, tags, artifacts
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        all_tags |= {"git_sha": self.git_sha, "config_hash": self.config_hash, "run_dir": str(self.run_dir.resolve())}
        self.tags = {mlflow_key(k): v[:MAX_TAG_VAL_LENGTH] for k, v in all_tags.items()}
        before = _read_record(self.run_dir) if self.resumed else {}
        self.record = {"run_name": run_name, "tags": self.tags, "uri": self.tracking_uri, "experiment": experiment,
                       "artifact_root": str(artifact_root), "start_time": before.get("start_time", _now_ms()),
                       "artifacts": before.get("artifacts", []), "status": "RUNNING"}
        self._save_record()

        # ---- MLflow: the same run when it is a prefix of the file, else a fresh one replayed from it
        if self.tracking_uri is None:
            (self.run_dir / RUN_ID_FILE).unlink(missing_ok=True)
            return
        try:
            self._open_mlflow(rows, run_name, experiment, str(artifact_root))
        except OperationalError:
            raise
        except Exception as e:
            raise _operational(self.tracking_uri, "opening the run", e) from e

    def _save_record(self) -> None:
        write_json(self.run_dir / RECORD_FILE, self.record)

    def _open_mlflow(self, rows, run_name, experiment, artifact_root) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        exp_id = init_mlflow(self.tracking_uri, experiment, artifact_root)
        self.client = client = _client(self.tracking_uri)
        id_file = self.run_dir / RUN_ID_FILE
        old = None
        if id_file.exists():
            try:
                old = _retry(client.get_run, run_link(self.run_dir)[0])
                old = None if old.info.lifecycle_stage == "deleted" else old
            except MlflowException:
                old = None  # another database, or deleted for good
        if old is not None and self.resumed:
            have = mlflow_points(client, old.info.run_id)
            if not (have - points(rows)):  # MLflow holds nothing the file does not: continue that run
                self.run_id = old.info.run_id
                _retry(client.update_run, self.run_id, status="RUNNING")
                n = _replay(client, self.run_id, rows, have)
                log.info("resumed MLflow run %s; replayed %d points from %s", self.run_id, n, METRICS_FILE)
                return
            log.info("MLflow run %s holds points past the checkpoint: recreating it from %s", old.info.run_id,
                     METRICS_FILE)
        run = _retry(client.create_run, exp_id, run_name=run_name, tags=self.tags, start_time=self.record["start_time"])
        self.run_id = run.info.run_id
        if old is not None:  # the folder's previous run: another config, a finished run, or a stale mirror
            _supersede(client, old, self.run_id)
        write_text(id_file, f"{self.run_id}\n{self.tracking_uri}\n")  # the folder's link to its MLflow run
        # params: the run's own config (where it is mirrored is not part of it)
        params = [Param(mlflow_key(k), v) for k, v in flatten({k: v for k, v in self.cfg.items()
                                                                if k != "tracking"}).items()]
        for chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
            _retry(client.log_batch, self.run_id, params=chunk, synchronous=True)
        _replay(client, self.run_id, rows, Counter())
        self.log_artifact(self.run_dir / CONFIG_FILE)

    @classmethod
    def from_config(cls, run_dir, cfg, *, run_name: str, tags: Mapping[str, Any],
                    resume_step: int | None = None) -> Tracker:
        """A tracker for a run whose config has the ``tracking`` group (conf/tracking/*.yaml)."""
        t = cfg.tracking
        return cls(run_dir, cfg, resume_step=resume_step, run_name=run_name, tags=tags, tracking_uri=t.uri,
                   experiment=t.experiment, artifact_root=t.artifact_root, flush_every_s=t.flush_every_s)

    # ------------------------------------------------------------------ logging

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Append ``{"step", "time", **metrics}`` to metrics.jsonl and buffer them for MLflow."""
        if self._finished:
            raise RuntimeError("Tracker.log() after finish()")
        bad = _RESERVED_KEYS.intersection(metrics)
        if bad:
            raise ValueError(f"metric keys {sorted(bad)} are reserved")
        step = int(step)
        self._write({str(k): _json_safe(v) for k, v in metrics.items()}, step)
        if self.client is not None and time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def _write(self, values: dict[str, Any], step: int) -> None:
        now = time.time()
        self._fh.write(json.dumps({"step": step, "time": now, **values}) + "\n")
        self._fh.flush()
        if step != self.last_step:
            self._at_last_step = {}
        self._at_last_step.update(values)
        self.last_step = step
        if self.client is None:
            return
        from mlflow.entities import Metric

        ts = int(now * 1000)
        self._buffer.extend(Metric(mlflow_key(k), float(v), ts, step) for k, v in values.items() if v is not None)

    def flush(self, *, raise_errors: bool = False) -> None:
        """Send buffered metrics to MLflow (call it after every checkpoint); on failure warn and
        keep them buffered (``raise_errors``: raise an OperationalError instead)."""
        self._last_flush = time.monotonic()
        if self.client is None or not self._buffer:
            return
        try:
            while self._buffer:
                chunk = self._buffer[:MAX_METRICS_PER_BATCH]
                _retry(self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)
                del self._buffer[: len(chunk)]
        except Exception as e:
            if raise_errors:
                raise _operational(self.tracking_uri, f"sending {len(self._buffer)} metric points", e) from e
            log.warning("MLflow metric flush failed (%d buffered, will retry): %s", len(self._buffer), e)

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Write ``summary.json``; its values not already logged at the last step become one more
        metrics.jsonl row at that step (so MLflow's copy of them mirrors the file too)."""
        values = {str(k): _json_safe(v) for k, v in metrics.items()}
        write_json(self.run_dir / SUMMARY_FILE, values)
        new = {k: v for k, v in values.items() if v is not None and self._at_last_step.get(k) != v}
        if new:
            self._write(new, self.last_step)
        self.flush()

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a local file into the MLflow run's artifacts (without MLflow, only recorded in
        tracking.json, so a rebuild logs it)."""
        entry = [_relative(Path(path), self.run_dir), artifact_path]
        if entry not in self.record["artifacts"] and Path(path).name not in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE):
            self.record["artifacts"].append(entry)
            self._save_record()
        if self.client is None:
            return
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as e:
            log.warning("MLflow log_artifact(%s) failed: %s", path, e)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush, mirror metrics.jsonl/summary.json as artifacts, and terminate the run. Idempotent.

        A flush that still fails after the retries raises an OperationalError (the file is complete:
        ``python -m spolab.tracking sync <run_dir>`` replays it later)."""
        if self._finished:
            return
        self._finished = True
        self._fh.close()
        self.record.update(status=status, end_time=_now_ms())
        self._save_record()
        if self.client is None:
            return
        try:
            self.flush(raise_errors=True)
        except OperationalError as e:
            raise OperationalError(f"{e}; {self.run_dir / METRICS_FILE} is complete: replay it with "
                                   f"`python -m spolab.tracking sync {self.run_dir}`") from None
        for name in (METRICS_FILE, SUMMARY_FILE):
            if (self.run_dir / name).exists():
                self.log_artifact(self.run_dir / name)
        try:
            _retry(self.client.set_terminated, self.run_id, status=status, end_time=self.record["end_time"])
        except Exception as e:
            log.warning("MLflow set_terminated(%s, %s) failed: %s", self.run_id, status, e)

    def __enter__(self) -> Tracker:
        self._sigterm = threading.current_thread() is threading.main_thread()  # handlers live in the main thread
        if self._sigterm:
            self._old_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._sigterm:  # the handler found at __enter__ (None: one not set from Python, the default)
            signal.signal(signal.SIGTERM, self._old_sigterm if self._old_sigterm is not None else signal.SIG_DFL)
        if exc_type is None:
            self.finish("FINISHED")
            return
        killed = isinstance(exc, Terminated | KeyboardInterrupt)
        if isinstance(exc, KeyboardInterrupt):
            log.warning("%s: interrupted (SIGINT) at step %d; MLflow run %s ends KILLED; rerun the same command to "
                        "resume from its last checkpoint", self.run_dir, self.last_step, self.run_id)
        try:
            self.finish("KILLED" if killed else "FAILED")
        except OperationalError as e:  # the original error matters more
            log.warning("%s", e)


class NullTracker:
    """A :class:`Tracker` that records nothing: the tracker of every rank but 0 of a run across processes
    (spolab.dist), whose metrics rank 0 logs once, already reduced over the ranks."""

    resumed = False
    run_id = None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def flush(self, *, raise_errors: bool = False) -> None:
        pass

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Terminated(SystemExit):
    """Raised by the SIGTERM handler inside ``with tracker:``: unwinds the job (the tracker marks its run
    KILLED) and exits with status 143 (128 + SIGTERM), like the default action, without a traceback."""


def _on_sigterm(signum: int, frame: Any) -> None:
    log.warning("received SIGTERM (terminated, e.g. by the scheduler): stopping; the MLflow run ends KILLED; "
                "rerun the same command to resume from the last checkpoint")
    raise Terminated(128 + signum)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _relative(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run folder when inside it (a record that survives moving the folder)."""
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _read_record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _supersede(client: MlflowClient, old, new_id: str) -> None:
    """Soft-delete a folder's previous MLflow run, tagged with its successor; a run left RUNNING by a
    killed job is first marked KILLED (never RUNNING forever)."""
    if old.info.status == "RUNNING":
        _retry(client.set_terminated, old.info.run_id, status="KILLED")
    _retry(client.set_tag, old.info.run_id, "superseded_by", new_id)
    _retry(client.delete_run, old.info.run_id)
    log.info("MLflow run %s of this folder superseded by %s (soft-deleted)", old.info.run_id, new_id)


def sync(run_dir: str | os.PathLike[str]) -> int:
    """Replay a run folder's metrics.jsonl into its MLflow run (whatever MLflow lacks); returns the
    number of points sent. The folder's ``mlflow_run_id`` file names the run and the database."""
    run_id, uri = run_link(run_dir)
    client = _existing_client(uri)
    _get_run(client, run_id, uri, run_dir)
    try:
        return _replay(client, run_id, read_metrics(run_dir), mlflow_points(client, run_id))
    except Exception as e:
        raise _operational(uri, f"replaying {run_dir}", e) from e


def run_folders(root: str | os.PathLike[str]) -> list[Path]:
    """The run folders at or under ``root``: every folder holding a config.yaml and a metrics.jsonl."""
    root = Path(root)
    if (root / CONFIG_FILE).exists() and (root / METRICS_FILE).exists():
        return [root]
    return sorted(p.parent for p in root.rglob(METRICS_FILE) if (p.parent / CONFIG_FILE).exists())


def rebuild(run_dir: str | os.PathLike[str], uri: str | None = None, *, force: bool = False) -> str:
    """Make MLflow mirror one run folder again, from the folder alone; returns what was done.

    The folder's run is kept when it exists in the database and mirrors metrics.jsonl exactly (and
    ``force`` is off). Otherwise a new run is created with the folder's run name, tags, start and end
    times and status (``tracking.json``), its params (``config.yaml`` minus ``tracking``, as the
    tracker logs them), every point of metrics.jsonl with its time, and its artifacts; a previous run
    of the folder still in the database is superseded. ``uri`` defaults to the database the run was
    tracked in (tracking.json); a run tracked with ``tracking.uri=null`` needs it."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    run_dir = Path(run_dir)
    record = _read_record(run_dir)  # {} for a folder written before tracking.json existed
    cfg = to_container(OmegaConf.load(run_dir / CONFIG_FILE))
    track = cfg.get("tracking") or {}
    linked = run_link(run_dir)[1] if (run_dir / RUN_ID_FILE).exists() else None
    uri = uri or record.get("uri") or linked or track.get("uri")
    if not uri:
        raise OperationalError(f"{run_dir} was tracked with tracking.uri=null: give the database to rebuild it into "
                               "(--uri sqlite:///results/mlflow.db)")
    uri = _abs_sqlite_uri(uri)
    rows = read_metrics(run_dir)
    try:
        client = _client(uri)
        old = None
        if (run_dir / RUN_ID_FILE).exists():
            try:
                old = _retry(client.get_run, run_link(run_dir)[0])
                old = None if old.info.lifecycle_stage == "deleted" else old
            except MlflowException:
                old = None
        if old is not None and not force:
            if old.info.status == "RUNNING" and record.get("status", "RUNNING") == "RUNNING":
                return f"left alone: {old.info.run_id} is RUNNING (a job still writing it, or killed: rerun that job)"
            if (old.info.status == record.get("status", old.info.status)
                    and mlflow_points(client, old.info.run_id) == points(rows)):
                return f"kept {old.info.run_id} (mirrors the folder)"
        if not record:
            raise OperationalError(f"{run_dir} has no readable {RECORD_FILE} (its run name and tags): it was written "
                                   "by an older spolab and cannot be rebuilt; rerun that job")
        exp_id = init_mlflow(uri, record["experiment"], record["artifact_root"])
        tags = {**record["tags"], "run_dir": str(run_dir.resolve())}
        run = _retry(client.create_run, exp_id, run_name=record["run_name"], tags=tags,
                     start_time=record.get("start_time"))
        run_id = run.info.run_id
        params = [Param(mlflow_key(k), v) for k, v in flatten({k: v for k, v in cfg.items()
                                                               if k != "tracking"}).items()]
        for chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
            _retry(client.log_batch, run_id, params=chunk, synchronous=True)
        n = _replay(client, run_id, rows, Counter())
        files = [(run_dir / CONFIG_FILE, None)]
        files += [((run_dir / rel) if not Path(rel).is_absolute() else Path(rel), where)
                  for rel, where in record.get("artifacts", [])]
        if record.get("status", "RUNNING") != "RUNNING":  # finish() logged these two
            files += [(run_dir / METRICS_FILE, None), (run_dir / SUMMARY_FILE, None)]
        for f, where in files:
            if f.exists():
                _retry(client.log_artifact, run_id, str(f), where)
        status = record.get("status", "KILLED")
        status = "KILLED" if status == "RUNNING" else status  # the job that wrote the folder is gone
        _retry(client.set_terminated, run_id, status=status, end_time=record.get("end_time"))
        if old is not None:
            _supersede(client, old, run_id)
    except SpolabError:
        raise
    except Exception as e:
        raise _operational(uri, f"rebuilding the run of {run_dir}", e) from e
    write_text(run_dir / RUN_ID_FILE, f"{run_id}\n{uri}\n")
    return f"rebuilt as {run_id} ({n} points, {status})"


def db_stamp(uri: str) -> str | None:
    """What identifies the database of ``uri``: ``<device>:<inode>`` of a sqlite file (the same while the
    file lives, new once it is deleted and recreated), None when the file is missing; the URI itself for
    another store. The DAG's mirror flag holds it (workflow/rules/mlflow.smk)."""
    path = _sqlite_path(_abs_sqlite_uri(uri))
    if path is None:
        return uri
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def rebuild_all(root: str | os.PathLike[str], uri: str | None = None, *, force: bool = False) -> dict[Path, str]:
    """:func:`rebuild` every run folder at or under ``root`` (``results/<scale>``)."""
    folders = run_folders(root)
    if not folders:
        raise OperationalError(f"no run folders (config.yaml + metrics.jsonl) at or under {root}")
    done, failed = {}, {}
    for d in folders:  # every folder is tried; the failures are reported together
        try:
            done[d] = rebuild(d, uri, force=force)
        except OperationalError as e:
            failed[d] = str(e)
            log.warning("%s", e)
    if failed:
        first = next(iter(failed.values()))
        raise OperationalError(f"{len(failed)} of {len(folders)} run folders under {root} could not be rebuilt "
                               f"(the others were: {len(done)}); the first: {first}")
    return done


def _main(argv: list[str] | None = None) -> None:
    """``python -m spolab.tracking init|sync|verify|rebuild ...``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m spolab.tracking")
    sub = ap.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init", help="create the MLflow DB and experiment (safe to run in parallel)")
    init.add_argument("--uri", default=DEFAULT_TRACKING_URI)
    init.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    init.add_argument("--artifact-root", default=DEFAULT_ARTIFACT_ROOT)
    for name, text in (("sync", "replay run folders' metrics.jsonl into MLflow"),
                       ("verify", "check that MLflow mirrors run folders' metrics.jsonl exactly")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dirs", nargs="+", type=Path)
    rb = sub.add_parser("rebuild", help="recreate the MLflow runs of run folders (results/<scale>, or run folders) "
                        "from config.yaml, metrics.jsonl and tracking.json; runs that mirror their folder are kept")
    rb.add_argument("paths", nargs="+", type=Path)
    rb.add_argument("--uri", default=None, help="database to rebuild into (default: each run's config.yaml; "
                    "needed for runs tracked with tracking.uri=null)")
    rb.add_argument("--force", action="store_true", help="recreate runs even when they mirror their folder")
    rb.add_argument("--stamp", type=Path, default=None, help="when done, write the database's identity "
                    "(db_stamp) to this file (the DAG's mirror flag)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "init":
            try:
                exp_id = init_mlflow(args.uri, args.experiment, args.artifact_root)
            except Exception as e:
                raise _operational(args.uri, "creating the database and experiment", e) from e
            print(f"MLflow ready: {args.uri} experiment {args.experiment!r} (id {exp_id})")
        elif args.cmd == "sync":
            for d in args.run_dirs:
                print(f"{d}: replayed {sync(d)} points")
        elif args.cmd == "rebuild":
            for path in args.paths:
                for d, what in rebuild_all(path, args.uri, force=args.force).items():
                    print(f"{d}: {what}")
            if args.stamp is not None:
                write_text(args.stamp, f"{db_stamp(args.uri or DEFAULT_TRACKING_URI)}\n")
        else:
            bad = {d: verify_mirror(d) for d in args.run_dirs}
            for d, diff in bad.items():
                print(f"{d}: " + ("mirror exact" if not diff else f"{len(diff)} differences, e.g. {diff[0]}"))
            if any(bad.values()):
                raise SystemExit(1)
    except SpolabError as e:
        if os.environ.get("SPOLAB_DEBUG") == "1":
            raise
        print(f"spolab.tracking: {e.kind}: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    _main()
