"""Resumable checkpoints, written atomically and checksummed, and the resume decision of a run folder.

Layout: ``<run_dir>/checkpoint/step_<n>/`` holds the model and tokenizer (``save_pretrained``; a LoRA policy
as its adapter and the base model's config.json, :func:`spolab.models.lora.save_weights`),
``trainer_state.pt`` (optimizer, RNG states, whatever the next step reads), ``meta.json`` (step and
the run's identity, :func:`spolab.config.run_identity`) and, written last, ``manifest.json``: the
sha256 of every other file. A checkpoint is written aside (``.tmp_step_<n>.<pid>``: one name per process), every file fsync'ed,
then renamed into place; only then are older ones removed (the newest :data:`KEEP` stay), so a kill
at any moment leaves at least one complete checkpoint.

On resume (:func:`resume_point`) the newest checkpoint is checked against its manifest (a checkpoint
without one, written before manifests existed, must load instead). One that fails is damaged: it is
renamed aside to ``step_<n>.bad-<reason>`` (never deleted: it is evidence), one warning line names it
and why, and the next older checkpoint is tried; with none left the run starts clean. A run folder
resumes only a checkpoint of its own identity: a rerun with another config is a new run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from spolab.atomic import fsync_dir, sha256_file, write_json
from spolab.config import run_identity
from spolab.errors import OperationalError, disk_full_error
from spolab.models.lora import save_weights

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"  # {"step": n, "files": {relative path: sha256}}, written last
KEEP = 2  # complete checkpoints kept: a damaged newest one falls back to the one before
_STEP_DIR = re.compile(r"step_\d{8}")  # a complete checkpoint's folder (not .tmp_*, not *.bad-*)
_LOW_SPACE = 64 * 2**20  # bytes: below this, a failed write is read as a full disk


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def disk_full(exc: BaseException, where: Path) -> bool:
    """Whether a failed write means a full disk: ENOSPC/EDQUOT in the chain, or a C++ stream error
    (torch.save, safetensors) with almost no space left where it wrote."""
    if disk_full_error(exc) is not None:
        return True
    try:
        return shutil.disk_usage(where).free < _LOW_SPACE
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@contextlib.contextmanager
def _written_aside(final: Path, what: str, after_full: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``final`` to write into; then fsync it and rename it into place
    (``final`` is replaced only once the new folder is complete). On any failure the temporary folder is
    removed; on a full disk the error becomes one OperationalError naming ENOSPC, ``what`` was being
    written, and ``after_full`` says what to do."""
    tmp = final.with_name(f".tmp_{final.name}.{os.getpid()}")  # per process: two writers never share one
    for stale in final.parent.glob(f".tmp_{final.name}*"):  # ours from before, or a dead writer's (a kill)
        pid = stale.name.rsplit(".", 1)[-1]
        if stale == tmp or not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():  # a stale copy (a rerun after a kill right after the rename): the new one wins
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException as e:
        full = isinstance(e, Exception) and disk_full(e, final.parent)  # a kill (SIGTERM, ^C) stays a kill
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
        save_weights(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({"step": step, "identity": identity}) + "\n")
        write_manifest(tmp, step)
    for old in _checkpoints(root)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_manifest(ckpt: Path, step: int) -> None:
    """``manifest.json``: the sha256 of every file of the checkpoint folder, written last (atomically)."""
    files = {str(p.relative_to(ckpt)): sha256_file(p) for p in sorted(ckpt.rglob("*"))
             if p.is_file() and p.name != MANIFEST_FILE}
    write_json(ckpt / MANIFEST_FILE, {"step": step, "files": files})


