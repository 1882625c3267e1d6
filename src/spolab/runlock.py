"""One writer per run folder: an advisory lock that ``python -m spolab.<step>`` holds on its ``out_dir``.

The lock is ``<out_dir>/.spolab.lock``, locked with ``fcntl.flock`` on an open file descriptor and
holding the pid of its holder. The kernel releases a flock when its holder exits, however it exits
(a crash, SIGKILL, the machine's OOM killer), so a lock whose holder is gone is simply taken over;
the file itself stays (removing it would let a third process lock a new file beside a second one
that still holds the old). A second process on a folder whose lock is held stops at once with one
line naming the folder and the holder's pid (:class:`RunLocked`, exit status 2, spolab.cli),
before it writes anything there: two runs in one folder would overwrite each other's checkpoints,
interleave their metrics rows and leave one config.yaml for both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from spolab.errors import SpolabError

LOCK_FILE = ".spolab.lock"


class RunLocked(SpolabError):
    """Another live process holds the run folder's lock."""

    kind = "run folder in use"


def _holder(path: Path) -> str:
    """The pid recorded in a lock file, and its command line where /proc has it."""
    try:
        pid = path.read_text().split()[0]
    except (OSError, IndexError):
        return "pid unknown"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"pid {pid}" + (f": {cmd[:160]}" if cmd else "")


def _refuse(folder: Path, path: Path) -> RunLocked:
    return RunLocked(f"{folder.resolve()} is being written by another process ({_holder(path)}): one run per "
                     "folder; wait for it to end, stop it, or give this run another out_dir")


def check_free(folder: str | os.PathLike[str]) -> None:
    """RunLocked when a live process holds ``folder``'s lock; creates nothing (a check before the slower
    start-up work, so a second writer stops at once; :func:`run_lock` is what excludes)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or no folder): nobody holds it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refuse(Path(folder), path) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``<folder>/.spolab.lock`` for the duration (creating the folder); RunLocked when another
    live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # O_CLOEXEC (Python's default): no child inherits it
    try:
        for attempt in range(3):  # a few tries: another process's check_free holds a shared lock for microseconds
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 2:
                    raise _refuse(folder, path) from None
                time.sleep(0.05)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
        except OSError as e:  # a full disk: name the file (spolab.cli reports ENOSPC with it)
            raise OSError(e.errno, e.strerror, str(path)) from e
        yield path
    finally:
        os.close(fd)  # releases the flock
