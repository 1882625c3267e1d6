"""Stopping a training run that diverged, with its cause, instead of a traceback from wherever the NaN lands.

Two places see a divergence first, and each only reads values the step computed anyway (no extra
device sync, no change to the arithmetic):

- :func:`spolab.train.train_step`: a non-finite loss or gradient norm among the update's metrics
  (:func:`check_metrics`: the floats the algorithm already copied to the host), so no NaN loss is ever
  logged as if it were a value (metrics.jsonl would hold a null);
- the sampler, whose ``torch.multinomial`` refuses a non-finite distribution: weights so large after an
  update that the next forward pass's log-probs are NaN or infinite.

:func:`stop_on_divergence` wraps one update of the RL loop and turns any of them into one
:class:`Diverged` error naming the update, the quantity and the setting to lower (``algo.lr``); the
entry point prints it as one line and exits 2 (spolab.cli), the MLflow run ends FAILED (the tracker's
``__exit__``), and the folder keeps its last checkpoint, which a rerun with a lower ``algo.lr`` does
not resume (another config), and a rerun of the same command would diverge again from.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

from omegaconf import OmegaConf

from spolab.checkpoint import latest_checkpoint
from spolab.errors import SpolabError

# what the algorithms log that must be finite: the losses and the gradient norms
WATCHED = ("loss/", "opt/grad_norm", "critic/grad_norm")
SAMPLER_ERROR = "probability tensor contains either `inf`, `nan` or element < 0"  # torch.multinomial's


class Diverged(SpolabError):
    """Training produced a non-finite loss, gradient norm or log-prob: which, where, what to lower."""

    kind = "training diverged"

    def __init__(self, what: str, key: str = "algo.lr"):
        super().__init__(what)
        self.what, self.key = what, key


def check_metrics(metrics: Mapping[str, object]) -> None:
    """Raise Diverged for the first watched metric (a loss, a gradient norm) that is NaN or infinite."""
    for k, v in metrics.items():
        if k.startswith(WATCHED) and isinstance(v, int | float) and not math.isfinite(v):
            raise Diverged(f"{k} is {v}")


@contextlib.contextmanager
def stop_on_divergence(update: int, cfg) -> Iterator[None]:
    """Around update ``update`` (1-based) of an RL run: a divergence becomes one Diverged line naming the
    update, the quantity, the setting and its value, and the checkpoint that is kept."""
    try:
        yield
    except Diverged as e:
        raise Diverged(_message(update, cfg, e.what, e.key), e.key) from e
    except RuntimeError as e:
        if SAMPLER_ERROR not in str(e):
            raise
        what = ("the policy's sampling log-probs are NaN or infinite (the weights after the previous update "
                "overflow the logits)")
        raise Diverged(_message(update, cfg, what, "algo.lr"), "algo.lr") from e


def _message(update: int, cfg, what: str, key: str) -> str:
    value = OmegaConf.select(cfg, key, default=None)
    ckpt = latest_checkpoint(cfg.out_dir) if "out_dir" in cfg else None
    kept = (f"the last checkpoint {Path(ckpt).name} is kept" if ckpt is not None
            else "no checkpoint was written before it")
    return (f"update {update} of {cfg.updates}: {what}; the likely cause is {key}={value}, too high for this run: "
            f"lower {key} (or algo.grad_clip) and rerun; training stopped there, nothing of this update was "
            f"logged, {kept}")
