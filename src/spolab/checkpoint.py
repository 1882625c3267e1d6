"""Resumable checkpoints, written atomically, and the resume decision of a run folder.

Layout: ``<run_dir>/checkpoint/step_<n>/`` holds the model and tokenizer (``save_pretrained``),
``trainer_state.pt`` (optimizer, RNG states, whatever the next step reads) and ``meta.json``
(step and the run's identity, :func:`spolab.config.run_identity`). A checkpoint is written aside
(``.tmp_step_<n>.<pid>``), every file fsync'ed, then renamed into place; only then are older ones
removed, so a kill at any moment leaves at least one complete checkpoint. A run folder resumes
only a checkpoint of its own identity (:func:`resume_point`): a rerun with another config is a
new run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from spolab.config import run_identity
from spolab.errors import OperationalError, disk_full_error

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
_LOW_SPACE = 64 * 2**20  # bytes: below this, a failed write is read as a full disk


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full(exc: BaseException, where: Path) -> bool:
    """Whether a failed write means a full disk: ENOSPC/EDQUOT in the chain, or a C++ stream error
    (torch.save, safetensors) with almost no space left where it wrote."""
    if disk_full_error(exc) is not None:
        return True
    try:
        return shutil.disk_usage(where).free < _LOW_SPACE
    except OSError:
        return False


@contextlib.contextmanager
def _written_aside(final: Path, what: str, after_full: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``final`` to write into; then fsync it and rename it into place
    (``final`` is replaced only once the new folder is complete). On any failure the temporary folder is
    removed; on a full disk the error becomes one OperationalError naming ENOSPC, ``what`` was being
    written, and ``after_full`` says what to do."""
    tmp = final.with_name(f".tmp_{final.name}.{os.getpid()}")  # per process: two writers never share one
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():  # a stale copy (a rerun after a kill right after the rename): the new one wins
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as e:
        full = disk_full(e, final.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise OperationalError(f"no space left on device (ENOSPC) while writing {what} to {tmp}; nothing "
                                   f"partial was left{after_full}") from e
        raise


def save_checkpoint(run_dir: str | Path, step: int, model, tokenizer, state: dict, identity: str) -> Path:
    """Write ``checkpoint/step_<step>/`` atomically and drop the older ones; returns its path.

    On a full disk nothing partial is left behind and an OperationalError names ENOSPC (the
    previous checkpoint is intact)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    with _written_aside(final, f"the checkpoint of step {step}", " and the previous checkpoint is intact: free "
                        "some space and rerun the same command to resume") as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({"step": step, "identity": identity}) + "\n")
    for old in root.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_model(path: str | Path, model, tokenizer) -> None:
    """The final model and tokenizer (``save_pretrained``), written aside and renamed into place:
    never a half-written model folder, and a full disk is named (ENOSPC)."""
    with _written_aside(Path(path), "the model", ": free some space and rerun the same command") as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint/step_<n>/`` of a run folder, or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step_*") if (p / META_FILE).exists() and (p / STATE_FILE).exists())
    return done[-1] if done else None


def resume_point(run_dir: str | Path, cfg) -> tuple[Path | None, int | None]:
    """(checkpoint, step) to resume from, or (None, None) for a clean start.

    Resumes only a checkpoint written by a run of the same identity (its config minus tracking);
    any other checkpoint, or leftovers of a run that never checkpointed, are removed (the
    tracker removes the folder's old metrics: a clean start never inherits them)."""
    run_dir = Path(run_dir)
    ck = latest_checkpoint(run_dir)
    if ck is not None:
        meta = json.loads((ck / META_FILE).read_text())
        if meta["identity"] == run_identity(cfg):
            return ck, int(meta["step"])
        log.warning("%s was written by another config (identity %s, this run %s): starting a new run",
                    ck, meta["identity"], run_identity(cfg))
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return None, None


def load_state(ckpt: Path) -> dict:
    return torch.load(ckpt / STATE_FILE, weights_only=False)


def remove_checkpoints(run_dir: str | Path) -> None:
    """After the final model is saved: the checkpoints are no longer needed."""
    shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)
