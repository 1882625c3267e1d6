"""The ``main`` of every ``python -m spolab.<step>``: Hydra composition, then ``run(cfg)``.

A :class:`~spolab.errors.SpolabError` (a bad configuration value, a missing input, an
operational failure), an ``OSError`` with errno ENOSPC (or EDQUOT) anywhere in the exception chain (in the
step or in Hydra's own writes to the run folder) and a bad Hydra override become ONE line on
stderr, ``spolab.<step>: <kind>: <message>``, and exit status 2, without a traceback.
``SPOLAB_DEBUG=1`` re-raises them instead, so the traceback is shown (exit status 1). Anything
else is a bug and keeps its traceback. A YAML syntax error in a config file is one line too, naming
the file, line and column.

Before Hydra starts the job (and creates the run folder, its ``.hydra/`` and its log), a single run
is composed and checked once: a key the entry does not declare (:func:`spolab.config.check_keys`) and
every value and input (:func:`spolab.validate.validate`). A run that fails there leaves nothing behind.
A single run then holds its ``out_dir``'s lock (:mod:`spolab.runlock`) until it ends: a second process
on the same folder stops at once with one line naming the holder's pid.

Launched by torchrun across W processes (:mod:`spolab.dist`; only the entries of ``spolab.dist.ENTRIES``,
the others refuse it), rank 0 alone holds the lock and writes Hydra's ``.hydra/`` and log file; the other
ranks write nothing there and log warnings only.

A Hydra multirun (``python -m spolab.<step> -m key=a,b``) keeps every job: each gets its own folder
``<out_dir>/<override_dirname>`` (``hydra.sweep.dir=${out_dir}``, ``hydra.sweep.subdir=
${hydra.job.override_dirname}``, the swept overrides only, e.g. ``algo.beta=0.05``), which becomes
the job's ``out_dir``; an entry with a ``name`` (its MLflow run name) becomes ``<name>,<override_dirname>``
(``spo-online-s0,algo.beta=0.05``). Hydra's ``multirun.yaml`` lands in ``<out_dir>``. A single run
(every Snakemake job) is left exactly as composed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
from collections.abc import Callable, Iterator

import hydra
from hydra._internal.utils import get_args_parser  # the parser @hydra.main itself reads sys.argv with
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from spolab import dist
from spolab.config import CONF_DIR, check_keys, entry_config, own_keys
from spolab.errors import ConfigError, OperationalError, SpolabError, causes, disk_full_error
from spolab.runlock import check_free, run_lock
from spolab.validate import ENTRIES, validate

DEBUG_ENV = "SPOLAB_DEBUG"
EXIT_STATUS = 2


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def file_of(e: OSError) -> str | None:
    """The file an OSError is about: ``e.filename``, else (a failed ``write``/``close`` carries no
    name) the innermost open file object among the locals of the frames it went through."""
    if e.filename is not None:
        return str(e.filename)
    tb, name = e.__traceback__, None
    while tb is not None:
        for v in tb.tb_frame.f_locals.values():
            if isinstance(v, io.IOBase) and isinstance(getattr(v, "name", None), str):
                name = v.name
        tb = tb.tb_next
    return name


def yaml_error(e: BaseException) -> ConfigError | None:
    """A YAML syntax error anywhere in ``e``'s chain, as one line: file, line, column, what the parser
    expected."""
    import yaml

    err = next((c for c in causes(e) if isinstance(c, yaml.MarkedYAMLError)), None)
    if err is None:
        return None
    mark = err.problem_mark or err.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
    what = " ".join(str(err.problem or err).split())
    if err.context and err.context_mark is not None:
        what += f" ({err.context} at line {err.context_mark.line + 1}, column {err.context_mark.column + 1})"
    return ConfigError(f"{where}: YAML syntax error: {what}")


def as_reportable(e: BaseException) -> SpolabError | None:
    """The one-line error ``e`` stands for, or None when it is not one (a bug: keep the traceback)."""
    if isinstance(e, SpolabError):
        return e
    bad_yaml = yaml_error(e)
    if bad_yaml is not None:
        return bad_yaml
    full = disk_full_error(e)
    if full is not None:
        where = file_of(full) or "a file (name unknown)"
        return OperationalError(f"no space left on device (ENOSPC) writing {where}: free space on that disk "
                                "(or point out_dir / tracking at another one) and rerun the same command")
    if isinstance(e, CompactHydraException):  # a bad override or config group: Hydra's message, on one line
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        if "Config search path:" in lines:
            lines = lines[: lines.index("Config search path:")]
        msg = ""
        for line in lines:
            msg += ("" if not msg else " " if msg.endswith((".", ":", ";")) else "; ") + line
        cause = str(e.__cause__ or "").strip()
        return ConfigError(msg + (f" ({cause.splitlines()[0]})" if cause else ""))
    return None


def one_line(prog: str, e: SpolabError) -> str:
    return f"{prog}: {e.kind}: {' '.join(str(e).split())}"


@contextlib.contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """Turn a reportable error (see :func:`as_reportable`) into one stderr line and exit status 2."""
    try:
        yield
    except Exception as e:
        err = as_reportable(e)
        if err is None or debug():
            raise
        print(one_line(prog, err), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS) from None  # a BaseException: Hydra lets it through untouched


def sweep_overrides(config_name: str, argv: list[str]) -> list[str]:
    """The Hydra settings that give each job of a multirun (``-m``) of an entry with ``out_dir`` its own
    folder, as overrides to append to ``argv``; [] for a single run. Every task override that is not
    swept (``scale=smoke``, paths) is excluded from ``hydra.job.override_dirname``, so a job is named by
    its swept values only. Settings the command line gives itself win; a bad override is left to Hydra
    to report."""
    args, _ = get_args_parser().parse_known_args(argv)
    if not args.multirun or "out_dir" not in own_keys(config_name):
        return []
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:
        return []
    given = {o.key_or_group for o in parsed if o.is_hydra_override()}
    fixed = sorted({o.key_or_group for o in parsed if not (o.is_hydra_override() or o.is_sweep_override())})
    layout = {"hydra.sweep.dir": "${out_dir}",  # multirun.yaml here, a sub-folder per job (not ./multirun)
              "hydra.sweep.subdir": "${hydra.job.override_dirname}",
              "hydra.job.config.override_dirname.exclude_keys": f"[{','.join(fixed)}]"}
    return [f"{k}={v}" for k, v in layout.items() if k not in given]


def preflight(config_name: str, argv: list[str]) -> DictConfig | None:
    """Compose a single run as Hydra will and check it (undeclared keys, values, inputs) before Hydra
    creates anything; returns its config. A multirun, ``--cfg``, ``--help`` and other Hydra modes are
    left to Hydra (None)."""
    args, _ = get_args_parser().parse_known_args(argv)
    if any((args.multirun, args.cfg, args.help, args.hydra_help, args.info, args.shell_completion, args.config_path,
            args.config_name, args.config_dir, args.experimental_rerun)):
        return None
    cfg = check_keys(config_name, args.overrides)
    if "out_dir" in cfg and dist.rank() == 0:  # across processes rank 0 takes the lock for all of them
        check_free(cfg.out_dir)  # a second writer stops before the slower checks below
    if config_name in ENTRIES:
        validate(cfg, config_name)
    return cfg


def sweep_job(cfg: DictConfig) -> DictConfig:
    """``cfg`` of one multirun job: ``out_dir`` = the job's Hydra output folder, ``name`` (where the entry
    has one) suffixed with the job's ``override_dirname``. A single run is returned unchanged."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return cfg
    swept = hc.job.override_dirname  # "algo.beta=0.05" ("" for a multirun without a sweep)
    if "out_dir" in cfg:
        cfg.out_dir = hc.runtime.output_dir  # hydra.sweep.dir/hydra.sweep.subdir, absolute
    if "name" in cfg and swept:
        cfg.name = f"{cfg.name},{swept}"
    return cfg