def check_checkpoint(ckpt: Path) -> tuple[str, str] | None:
    """Why a checkpoint cannot be resumed, as (reason tag, detail), or None when it is sound.

    Every file its manifest lists must exist with that sha256. A checkpoint without a manifest (written
    before manifests existed) must load instead: its trainer state with ``torch.load``, every
    safetensors file in full."""
    try:
        meta = json.loads((ckpt / META_FILE).read_text())
        int(meta["step"]), str(meta["identity"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return "meta", f"{META_FILE} unreadable ({type(e).__name__}: {e})"
    manifest = ckpt / MANIFEST_FILE
    if not manifest.exists():
        try:
            from safetensors.torch import load_file

            torch.load(ckpt / STATE_FILE, weights_only=False, map_location="cpu")
            for f in sorted(ckpt.glob("*.safetensors")):
                load_file(f)
        except Exception as e:
            return "unloadable", f"no {MANIFEST_FILE}, and it fails to load ({type(e).__name__}: {str(e)[:120]})"
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
        files.items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return "manifest", f"{MANIFEST_FILE} unreadable ({type(e).__name__}: {e})"
    for name, digest in sorted(files.items()):
        f = ckpt / name
        if not f.is_file():
            return "missing", f"{name} is missing"
        if sha256_file(f) != digest:
            return "checksum", f"{name} does not match its sha256 in {MANIFEST_FILE}"
    return None


def set_aside(ckpt: Path, reason: str) -> Path:
    """Rename a damaged checkpoint to ``<name>.bad-<reason>`` beside it (``.2``, ``.3``... if taken)."""
    dest = ckpt.with_name(f"{ckpt.name}.bad-{reason}")
    n = 1
    while dest.exists():
        n += 1
        dest = ckpt.with_name(f"{ckpt.name}.bad-{reason}.{n}")
    os.rename(ckpt, dest)
    return dest


def _checkpoints(root: Path) -> list[Path]:
    """The complete ``step_<n>`` folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name)
                  and (p / META_FILE).exists() and (p / STATE_FILE).exists())


def save_model(path: str | Path, model, tokenizer) -> None:
    """The final model and tokenizer (``save_pretrained``; a LoRA policy's adapter, :func:`save_weights`),
    written aside and renamed into place: never a half-written model folder, and a full disk is named (ENOSPC)."""
    with _written_aside(Path(path), "the model", ": free some space and rerun the same command") as tmp:
        save_weights(model, tmp)
        tokenizer.save_pretrained(str(tmp))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint/step_<n>/`` of a run folder, or None."""
    done = _checkpoints(Path(run_dir) / CHECKPOINT_DIR)
    return done[-1] if done else None


def resume_point(run_dir: str | Path, cfg) -> tuple[Path | None, int | None]:
    """(checkpoint, step) to resume from, or (None, None) for a clean start.

    The newest sound checkpoint (:func:`check_checkpoint`) is resumed; a damaged one is set aside
    (``step_<n>.bad-<reason>``, one warning line) and the one before it is tried. Resumes only a
    checkpoint written by a run of the same identity (its config minus tracking); any other
    checkpoint, or leftovers of a run that never checkpointed, are removed (the tracker removes the
    folder's old metrics: a clean start never inherits them). Set-aside checkpoints stay."""
    run_dir = Path(run_dir)
    for ck in reversed(_checkpoints(run_dir / CHECKPOINT_DIR)):
        bad = check_checkpoint(ck)
        if bad is not None:
            reason, detail = bad
            dest = set_aside(ck, reason)
            older = [p for p in _checkpoints(run_dir / CHECKPOINT_DIR) if p.name < ck.name]
            log.warning("damaged checkpoint %s (%s): set aside as %s; %s", ck, detail, dest.name,
                        f"resuming from {older[-1].name} instead" if older else "starting clean")
            continue
        meta = json.loads((ck / META_FILE).read_text())
        if meta["identity"] == run_identity(cfg):
            return ck, int(meta["step"])
        log.warning("%s was written by another config (identity %s, this run %s): starting a new run",
                    ck, meta["identity"], run_identity(cfg))
        break
    remove_checkpoints(run_dir)
    return None, None


def load_state(ckpt: Path, map_location=None) -> dict:
    return torch.load(ckpt / STATE_FILE, weights_only=False, map_location=map_location)


def remove_checkpoints(run_dir: str | Path) -> None:
    """After the final model is saved (or on a clean start): the checkpoints are no longer needed.
    Checkpoints set aside as damaged (``*.bad-*``) are kept; the folder goes when nothing else is left."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        if ".bad-" not in p.name:
            shutil.rmtree(p, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()  # only when empty
