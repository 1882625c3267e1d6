"""Unprivileged uids for runs started as root: a pool of slots, one flock each, and the sweep of
what a slot's uid left in the world-writable temp directories (fallback mode)."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import stat
import tempfile
import time

from spolab.sandbox.procs import kill_uid

UID_SLOTS = int(os.environ.get("SPOLAB_SANDBOX_UID_SLOTS", "256"))


def _uid_base() -> int:
    return int(os.environ.get("SPOLAB_SANDBOX_UID_BASE", "2000000000"))


def _slot_dir() -> str:
    for parent in ("/run", tempfile.gettempdir()):
        path = os.path.join(parent, "spolab-sandbox-slots")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
            return path
    raise OSError("no safe directory for the sandbox uid slot locks")


class UidSlot:
    """An unprivileged uid held exclusively (flock) for one run, across threads and processes."""

    def __init__(self, wait_s: float = 60.0):
        self.uid: int | None = None
        self._fd: int | None = None
        self._wait_s = wait_s

    def __enter__(self) -> UidSlot:
        directory, base = _slot_dir(), _uid_base()
        deadline = time.monotonic() + self._wait_s
        while True:
            start = random.randrange(UID_SLOTS)
            for i in range(UID_SLOTS):
                uid = base + (start + i) % UID_SLOTS
                fd = os.open(
                    os.path.join(directory, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.uid, self._fd = uid, fd
                kill_uid(uid)  # leftovers of a run whose parent crashed
                return self
            if time.monotonic() > deadline:
                raise OSError("all sandbox uid slots are busy")
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


_WORLD_WRITABLE_ROOTS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")


def sweep_files(uid: int, max_depth: int = 6) -> int:
    """Delete what `uid` left in world-writable temp dirs (fallback mode, exclusive slot uid)."""
    removed = 0

    def walk(path: str, depth: int) -> None:
        nonlocal removed
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid == uid:
                try:
                    if stat.S_ISDIR(st.st_mode):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
            elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002 and depth < max_depth:
                walk(entry.path, depth + 1)

    roots = {os.path.realpath(p) for p in (*_WORLD_WRITABLE_ROOTS, tempfile.gettempdir())}
    for root in sorted(roots):
        if os.path.isdir(root):
            walk(root, 0)
    return removed