def entry(config_name: str, run: Callable[[DictConfig], object]) -> Callable[[], None]:
    """``main`` for ``python -m spolab.<config_name>``: ``@hydra.main`` on conf/<config_name>.yaml
    calling ``run(cfg)``, with the one-line error report and the multirun layout above."""
    prog = f"spolab.{config_name}"

    @functools.wraps(run)  # Hydra unwraps to ``run``: the job (and its log file) keeps the module's name
    def task(cfg: DictConfig) -> None:
        with one_line_errors(prog):  # inside the job, so Hydra adds no "Error executing job" line
            # only this entry's keys (the scale sets every entry's); a multirun job's own folder and name
            run(sweep_job(entry_config(cfg, config_name)))

    hydra_main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)

    @functools.wraps(hydra_main)
    def main() -> None:
        saved = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its own errors (overrides, a full disk) to us
        argv = sys.argv
        try:
            with one_line_errors(prog):
                launched = dist.launched_world_size()
                if launched > 1 and config_name not in dist.ENTRIES:
                    raise ConfigError(f"{launched} processes were launched, but spolab.{config_name} runs in one: "
                                      f"launch it with `python -m spolab.{config_name}` (torchrun runs "
                                      f"{', '.join(f'spolab.{e}' for e in dist.ENTRIES)})")
                cfg = preflight(config_name, argv[1:])  # nothing written yet: a bad run leaves no folder behind
                # @hydra.main reads sys.argv; a rank other than 0 leaves the run folder to rank 0
                quiet = ["hydra.output_subdir=null", "hydra/job_logging=disabled"] if dist.rank() > 0 else []
                sys.argv = [*argv, *sweep_overrides(config_name, argv[1:]), *quiet]
                folder = cfg.out_dir if cfg is not None and "out_dir" in cfg and dist.rank() == 0 else None
                with run_lock(folder) if folder else contextlib.nullcontext():  # one writer per run folder
                    hydra_main()
        finally:
            sys.argv = argv
            if saved is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = saved

    return main
