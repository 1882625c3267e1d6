"""Processes seen through /proc (parent side): find them, count them, kill them until they are gone."""

from __future__ import annotations

import os
import signal
import time

from spolab.sandbox.spec import ENV_TOKEN


def pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def status_fields(pid: int) -> dict[str, str]:
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


def children(pid: int) -> list[int]:
    out = []
    for p in pids():
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                    out.append(p)
        except (OSError, IndexError, ValueError):
            continue
    return out


def alive(pid: int) -> bool:
    state = status_fields(pid).get("State", "")
    return bool(state) and not state.startswith(("Z", "X"))


def kill_until_gone(select, timeout_s: float = 3.0) -> int:
    """SIGKILL every live process `select(pid, fields)` picks until none is left; returns how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    me = os.getpid()
    while True:
        victims = []
        for pid in pids():
            if pid == me:
                continue
            fields = status_fields(pid)
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


def kill_uid(uid: int) -> int:
    def select(pid, fields):
        return str(uid) in fields.get("Uid", "").split()

    return kill_until_gone(select)


def kill_env_token(token: str) -> int:
    needle = f"{ENV_TOKEN}={token}".encode()
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

    return kill_until_gone(select)


def count_tasks(uid: int) -> int:
    n = 0
    for pid in pids():
        fields = status_fields(pid)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            n += int(fields.get("Threads", "1") or 1)
    return n
