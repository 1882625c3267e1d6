"""Per-run experiment tracking: local ``metrics.jsonl``/``config.yaml`` plus an MLflow mirror.

Every run (one Hydra job, one run folder) writes its own files, which are the source of truth.
When a tracking URI is given, the same data is mirrored into MLflow (sqlite backend by default)
through an explicit ``MlflowClient``; no MLflow global state (``set_tracking_uri``,
``start_run``) is touched, so several trackers and processes can share one database.

Call :func:`init_mlflow` once before parallel jobs start, so that jobs never race on creating
or migrating the sqlite database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

__all__ = [
    "DEFAULT_ARTIFACT_ROOT",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "Tracker",
    "config_hash",
    "flatten",
    "git_sha",
    "init_mlflow",
    "mlflow_key",
    "read_metrics",
]

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
DEFAULT_EXPERIMENT = "spolab"
DEFAULT_ARTIFACT_ROOT = "results/mlartifacts"

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
RUN_ID_FILE = "mlflow_run_id"

# MLflow limits (mlflow.utils.validation, MLflow 3.x).
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250

_RESERVED_KEYS = frozenset({"step", "time"})
_INVALID_KEY_CHARS = re.compile(r"[^/\w.\- :]")

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def _quiet_mlflow_env() -> None:
    """Default MLflow's env switches to quiet/offline (only where the user has not set them)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _abs_sqlite_uri(uri: str) -> str:
    """Make a relative ``sqlite:///path`` URI absolute (relative to the current directory)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = uri[len(prefix) :]
        if path and not path.startswith("/") and not path.startswith(":memory:"):
            return prefix + str(Path(path).resolve())
    return uri


def _is_lock_error(exc: BaseException) -> bool:
    """True when ``exc`` or its cause chain is a transient sqlite 'database is locked'."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if "locked" in str(e).lower():  # sqlite3/sqlalchemy OperationalError, MlflowException
            return True
        e = e.__cause__ or e.__context__
    return False


def _retry(fn: Callable[..., T], *args: Any, attempts: int = 8, base_delay: float = 0.1, **kwargs: Any) -> T:
    """Call ``fn`` retrying sqlite lock errors with jittered exponential backoff."""
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


