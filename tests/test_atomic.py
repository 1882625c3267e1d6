"""Atomic writes under real faults: a full disk (a 4 MiB tmpfs) and SIGKILL in the middle of a write.
A reader finds the previous file or folder whole, never a truncated one or a mix of old and new."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spolab.atomic import swap_dir, write_json
from spolab.utils import write_jsonl


def _tables(rows: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    return {name: pd.DataFrame(rng.random((rows, 8)), columns=[f"c{i}" for i in range(8)])
            for name in ("runs", "curves", "eval_per_problem")}


def _export(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    """What analysis/export.py does: every CSV written aside, the folder swapped in."""
    with swap_dir(folder) as new:
        for name, df in tables.items():
            df.to_csv(new / f"{name}.csv", index=False, float_format="%.10g")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_full_disk_leaves_the_previous_export_whole(tmpfs):
    folder = tmpfs.path / "export"
    _export(folder, _tables(100))  # fits
    before = _snapshot(folder)
    with pytest.raises(OSError) as e:
        _export(folder, _tables(40_000))  # ~2.6 MB a table: the second or third does not fit in 4 MiB
    assert e.value.errno == errno.ENOSPC
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmpfs.path.iterdir()) == ["export"]  # the half-written folder is gone
    for name in before:
        assert len(pd.read_csv(folder / name)) == 100


def test_a_full_disk_leaves_the_previous_json_whole(tmpfs):
    path = tmpfs.path / "summary.json"
    write_json(path, {"a": 1})
    with pytest.raises(OSError):
        write_json(path, {"x": "y" * (5 * 2**20)})
    with pytest.raises(OSError):
        write_jsonl(path, ({"x": "y" * 1000, "i": i} for i in range(10_000)))
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmpfs.path.iterdir()) == ["summary.json"]


_SLOW_EXPORT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spolab.atomic import swap_dir
    with swap_dir(Path(sys.argv[1])) as new:
        for i in range(1000):
            (new / f"t{i}.csv").write_text("a,b\\n" + "1,2\\n" * 1000)
            if i == 3:
                Path(sys.argv[2]).touch()
            time.sleep(0.01)
    """
)


def test_sigkill_mid_export_leaves_the_previous_export(tmp_path):
    folder = tmp_path / "export"
    _export(folder, _tables(10))
    before = _snapshot(folder)
    midway = tmp_path / "midway"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT, str(folder), str(midway)])
    while not midway.exists():
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _snapshot(folder) == before
    _export(folder, _tables(20))  # the next export replaces it whole
    assert all(len(pd.read_csv(folder / n)) == 20 for n in before)
