"""What a sandboxed run is given (:class:`Limits`) and what it returns (:class:`SandboxResult`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

STATUSES = ("ok", "runtime_error", "timeout", "memory", "output_limit", "syntax_error", "sandbox_error")
ISOLATIONS = ("bwrap", "rlimits")
WORKDIR = "/sandbox"  # the program's working directory inside bwrap
ENV_TOKEN = "SPOLAB_SANDBOX_RUN"  # marker in the program's environment (fallback clean-up)


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


def result_dict(res: SandboxResult) -> dict:
    """A JSON-able dict of a result."""
    d = asdict(res)
    d["notes"] = list(res.notes)
    return d
