"""The learning-rate schedule of every optimiser (SFT's and the RL algorithms'): linear warm-up,
then constant or cosine decay."""

from __future__ import annotations

import math


def lr_at(step: int, *, warmup: int, shape: str = "cosine", total: int = 1, min_ratio: float = 0.0,
          peak: float = 1.0, decay_after_warmup: bool = False) -> float:
    """The learning rate before optimiser step ``step`` (0-based), as a multiple of 1 (``peak`` 1, a
    factor) or the rate itself (``peak`` = lr).

    Linear warm-up over the first ``warmup`` steps, ``peak · (step + 1) / warmup``: Adam's first steps
    are sign steps of norm lr·√N whatever the gradient's size, so the first one is taken at lr / warmup.
    Then ``constant`` (``peak``) or ``cosine``: ``w · (r + (1 − r)·(1 + cos(π·p))/2)`` with r =
    ``min_ratio`` and p = min(1, (step − s) / max(1, total − s)). Two shapes of cosine:

    - ``decay_after_warmup=False`` (RL): the decay starts at step 0 (s = 0) and the warm-up ramp
      multiplies it (w = the warm-up value while warming up, then ``peak``);
    - ``decay_after_warmup=True`` (SFT): the warm-up ramp alone, then the decay over the remaining
      steps (s = ``warmup``, w = ``peak``).
    """
    if warmup > 0 and step < warmup:
        w = peak * (step + 1) / warmup
        if decay_after_warmup:
            return w
    else:
        w = peak
    if shape == "constant":
        return w
    start = warmup if decay_after_warmup else 0
    p = min(1.0, (step - start) / max(1, total - start))
    return w * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))
