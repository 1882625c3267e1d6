"""``python -m spolab.lockcheck [DIR]``: may Snakemake's lock in DIR be removed (``snakemake --unlock``)?

Snakemake locks a working directory (``.snakemake/locks/``) while it runs and refuses a second
instance with a LockException that advises ``snakemake --unlock``. That advice is right only when the
lock is stale (its snakemake was killed); unlocking under a live run lets a second instance run the
same jobs beside it. The lock files do not say who holds them, so this command looks for the holder:
a live snakemake process (``snakemake``, ``python -m snakemake``) whose working directory, or
``--directory``, is DIR.

Exit status: 0 when no live snakemake uses DIR (the lock, if any, is stale: ``--unlock`` is safe);
2 when one does ("a run is live, don't unlock", with its pid and command line).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

LIVE_STATUS = 2


@dataclass(frozen=True)
class Holder:
    pid: int
    cmdline: str


def _argv(pid: str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_snakemake(argv: list[str]) -> bool:
    """``snakemake ...``, ``python .../bin/snakemake ...`` or ``python -m snakemake ...``."""
    head = argv[:3]
    return any(Path(a).name == "snakemake" for a in head) or any(
        a == "-m" and b == "snakemake" for a, b in zip(head, head[1:]))


def _directory(pid: str, argv: list[str]) -> Path | None:
    """The working directory a snakemake process runs in: its ``--directory``/``-d``, else its cwd."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
    for i, a in enumerate(argv):
        if a in ("--directory", "-d") and i + 1 < len(argv):
            return (cwd / argv[i + 1]).resolve()
        if a.startswith("--directory="):
            return (cwd / a.split("=", 1)[1]).resolve()
    return cwd.resolve()


def live_holders(directory: str | os.PathLike[str]) -> list[Holder]:
    """Live snakemake processes (other than this one) whose working directory is ``directory``."""
    directory = Path(directory).resolve()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _argv(entry.name)
        if not argv or not _is_snakemake(argv) or "--unlock" in argv:
            continue
        if _directory(entry.name, argv) == directory:
            out.append(Holder(int(entry.name), " ".join(argv)))
    return out


def lock_files(directory: str | os.PathLike[str]) -> list[Path]:
    locks = Path(directory) / ".snakemake" / "locks"
    return sorted(locks.iterdir()) if locks.is_dir() else []


def check(directory: str | os.PathLike[str]) -> tuple[int, str]:
    """(exit status, the one line to print) for ``directory``."""
    directory = Path(directory).resolve()
    holders, locks = live_holders(directory), lock_files(directory)
    if holders:
        who = "; ".join(f"pid {h.pid}: {h.cmdline[:160]}" for h in holders)
        return LIVE_STATUS, (f"a run is live, don't unlock: snakemake is running in {directory} ({who}); wait for it "
                             "to end, or stop it first (kill <pid>: it removes its lock itself)")
    if locks:
        return 0, (f"stale lock: {len(locks)} lock file(s) in {directory / '.snakemake' / 'locks'} and no live snakemake "
                   "in this directory; `snakemake --unlock` is safe")
    return 0, f"no lock in {directory} and no live snakemake there: nothing to unlock"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spolab.lockcheck", description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default=".", help="the Snakemake working directory (default: .)")
    args = parser.parse_args(argv)
    status, line = check(args.directory)
    print(f"spolab.lockcheck: {line}", file=sys.stderr if status else sys.stdout)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
