"""Watching one run: read its output and the supervisor's status pipe until it ends, overflows or runs
out of time (:func:`watch`), then turn what was seen into a :class:`SandboxResult` (:func:`classify`)."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field

from spolab.sandbox.spec import Limits, SandboxResult

STARTUP_TIMEOUT_S = 15.0  # sandbox start-up (bwrap + supervisor interpreter), not the program's

# a MemoryError (the usual face of RLIMIT_AS in Python), a C-level allocation failure, or the
# interpreter itself not fitting (the dynamic loader cannot map libpython / libc)
MEMORY_RE = re.compile(r"MemoryError|[Aa]llocate memory|[Oo]ut of memory|bad_alloc|failed to map segment")


@dataclass
class Watch:
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    events: list[dict] = field(default_factory=list)
    reason: str = ""  # "" (ended) | "timeout" | "output_limit" | "startup_timeout"
    started_at: float | None = None
    ended_at: float | None = None
    truncated: bool = False
    lost: bool = False  # the supervisor died without reporting (the program killed it)


def watch(proc: subprocess.Popen, status_r: int, limits: Limits, t_spawn: float) -> Watch:
    """Read stdout, stderr and the status pipe until the run ends, overflows or runs out of time."""
    w = Watch()
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
                    parse_event(line, w)
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


def parse_event(line: bytes, w: Watch) -> None:
    try:
        event = json.loads(line)
    except ValueError:
        return
    if isinstance(event, dict):
        w.events.append(event)
        if event.get("event") == "start" and w.started_at is None:
            w.started_at = time.monotonic()


def classify(w: Watch, proc_rc: int | None, limits: Limits, mode: str, notes: list[str]) -> SandboxResult:
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
    if (rc != 0 or sig is not None) and MEMORY_RE.search(stderr[-4096:]):
        return SandboxResult("memory", **common)
    if rc == 0 and sig is None:
        return SandboxResult("ok", **common)
    return SandboxResult("runtime_error", **common)
