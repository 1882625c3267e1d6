"""The code sandbox: hostile programs get the right status, and nothing they start or write survives.

Every hostile program is re-executed with a unique marker as its last argument, so it and every
process it forks carry the marker in their command line; after the call, no live process may
carry it. Runs in every isolation mode that works here (bwrap when available, always the
rlimits fallback).
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from spolab import sandbox as sb
from spolab.sandbox import isolation

os.environ.setdefault("OMP_NUM_THREADS", "1")

MODE, REASON = sb.detect_isolation()
MODES = ["bwrap", "rlimits"] if MODE == "bwrap" else ["rlimits"]
ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[1]
LIMITS = dict(time_limit_s=1.0, memory_mb=256)


def contains_writes(mode: str) -> bool:
    """Writes outside the working directory fail or are swept in this mode (not: rlimits as non-root)."""
    return mode == "bwrap" or ROOT


def isolates_network(mode: str) -> bool:
    return mode == "bwrap" or ROOT or isolation.userns_works()


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


def survivors(marker: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or ()):
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


@pytest.fixture
def marker():
    name = f"spolab-sbtest-{uuid.uuid4().hex[:12]}"
    dirs = [
        tempfile.gettempdir(),
        "/tmp",
        "/var/tmp",
        "/dev/shm",
        str(REPO),
        "/work",
        os.path.expanduser("~"),
    ]
    paths = sorted({os.path.join(d, name) for d in dirs if os.path.isdir(d)})
    m = SimpleNamespace(name=name, paths=paths)
    yield m
    for pid in survivors(name):  # a failing test must not leave its processes behind
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for p in paths:
        if os.path.lexists(p):
            os.unlink(p)


def hostile(body: str, marker: str) -> str:
    """A program that re-execs `body` with `marker` as its last argument (inherited by its forks)."""
    body = "import os, sys\n" + body
    return f"import os, sys\nos.execv(sys.executable, [sys.executable, '-S', '-c', {body!r}, {marker!r}])\n"


def assert_no_leak(m) -> None:
    assert survivors(m.name) == [], "a process of the run survived the call"
    assert [p for p in m.paths if os.path.lexists(p)] == [], "a file outside the working directory survived"


# name -> (body, expected status, extra run() keywords)
HOSTILE = {
    "fork_bomb": (
        "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "timeout",
        {"max_procs": 16},
    ),
    "infinite_loop": ("while True:\n    pass", "timeout", {}),
    "sleep_forever": ("import time\ntime.sleep(60)", "timeout", {}),
    "huge_allocation": ("x = bytearray(1 << 30)", "memory", {}),
    "growing_allocation": ("a = []\nwhile True:\n    a.append(bytearray(1 << 20))", "memory", {}),
    "stdout_flood": ("while True:\n    print('x' * 1000)", "output_limit", {"max_output_bytes": 100_000}),
    "stderr_flood": (
        "while True:\n    sys.stderr.write('e' * 1000)",
        "output_limit",
        {"max_output_bytes": 100_000},
    ),
    "segfault": ("import ctypes\nctypes.string_at(0)", "runtime_error", {}),
    "kill_parent": ("os.kill(os.getppid(), 9)\nimport time\ntime.sleep(5)", "runtime_error", {}),
    "double_fork_daemon": (
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        import time\n"
        "        time.sleep(30)\n"
        "    os._exit(0)\n"
        "import time\n"
        "time.sleep(0.2)\n"
        "print('parent done')",
        "ok",
        {},
    ),
    "child_holds_stdout": ("if os.fork() == 0:\n    import time\n    time.sleep(30)\nprint('bye')", "ok", {}),
    "thread_bomb": (
        "import threading, time\nfor _ in range(1000):\n    threading.Thread(target=time.sleep, args=(0.05,)).start()",
        "runtime_error",
        {"max_procs": 16},
    ),
    "fd_exhaustion": ("fs = [open(os.devnull) for _ in range(100000)]", "runtime_error", {}),
    "huge_file": (
        "with open('big', 'wb') as f:\n    f.write(b'x' * (100 << 20))",
        "runtime_error",
        {"memory_mb": 512},
    ),
    "uncaught_exception": ("1 / 0", "runtime_error", {}),
    "nonzero_exit": ("sys.exit(3)", "runtime_error", {}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program(name, mode, marker):
    body, expected, extra = HOSTILE[name]
    res = sb.run(hostile(body, marker.name), "", isolation=mode, **{**LIMITS, **extra})
    assert res.status == expected, (res.status, res.returncode, res.stderr[-500:], res.error)
    assert res.isolation == mode
    assert_no_leak(marker)
    if name == "segfault":
        assert res.signal == signal.SIGSEGV and res.returncode == -signal.SIGSEGV
    if name == "uncaught_exception":
        assert "ZeroDivisionError" in res.stderr
    if name == "nonzero_exit":
        assert res.returncode == 3
    if name in ("stdout_flood", "stderr_flood"):
        assert res.truncated and len(res.stdout) + len(res.stderr) <= 100_000
    if name in ("double_fork_daemon", "child_holds_stdout"):
        assert res.stdout in ("parent done\n", "bye\n")


def test_kill_everything(mode, marker):
    # kill(-1, SIGKILL) signals every process the caller may signal: only safe to try where the
    # program can reach none of the host's (a PID namespace, or an unprivileged uid of its own)
    if mode != "bwrap":
        probe = sb.run("import os\nprint(os.getuid())", isolation=mode, **LIMITS)
        if not (ROOT and probe.status == "ok" and probe.stdout.strip() != "0"):
            pytest.skip("the rlimits fallback without a dropped uid could kill this user's processes")
    body = "import signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(5)"
    res = sb.run(hostile(body, marker.name), "", isolation=mode, **LIMITS)
    assert res.status in ("runtime_error", "timeout"), (res.status, res.stderr, res.error)
    assert_no_leak(marker)
    assert sb.run("print(1)", isolation=mode, **LIMITS).status == "ok"  # the sandbox still works


def test_time_limit_honoured(mode, marker):
    res = sb.run(
        hostile("while True:\n    pass", marker.name), "", isolation=mode, time_limit_s=1.5, memory_mb=256
    )
    assert res.status == "timeout"
    assert 1.5 <= res.wall_s < 1.5 + 3.0  # killed at the limit (program time, not the call's)
    assert_no_leak(marker)


def test_writes_outside_workdir_fail(mode, marker):
    if not contains_writes(mode):
        pytest.skip("rlimits fallback as non-root cannot contain writes to world-writable dirs")
    body = (
        "import json\n"
        f"paths = {marker.paths!r}\n"
        "ok = []\n"
        "for p in paths:\n"
        "    try:\n"
        "        with open(p, 'w') as f:\n"
        "            f.write('leak')\n"
        "        ok.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "with open('inside.txt', 'w') as f:\n"
        "    f.write('fine')\n"
        "print(json.dumps(ok))\nprint(open('inside.txt').read())\n"
    )
    res = sb.run(hostile(body, marker.name), "", isolation=mode, **LIMITS)
    assert res.status == "ok", res.stderr
    written, inside = res.stdout.splitlines()
    assert inside == "fine"  # the working directory is writable
    if mode == "bwrap":
        assert written == "[]"  # every write outside it failed
    assert_no_leak(marker)  # (rlimits as root: /tmp writes of the run's uid are swept)


def test_network_blocked(mode, marker):
    if not isolates_network(mode):
        pytest.skip("rlimits fallback as non-root without user namespaces does not isolate the network")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    body = (
        "import socket\n"
        f"for addr in [('1.1.1.1', 53), ('127.0.0.1', {port})]:\n"
        "    s = socket.socket()\n"
        "    s.settimeout(1.0)\n"
        "    print(s.connect_ex(addr) != 0)\n"
    )
    try:
        res = sb.run(hostile(body, marker.name), "", isolation=mode, time_limit_s=3.0, memory_mb=256)
        assert res.status == "ok", res.stderr
        assert res.stdout == "True\nTrue\n"  # both connections failed
        with pytest.raises(BlockingIOError):
            server.accept()  # and nothing reached the host's server
    finally:
        server.close()
    assert_no_leak(marker)


def test_host_files(mode):
    assert os.path.exists("/etc/passwd")
    res = sb.run(
        f"import os\nprint(os.path.exists('/etc/passwd'), os.path.exists({str(REPO)!r}))",
        isolation=mode,
        **LIMITS,
    )
    assert res.status == "ok", res.stderr
    if mode == "bwrap":
        assert res.stdout == "False False\n"  # /etc and the repo are invisible
    else:
        assert "no filesystem isolation" in " ".join(res.notes)


def test_correct_program(mode):
    src = "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs[:n]))\nprint(max(xs))\n"
    res = sb.run(src, "3\n4 -1 10 7\n", isolation=mode, **LIMITS)
    assert res.status == "ok" and res.ok
    assert res.stdout == "13\n10\n" and res.stderr == ""
    assert res.returncode == 0 and res.signal is None and res.isolation == mode
    assert 0 < res.wall_s < LIMITS["time_limit_s"]


def test_stdin_echo(mode):
    text = "héllo wörld ✓\n\nline 3 without newline" + "z" * 50_000
    res = sb.run("import sys\nsys.stdout.write(sys.stdin.read())", text, isolation=mode, **LIMITS)
    assert res.status == "ok"
    assert res.stdout == text


def test_hash_seed_fixed(mode):
    src = "print(hash('spolab'), list({'a', 'b', 'c', 'd', 'e'}))"
    a = sb.run(src, isolation=mode, **LIMITS)
    b = sb.run(src, isolation=mode, **LIMITS)
    assert a.status == b.status == "ok" and a.stdout == b.stdout


def test_syntax_error_not_run():
    res = sb.run("def f(:\n    pass", time_limit_s=1, memory_mb=256)
    assert res.status == "syntax_error"
    assert "SyntaxError" in res.stderr and res.isolation == ""
    assert sb.run("x = 1\x00", time_limit_s=1, memory_mb=256).status == "syntax_error"


def test_never_raises(monkeypatch):
    assert sb.run("print(1)", time_limit_s=-1, memory_mb=256).status == "sandbox_error"
    assert sb.run("print(1)", time_limit_s=1, memory_mb=0).status == "sandbox_error"
    assert sb.run("print(1)", time_limit_s=1, memory_mb=256, isolation="docker").status == "sandbox_error"
    assert sb.run(None, time_limit_s=1, memory_mb=256).status == "sandbox_error"  # type: ignore[arg-type]
    monkeypatch.setattr(isolation, "bwrap_path", lambda: None)
    res = sb.run("print(1)", time_limit_s=1, memory_mb=256, isolation="bwrap")
    assert res.status == "sandbox_error" and "bwrap" in res.error


def test_auto_mode_is_detected():
    assert MODE in sb.ISOLATIONS, REASON
    res = sb.run("print('hi')", time_limit_s=2, memory_mb=256)
    assert res.status == "ok" and res.isolation == MODE


def test_run_many_parallel_cached_and_isolated(marker):
    # four sleepers overlap in time (parallel), a fork bomb next to them does not starve them
    # of processes (RLIMIT_NPROC is per run), and identical jobs run once (cache)
    sleeper = "import time\nt0 = time.time()\ntime.sleep(1.0)\nprint(t0, time.time(), input())"
    bomb = hostile(HOSTILE["fork_bomb"][0], marker.name)
    jobs = [sb.Job(sleeper, f"{i}\n", time_limit_s=4, memory_mb=256) for i in range(4)]
    jobs.append({"source": bomb, "time_limit_s": 1.0, "memory_mb": 256, "problem_id": "bomb"})
    cache = sb.ResultCache()
    res = sb.run_many(jobs, threads=5, cache=cache, max_procs=16)
    assert [r.status for r in res] == ["ok"] * 4 + ["timeout"]
    spans = [tuple(map(float, r.stdout.split()[:2])) for r in res[:4]]
    assert [r.stdout.split()[2] for r in res[:4]] == ["0", "1", "2", "3"]  # results in job order
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # all four ran at the same time
    assert_no_leak(marker)
    assert len(cache) == 5 and cache.misses == 5
    again = sb.run_many(jobs[:2] + jobs[:2], threads=2, cache=cache, max_procs=16)
    assert again == res[:2] + res[:2] and cache.hits == 2  # served from the cache
    other_limits = sb.run_many(jobs[:1], threads=1, cache=cache, max_procs=8)
    assert cache.misses == 6 and other_limits[0].status == "ok"  # limits are part of the key
