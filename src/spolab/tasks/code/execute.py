"""Score programs on code problems in the sandbox: ``execute(problems, programs) -> [CodeResult]``.

**Function problems** (HumanEval): one sandbox process per program runs a small trusted
harness. The check's source is split with :mod:`ast`: its module-level statements other than
``def check`` are *setup* (``METADATA``, imports, helpers); the top-level statements of
``check``'s body are *test units* when they contain an ``assert`` (a bare ``assert x``, or a
``for`` loop of asserts, counted as one) and setup lines otherwise; an assert on a constant
(HumanEval's ``assert True, "This prints if this assert fails"``) is a setup line. The
harness runs, in order: the setup, the program (``__name__`` is ``"__candidate__"``, so a
``__main__`` block does not run), then each unit in its own ``try``, so ``passed`` counts the
units that ran without an exception and ``total`` the units. A setup line of ``check`` that
raises ends the run (the units after it fail). ``success`` = every unit passed, no error.

The harness reports on stdout with lines that start with a nonce it draws from
``os.urandom`` and prints first, before the program runs: the program cannot know it (it is
in no file, not in the source, not on stdin), so printing a fake result line does not count.
A program that introspects the harness's frames could still forge one; this guards the
output channel, not the interpreter. Further guards: the check's code sees a copy of the
builtins taken before the program ran and none of the program's globals that shadow a
builtin; every value the candidate returns is copied into plain builtins (``int``, ``float``,
``complex``, ``str``, ``bytes``, ``bool``, ``None``, ``list``, ``tuple``, ``dict``, ``set``,
``frozenset``; subclasses such as ``Counter`` are converted to their base type) and any other
type raises ``TypeError`` in the check, so an object whose ``__eq__`` always says True fails.

**Stdio problems** (CodeContests, TACO): one sandbox run per test, in parallel. Output
comparison is CodeContests' ``OutputsMatch`` (google-deepmind/code_contests,
execution/tester_sandboxer.cc): split both texts on ``" \\n\\t\\r\\v"``, lowercase (ASCII),
equal token lists match; otherwise the lists must have the same length and each token pair
match: equal strings, or both numbers within an absolute ``1e-5`` (``kDoublePrecision``).
One deviation: two integer tokens compare exactly (CodeContests parses big ints as doubles).
``inf``/``nan`` are strings here. A test passes when the run's status is ``ok`` and the
output matches. Tests run ``TEST_CHUNK`` at a time per program; after a chunk with a timeout,
the remaining tests are not run and count as failed (``stop_on_timeout``), so an infinite
loop costs a few time limits, not one per test. Chunks do not depend on ``threads``, so the
results do not either.

**Signature** (the functional class of a program, for diversity): sha256 (16 hex digits) of
its outputs; stdio: the normalized token lists of every test's stdout; function: the
canonical repr (dicts and sets sorted) of every value the candidate returned, or the name of
what it raised, in call order. Set when the program ran to the end (every test, status ok),
whether or not it is correct; count only correct ones for functional diversity.

**Errors**: ``CodeResult.error`` is the first failure: a non-``ok`` sandbox status, in test
order (stdio) or of the single run (function); for a function run that ended ``ok``, the
first unit that raised something other than ``AssertionError`` gives ``"memory"``
(``MemoryError``) or ``"runtime_error"``; a run that ended without the harness's last line
(the program called ``os._exit``) is a ``"runtime_error"``. A wrong answer is not an error.

Results are cached in memory by (problem fingerprint, sha256 of the program, options), and the
sandbox's own cache keys every run below that. Time and memory limits come from the problem.
``execute`` never raises for a program; a malformed *problem* (a check that does not parse)
raises :class:`~spolab.errors.ConfigError`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from spolab import sandbox
from spolab.errors import ConfigError
from spolab.tasks.code.problems import CodeProblem, CodeResult

MAX_PROGRAM_CHARS = 100_000  # longer programs are not run: error "too long"
TEST_CHUNK = 4  # stdio tests run per program per round (the unit of stop_on_timeout)
FLOAT_TOLERANCE = 1e-5  # absolute, CodeContests' kDoublePrecision
_WS = re.compile(r"[ \n\t\r\v]+")
_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --------------------------------------------------------------------------------------------
# Output comparison (stdio)


def normalize_output(text: str) -> list[str]:
    """Whitespace-split, ASCII-lowercased tokens: what CodeContests compares.

    >>> normalize_output("  YES\\n1 2\\t3 \\n\\n")
    ['yes', '1', '2', '3']
    """
    return [t for t in _WS.split(text.translate(_ASCII_LOWER)) if t]


def _tokens_match(a: str, b: str) -> bool:
    if a == b:
        return True
    if not (_NUMBER.fullmatch(a) and _NUMBER.fullmatch(b)):
        return False
    if _INT.fullmatch(a) and _INT.fullmatch(b):
        return int(a) == int(b)
    return abs(float(a) - float(b)) < FLOAT_TOLERANCE


def outputs_match(output: str, expected: str) -> bool:
    """CodeContests' rule (module docstring): same tokens, numbers within 1e-5 absolute.

    >>> outputs_match("3\\n", "3")
    True
    >>> outputs_match("1  2\\n3", "1 2 3\\n"), outputs_match("Yes", "YES"), outputs_match("0.3333333", "0.333333")
    (True, True, True)
    >>> outputs_match("1 2", "1 2 3"), outputs_match("0.5", "0.6"), outputs_match("ab", "a b")
    (False, False, False)
    """
    out, exp = normalize_output(output), normalize_output(expected)
    if out == exp:
        return True
    return len(out) == len(exp) and all(_tokens_match(a, b) for a, b in zip(out, exp))


# --------------------------------------------------------------------------------------------
# The function-problem harness


_HARNESS_BODY = r'''
def main():
    write, exit_, urandom = _os.write, _os._exit, _os.urandom
    B = globals()["__builtins__"]  # the builtins as they were before the program ran
    nonce = urandom(16).hex()
    write(1, (nonce + "\n").encode())
    NoneType = type(None)
    SCALARS = (int, float, complex, str, bytes, bool, NoneType)
    CONVERT = ((int, int.__int__), (float, float.__float__), (complex, complex.__complex__),
               (str, str.__str__), (bytes, bytes.__bytes__))

    def emit(*parts):
        try:
            _sys.stdout.flush()
        except BaseException:
            pass
        try:
            write(1, ("\n" + nonce + " " + " ".join(parts) + "\n").encode())
        except BaseException:
            pass

    def name(e):
        try:
            n = str(type(e).__name__)[:64]
            return "".join(c for c in n if c.isalnum() or c == "_") or "Exception"
        except BaseException:
            return "Exception"

    def plain(v, depth=0):
        if depth > 100:
            raise RecursionError("return value nested too deeply")
        t = type(v)
        if any(t is s for s in SCALARS):
            return v
        if issubclass(t, dict):
            return {plain(k, depth + 1): plain(x, depth + 1) for k, x in dict.items(v)}
        if issubclass(t, list):
            return [plain(x, depth + 1) for x in list.__iter__(v)]
        if issubclass(t, tuple):
            return tuple(plain(x, depth + 1) for x in tuple.__iter__(v))
        if issubclass(t, frozenset):
            return frozenset(plain(x, depth + 1) for x in frozenset.__iter__(v))
        if issubclass(t, set):
            return {plain(x, depth + 1) for x in set.__iter__(v)}
        for base, convert in CONVERT:
            if issubclass(t, base):
                return convert(v)
        raise TypeError("the candidate returned a non-builtin value")

    def canon(v):
        t = type(v)
        if t is list:
            return "[" + ",".join([canon(x) for x in v]) + "]"
        if t is tuple:
            return "(" + ",".join([canon(x) for x in v]) + ",)"
        if t is dict:
            return "{" + ",".join(sorted([canon(k) + ":" + canon(x) for k, x in v.items()])) + "}"
        if t is set or t is frozenset:
            return t.__name__ + "{" + ",".join(sorted([canon(x) for x in v])) + "}"
        return repr(v)

    def fail_program(e):
        try:
            write(2, ("\n" + name(e) + "\n").encode())  # MemoryError on stderr: status "memory"
            _traceback.print_exc()
        except BaseException:
            pass
        emit("program", name(e))
        exit_(1)

    try:
        setup = compile(SETUP, "<check>", "exec")
        units = [(kind, compile(src, "<check>", "exec")) for kind, src in UNITS]
        program = compile(PROGRAM, "<program>", "exec")
    except BaseException as e:
        emit("harness", name(e))
        exit_(3)
    g = {"__name__": "__candidate__", "__builtins__": _builtins}
    try:
        exec(setup, g)
        exec(program, g)
        f = g.get(ENTRY)
        if not callable(f):
            cls = g.get("Solution")  # LeetCode style (TACO): a method of class Solution
            if isinstance(cls, type) and callable(getattr(cls, ENTRY, None)):
                f = getattr(cls(), ENTRY)
        if not callable(f):
            raise NameError("the program does not define " + ENTRY)
    except BaseException as e:
        fail_program(e)

    calls = _hashlib.sha256()

    def candidate(*args, **kwargs):
        try:
            out = plain(f(*args, **kwargs))
        except BaseException as e:
            calls.update(("raise " + name(e) + "\n").encode())
            raise
        calls.update((canon(out) + "\n").encode("utf-8", "surrogatepass"))
        return out

    cg = {k: v for k, v in g.items() if k not in B}
    cg.update(__builtins__=B, __name__="__check__")
    complete = True
    try:
        exec(setup, cg)
        cg[CANDIDATE] = candidate
        emit("units", str(len(units)))
        for i, (kind, code) in enumerate(units):
            try:
                exec(code, cg)
            except BaseException as e:
                emit("fail" if kind == "test" else "setup", str(i), name(e))
                if kind != "test":
                    complete = False
                    break
            else:
                if kind == "test":
                    emit("pass", str(i))
    except BaseException as e:
        emit("setup", "-1", name(e))
        complete = False
    if complete:
        emit("sig", calls.hexdigest()[:16])
    emit("done")
    exit_(0)


main()
'''


def _harness_source(program: str, setup: str, units: list[tuple[str, str]], entry: str, cand: str) -> str:
    """The sandbox program for a function problem: a bootstrap that runs the harness body with
    a snapshot of the builtins (so the program's changes to them do not reach the harness)."""
    data = {"PROGRAM": program, "SETUP": setup, "UNITS": units, "ENTRY": entry, "CANDIDATE": cand}
    return (
        "import builtins, hashlib, os, sys, traceback\n"
        "_ns = dict(__builtins__=dict(vars(builtins)), __name__='__harness__', _os=os, _sys=sys,\n"
        "           _hashlib=hashlib, _traceback=traceback, _builtins=builtins)\n"
        f"_ns.update({data!r})\n"
        "del builtins, hashlib, os, sys, traceback\n"
        f"exec(compile({_HARNESS_BODY!r}, '<harness>', 'exec'), _ns)\n"
    )


@dataclass(frozen=True)
class _Check:
    setup: str  # module-level statements of the check source other than `def check`
    units: list[tuple[str, str]]  # ("test" | "setup", source) per top-level statement of check's body
    candidate: str  # check's parameter name
    n_tests: int


def _is_test(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Assert):
        return not isinstance(stmt.test, ast.Constant)
    return any(isinstance(n, ast.Assert) for n in ast.walk(stmt))


_checks: dict[str, _Check] = {}
_checks_lock = threading.Lock()


def split_check(problem: CodeProblem) -> _Check:
    """The check of a function problem split into setup and test units (module docstring)."""
    with _checks_lock:
        hit = _checks.get(problem.fingerprint)
    if hit is not None:
        return hit
    try:
        tree = ast.parse(problem.check)
    except SyntaxError as e:
        raise ConfigError(f"problem {problem.id!r}: its check does not parse: {e}") from e
    defs = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    if not defs or not defs[-1].args.args:
        raise ConfigError(f"problem {problem.id!r}: its check source has no `def check(candidate)`")
    check = defs[-1]
    setup = ast.unparse(ast.Module(body=[s for s in tree.body if s is not check], type_ignores=[]))
    units: list[tuple[str, str]] = []
    for stmt in check.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        src = ast.unparse(stmt)
        try:
            compile(src, "<check>", "exec")
        except SyntaxError as e:
            raise ConfigError(
                f"problem {problem.id!r}: check statement {src[:60]!r} cannot run at module level: {e}"
            ) from e
        units.append(("test" if _is_test(stmt) else "setup", src))
    n_tests = sum(kind == "test" for kind, _ in units)
    if n_tests == 0:
        raise ConfigError(f"problem {problem.id!r}: its check has no assert on the candidate")
    out = _Check(setup, units, check.args.args[0].arg, n_tests)
    with _checks_lock:
        _checks[problem.fingerprint] = out
    return out


def _function_result(res: sandbox.SandboxResult, chk: _Check) -> CodeResult:
    first, _, rest = res.stdout.partition("\n")
    events: list[list[str]] = []
    if re.fullmatch(r"[0-9a-f]{32}", first):
        events = [line[len(first) + 1 :].split(" ") for line in rest.split("\n") if line.startswith(first + " ")]
    test_ids = {i for i, (kind, _) in enumerate(chk.units) if kind == "test"}
    passed = len({int(e[1]) for e in events if e[0] == "pass" and len(e) > 1 and e[1].isdigit()} & test_ids)
    done = any(e[0] == "done" for e in events)
    sig = next((e[1] for e in events if e[0] == "sig" and len(e) > 1), None)

    def category(e: list[str]) -> str:
        return "memory" if e[-1] == "MemoryError" else "runtime_error"

    error: str | None
    if res.status != "ok":
        error = res.status
    elif not done:
        error = "runtime_error"
    else:
        bad = [e for e in events if e[0] == "setup" or (e[0] == "fail" and e[-1] != "AssertionError")]
        error = category(bad[0]) if bad else None
    ok_run = res.status == "ok" and done
    return CodeResult(
        success=ok_run and error is None and passed == chk.n_tests,
        passed=passed,
        total=chk.n_tests,
        error=error,
        signature=sig if ok_run else None,
    )


# --------------------------------------------------------------------------------------------
# Caches and the driver


class CodeResultCache(sandbox.ResultCache):
    """A thread-safe LRU of CodeResults by (problem fingerprint, program sha256, options): the sandbox's
    LRU (sandbox.ResultCache). Results with a ``sandbox_error`` are not cached (the sandbox failed, not
    the program).
    """

    def __init__(self, maxsize: int = 200_000):
        super().__init__(maxsize)

    @staticmethod
    def cacheable(res: CodeResult) -> bool:
        return res.error != "sandbox_error"


DEFAULT_CACHE = CodeResultCache()


@dataclass
class _Work:
    problem: CodeProblem
    program: str
    key: tuple
    results: list[sandbox.SandboxResult] = field(default_factory=list)  # stdio: per test run so far
    check: _Check | None = None  # function problems


def _stdio_result(w: _Work) -> CodeResult:
    tests = w.problem.tests
    passed, error = 0, None
    for res, test in zip(w.results, tests):
        if res.status != "ok":
            error = error or res.status
        elif outputs_match(res.stdout, test["output"]):
            passed += 1
    complete = len(w.results) == len(tests) and all(r.status == "ok" for r in w.results)
    signature = None
    if complete:
        payload = json.dumps([normalize_output(r.stdout) for r in w.results], ensure_ascii=False)
        signature = hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return CodeResult(
        success=complete and passed == len(tests) and len(tests) > 0,
        passed=passed,
        total=len(tests),
        error=error,
        signature=signature,
    )


def _compiles(program: str) -> bool:
    try:
        compile(program, "<program>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def execute(
    problems: Sequence[CodeProblem],
    programs: Sequence[str | None],
    *,
    threads: int = 1,
    cache: CodeResultCache | None = DEFAULT_CACHE,
    sandbox_cache: sandbox.ResultCache | None = sandbox.DEFAULT_CACHE,
    max_program_chars: int = MAX_PROGRAM_CHARS,
    stop_on_timeout: bool = True,
    isolation: str | None = None,
) -> list[CodeResult]:
    """Run ``programs[i]`` on ``problems[i]`` for every i (rules in the module docstring).

    A program that is None scores error ``"no code"``, one longer than `max_program_chars`
    ``"too long"``, one that does not compile ``"syntax_error"``; none of these is run.
    `threads` sandbox runs go in parallel; `cache` / `sandbox_cache` = None disable a cache.
    """
    if len(problems) != len(programs):
        raise ValueError(f"len(problems)={len(problems)} != len(programs)={len(programs)}")
    mode = isolation or sandbox.detect_isolation()[0]
    out: list[CodeResult | None] = [None] * len(problems)
    work: dict[tuple, _Work] = {}
    slots: dict[tuple, list[int]] = {}
    for i, (problem, program) in enumerate(zip(problems, programs)):
        total = split_check(problem).n_tests if problem.kind == "function" else len(problem.tests)
        if program is None or not program.strip():
            out[i] = CodeResult(False, 0, total, "no code")
            continue
        if len(program) > max_program_chars:
            out[i] = CodeResult(False, 0, total, "too long")
            continue
        digest = hashlib.sha256(program.encode("utf-8", "surrogatepass")).hexdigest()
        key = (problem.fingerprint, digest, stop_on_timeout, mode)
        hit = cache.get(key) if cache is not None and key not in work else None
        if hit is not None:
            out[i] = hit
            continue
        if not _compiles(program):
            out[i] = CodeResult(False, 0, total, "syntax_error")
            continue
        if key not in work:
            chk = split_check(problem) if problem.kind == "function" else None
            work[key] = _Work(problem, program, key, check=chk)
        slots.setdefault(key, []).append(i)

    pending = list(work.values())  # rounds: every function run and each stdio program's next chunk
    while pending:
        jobs: list[sandbox.Job] = []
        owners: list[_Work] = []
        for w in pending:
            p = w.problem
            if p.kind == "function":  # one run, in the first round
                assert w.check is not None
                src = _harness_source(w.program, w.check.setup, w.check.units, p.entry_point, w.check.candidate)
                jobs.append(sandbox.Job(src, "", p.time_limit_s, p.memory_mb, p.id))
                owners.append(w)
                continue
            start = len(w.results)
            for test in p.tests[start : start + TEST_CHUNK]:
                jobs.append(sandbox.Job(w.program, test["input"], p.time_limit_s, p.memory_mb, p.id))
                owners.append(w)
        results = sandbox.run_many(jobs, threads, cache=sandbox_cache, isolation=mode) if jobs else []
        for w, res in zip(owners, results):
            w.results.append(res)
        still: list[_Work] = []
        for w in pending:
            if w.problem.kind == "stdio" and len(w.results) < len(w.problem.tests):
                if not (stop_on_timeout and any(r.status == "timeout" for r in w.results[-TEST_CHUNK:])):
                    still.append(w)
        pending = still

    for key, w in work.items():
        if w.problem.kind == "function":
            assert w.check is not None
            res = _function_result(w.results[0], w.check)
        else:
            res = _stdio_result(w)
        if cache is not None:
            cache.put(key, res)
        for i in slots[key]:
            out[i] = res
    missing = [i for i, r in enumerate(out) if r is None]
    assert not missing, f"execute: no result for items {missing}"
    return [r for r in out if r is not None]
