"""Many runs: :func:`run_many` runs jobs (:class:`Job`) on a thread pool, each distinct job once,
through a :class:`ResultCache`."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from spolab.sandbox.runner import detect_isolation, run
from spolab.sandbox.spec import SandboxResult


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