def _client(tracking_uri: str) -> MlflowClient:
    _quiet_mlflow_env()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _chunks(seq: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _to_container(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _json_safe(v: Any) -> Any:
    """Metric value for jsonl: ints stay ints, floats finite or ``None``."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int):
        return v
    f = float(v)
    return f if math.isfinite(f) else None


def mlflow_key(key: str) -> str:
    """Sanitise a metric/param/tag key for MLflow (``@`` -> ``_at_``, bad chars -> ``_``).

    MLflow keys may hold only ``[/\\w.\\- :]``, must be path-normalised (no ``//``, ``.``/``..``
    segments, leading or trailing ``/``) and at most 250 characters.
    """
    k = _INVALID_KEY_CHARS.sub("_", str(key).replace("@", "_at_"))
    parts = [{".": "_", "..": "__"}.get(p, p) for p in k.split("/") if p]
    k = "/".join(parts)[:MAX_KEY_LENGTH].rstrip("/") or "_"
    return k


# --------------------------------------------------------------------------- public helpers


def init_mlflow(tracking_uri: str, experiment: str, artifact_root: str) -> str:
    """Create the MLflow DB (running migrations) and ``experiment`` if missing; return its id.

    The experiment's artifact location is ``file://<abs artifact_root>/<experiment>``.
    Idempotent; call once before parallel jobs start.
    """
    from mlflow.exceptions import MlflowException

    client = _retry(_client, _abs_sqlite_uri(tracking_uri))
    exp = _retry(client.get_experiment_by_name, experiment)
    if exp is None:
        location = (Path(artifact_root).resolve() / experiment).as_uri()
        try:
            return _retry(client.create_experiment, experiment, artifact_location=location)
        except MlflowException as e:  # created concurrently by someone else
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise e
    if exp.lifecycle_stage == "deleted":
        _retry(client.restore_experiment, exp.experiment_id)
    return exp.experiment_id


def flatten(d: Mapping[str, Any] | DictConfig, prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Flatten nested dicts/lists into ``{"a.b.0": "value"}`` with stringified, truncated values."""
    out: dict[str, str] = {}

    def rec(obj: Any, key: str) -> None:
        if isinstance(obj, Mapping) and obj:
            for k, v in obj.items():
                rec(v, f"{key}{sep}{k}" if key else str(k))
        elif isinstance(obj, list | tuple) and obj:
            for i, v in enumerate(obj):
                rec(v, f"{key}{sep}{i}" if key else str(i))
        else:
            if isinstance(obj, Mapping):
                s = "{}"
            elif isinstance(obj, list | tuple):
                s = "[]"
            else:
                s = str(obj)
            out[key] = s[:MAX_PARAM_VAL_LENGTH]

    rec(_to_container(d), prefix)
    return out


def config_hash(cfg: Any) -> str:
    """12-hex sha256 of the resolved config serialised as sorted JSON."""
    blob = json.dumps(_to_container(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def git_sha(path: str | os.PathLike[str] | None = None) -> str:
    """Short (12 hex) HEAD commit of the repo containing ``path`` (default: this file), or ``"unknown"``.

    Reads ``.git`` directly (loose refs, packed-refs, worktrees); never spawns git, never raises.
    """
    try:
        here = Path(path if path is not None else __file__).resolve()
        here = here if here.is_dir() else here.parent
        for d in (here, *here.parents):
            dotgit = d / ".git"
            if dotgit.is_file():  # worktree / submodule: "gitdir: <path>"
                gitdir = Path(dotgit.read_text().split("gitdir:", 1)[1].strip())
                gitdir = gitdir if gitdir.is_absolute() else (d / gitdir).resolve()
                break
            if dotgit.is_dir():
                gitdir = dotgit
                break
        else:
            return "unknown"
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            sha = head
        else:
            ref = head[4:].strip()
            sha = ""
            for base in (gitdir, common):
                if (base / ref).is_file():
                    sha = (base / ref).read_text().strip()
                    break
            else:
                packed = common / "packed-refs"
                if packed.is_file():
                    for line in packed.read_text().splitlines():
                        parts = line.split()
                        if len(parts) == 2 and parts[1] == ref:
                            sha = parts[0]
                            break
        if re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", sha):
            return sha[:12]
    except Exception:
        pass
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


# --------------------------------------------------------------------------- tracker


class Tracker:
    """Writes ``config.yaml``/``metrics.jsonl``/``summary.json`` into ``run_dir``, mirrored to MLflow.

    ``tracking_uri=None`` disables MLflow (local files only). The MLflow run id is kept in
    ``run_dir/mlflow_run_id``; constructing a tracker on the same ``run_dir`` again reopens
    that run (resume). Use as a context manager to get status FAILED on exceptions.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        cfg: Mapping[str, Any] | DictConfig,
        *,
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
        self.cfg = _to_container(cfg)
        self.config_hash = config_hash(self.cfg)
        self.git_sha = git_sha()
        self._finished = False
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

        config_path = self.run_dir / CONFIG_FILE
        tmp = config_path.with_suffix(".yaml.tmp")
        OmegaConf.save(config=OmegaConf.create(self.cfg), f=tmp, resolve=True)
        os.replace(tmp, config_path)

        prev = read_metrics(self.run_dir)
        self.last_step: int = max((int(r["step"]) for r in prev if "step" in r), default=0)
        self._at_last_step: dict[str, Any] = {}  # values logged at last_step (log_summary skips repeats)
        metrics_path = self.run_dir / METRICS_FILE
        self._fh = metrics_path.open("a")
        if metrics_path.stat().st_size:
            with metrics_path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._fh.write("\n")  # terminate a torn line left by a killed job

        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.resumed = False
        if tracking_uri is None:
            return

        from mlflow.entities import Param, RunTag

        tracking_uri = _abs_sqlite_uri(tracking_uri)
        exp_id = init_mlflow(tracking_uri, experiment, str(artifact_root))
        self.client = client = _client(tracking_uri)
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        all_tags |= {
            "git_sha": self.git_sha,
            "config_hash": self.config_hash,
            "run_dir": str(self.run_dir.resolve()),
        }
        all_tags = {mlflow_key(k): v[:MAX_TAG_VAL_LENGTH] for k, v in all_tags.items()}
        params = {mlflow_key(k): v for k, v in flatten(self.cfg).items()}

        existing_params: dict[str, str] = {}
        run = self._existing_run()
        if run is not None:
            self.run_id = run.info.run_id
            self.resumed = True
            _retry(client.update_run, self.run_id, status="RUNNING")
            existing_params = dict(run.data.params)
            changed = [k for k, v in params.items() if k in existing_params and existing_params[k] != v]
            if changed:
                log.warning("resumed run %s: params changed, keeping old values: %s", self.run_id, changed)
        else:
            run = _retry(client.create_run, exp_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
            tmp_id = self.run_dir / (RUN_ID_FILE + ".tmp")
            tmp_id.write_text(self.run_id + "\n")
            os.replace(tmp_id, self.run_dir / RUN_ID_FILE)

        tag_objs = [RunTag(k, v) for k, v in all_tags.items()]
        param_objs = [Param(k, v) for k, v in params.items() if k not in existing_params]
        for chunk in _chunks(tag_objs, MAX_PARAMS_PER_BATCH):
            _retry(client.log_batch, self.run_id, tags=chunk, synchronous=True)
        for chunk in _chunks(param_objs, MAX_PARAMS_PER_BATCH):
            _retry(client.log_batch, self.run_id, params=chunk, synchronous=True)
        self.log_artifact(config_path)

    @classmethod
    def from_config(cls, run_dir, cfg, *, run_name: str, tags: Mapping[str, Any]) -> Tracker:
        """A tracker for a run whose config has the ``tracking`` group (conf/tracking/*.yaml)."""
        t = cfg.tracking
        return cls(run_dir, cfg, run_name=run_name, tags=tags, tracking_uri=t.uri, experiment=t.experiment,
                   artifact_root=t.artifact_root, flush_every_s=t.flush_every_s)

    def _existing_run(self) -> Any:
        """The MLflow run named in ``run_dir/mlflow_run_id`` if it exists and is not deleted."""
        from mlflow.exceptions import MlflowException

        assert self.client is not None
        id_file = self.run_dir / RUN_ID_FILE
        if not id_file.exists():
            return None
        run_id = id_file.read_text().strip()
        try:
            run = _retry(self.client.get_run, run_id)
        except MlflowException:
            log.warning("run id %s from %s not in MLflow DB; starting a new run", run_id, id_file)
            return None
        if run.info.lifecycle_stage == "deleted":
            log.warning("MLflow run %s was deleted; starting a new run", run_id)
            return None
        return run

    # ------------------------------------------------------------------ logging

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Append ``{"step", "time", **metrics}`` to metrics.jsonl and buffer them for MLflow."""
        if self._finished:
            raise RuntimeError("Tracker.log() after finish()")
        bad = _RESERVED_KEYS.intersection(metrics)
        if bad:
            raise ValueError(f"metric keys {sorted(bad)} are reserved")
        now = time.time()
        step = int(step)
        values = {str(k): _json_safe(v) for k, v in metrics.items()}
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
        self._buffer.extend(
            Metric(mlflow_key(k), float(v), ts, step) for k, v in values.items() if v is not None
        )
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def truncate_after(self, step: int) -> None:
        """Drop metrics.jsonl lines logged after ``step`` (a resumed run replays those steps)."""
        self._fh.close()
        path = self.run_dir / METRICS_FILE
        rows = [r for r in read_metrics(self.run_dir) if r["step"] <= step]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
        self._fh = path.open("a")
        self.last_step = step
        self._at_last_step = {}

    def flush(self, *, raise_errors: bool = False) -> None:
        """Send buffered metrics to MLflow; on persistent failure warn and keep them buffered."""
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
                raise
            log.warning("MLflow metric flush failed (%d buffered, will retry): %s", len(self._buffer), e)

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Log final metrics at the last step to MLflow and write ``summary.json``."""
        values = {str(k): _json_safe(v) for k, v in metrics.items()}
        path = self.run_dir / SUMMARY_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        if self.client is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._buffer.extend(  # a value already logged at the last step keeps a single point in its history
            Metric(mlflow_key(k), float(v), ts, self.last_step)
            for k, v in values.items()
            if v is not None and self._at_last_step.get(k) != v
        )
        self.flush()

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a local file into the MLflow run's artifacts (no-op without MLflow)."""
        if self.client is None:
            return
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as e:
            log.warning("MLflow log_artifact(%s) failed: %s", path, e)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush, mirror metrics.jsonl/summary.json as artifacts, and terminate the run. Idempotent."""
        if self._finished:
            return
        self._finished = True
        self._fh.close()
        if self.client is None:
            return
        self.flush()
        for name in (METRICS_FILE, SUMMARY_FILE):
            if (self.run_dir / name).exists():
                self.log_artifact(self.run_dir / name)
        try:
            _retry(self.client.set_terminated, self.run_id, status=status)
        except Exception as e:
            log.warning("MLflow set_terminated(%s, %s) failed: %s", self.run_id, status, e)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish("FINISHED" if exc_type is None else "FAILED")


def _main(argv: list[str] | None = None) -> None:
    """``python -m spolab.tracking init --uri ... --experiment ... --artifact-root ...``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m spolab.tracking")
    sub = ap.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init", help="create the MLflow DB and experiment (run once before parallel jobs)")
    init.add_argument("--uri", default=DEFAULT_TRACKING_URI)
    init.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    init.add_argument("--artifact-root", default=DEFAULT_ARTIFACT_ROOT)
    args = ap.parse_args(argv)
    exp_id = init_mlflow(args.uri, args.experiment, args.artifact_root)
    print(f"MLflow ready: {args.uri} experiment {args.experiment!r} (id {exp_id})")


if __name__ == "__main__":
    _main()
