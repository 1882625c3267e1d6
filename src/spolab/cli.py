"""The ``main`` of every ``python -m spolab.<step>``: Hydra composition, then ``run(cfg)``.

A :class:`~spolab.errors.SpolabError` (a bad configuration value, a missing input, an
operational failure), an ``OSError`` with errno ENOSPC (or EDQUOT) anywhere in the exception chain (in the
step or in Hydra's own writes to the run folder) and a bad Hydra override become ONE line on
stderr, ``spolab.<step>: <kind>: <message>``, and exit status 2, without a traceback.
``SPOLAB_DEBUG=1`` re-raises them instead, so the traceback is shown (exit status 1). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
from collections.abc import Callable, Iterator

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from spolab.config import CONF_DIR, entry_config
from spolab.errors import ConfigError, OperationalError, SpolabError, disk_full_error

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


def as_reportable(e: BaseException) -> SpolabError | None:
    """The one-line error ``e`` stands for, or None when it is not one (a bug: keep the traceback)."""
    if isinstance(e, SpolabError):
        return e
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


def entry(config_name: str, run: Callable[[DictConfig], object]) -> Callable[[], None]:
    """``main`` for ``python -m spolab.<config_name>``: ``@hydra.main`` on conf/<config_name>.yaml
    calling ``run(cfg)``, with the one-line error report above."""
    prog = f"spolab.{config_name}"

    @functools.wraps(run)  # Hydra unwraps to ``run``: the job (and its log file) keeps the module's name
    def task(cfg: DictConfig) -> None:
        with one_line_errors(prog):  # inside the job, so Hydra adds no "Error executing job" line
            run(entry_config(cfg, config_name))  # only this entry's keys (the scale sets every entry's)

    hydra_main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)

    @functools.wraps(hydra_main)
    def main() -> None:
        saved = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its own errors (overrides, a full disk) to us
        try:
            with one_line_errors(prog):
                hydra_main()
        finally:
            if saved is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = saved

    return main
