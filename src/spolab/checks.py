"""Config checks: a value's test and its one-line message (``<key>=<value>: must be <range>``).

The constructors (``integer``, ``number``, ``one_of``, ...) build the rules that the entry tables of
:mod:`spolab.validate` and each algorithm's ``config_rules`` (:mod:`spolab.algos`) declare; this
module imports nothing of spolab but its errors, so both can use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from spolab.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """``test(value)`` returns None when the value is good, else what it must be ("an integer >= 1");
    a list check carries the check of each of its items."""

    test: Callable[[Any], str | None]
    item: Check | None = None

    def __call__(self, key: str, value: Any) -> None:
        why = self.test(value)
        if why is not None:
            raise ConfigError(f"{key}={value!r}: must be {why}")
        if self.item is not None:
            for i, v in enumerate(value):
                self.item(f"{key}[{i}]", v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def _in_range(v, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    return ((lo is None or (v > lo if lo_open else v >= lo))
            and (hi is None or (v < hi if hi_open else v <= hi)))


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    desc = " ".join(filter(None, ["an integer", _bounds(lo, hi, False, False)]))
    return Check(lambda v: None if _is_int(v) and _in_range(v, lo, hi, False, False) else desc)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    bounds = _bounds(lo, hi, lo_open, hi_open)

    def test(v):
        if not _is_num(v) or not math.isfinite(v):
            return " ".join(filter(None, ["a finite number", bounds]))
        return None if _in_range(v, lo, hi, lo_open, hi_open) else bounds

    return Check(test)


def positive() -> Check:
    return number(0, lo_open=True)


def beta(*, divisor: bool = False) -> Check:
    """β, the KL coefficient: >= 0 (0 turns the KL term off), > 0 where it is a divisor (SPO's Q̂0 and bce
    loss, the exact testbed's)."""
    return number(0, lo_open=divisor)


def fraction(*, lo_open: bool = False, hi_open: bool = False) -> Check:
    return number(0, 1, lo_open=lo_open, hi_open=hi_open)


def one_of(*choices: str) -> Check:
    return Check(lambda v: None if isinstance(v, str) and v in choices else f"one of {sorted(choices)}")


def registered(module: str, registry: str) -> Check:
    """A name of a registry (``spolab.utils.Registry``) or of a tuple of names, read from ``module`` when
    checked: the valid names are the code's, and the module is not imported before a check needs it."""

    def test(v):
        import importlib

        names = sorted(getattr(importlib.import_module(module), registry))
        return None if isinstance(v, str) and v in names else f"one of {names}"

    return Check(test)


def text() -> Check:
    return Check(lambda v: None if isinstance(v, str) and v.strip() else "a non-empty string")


def boolean() -> Check:
    return Check(lambda v: None if isinstance(v, bool) else "true or false")


def optional(check: Check) -> Check:
    return Check(lambda v: None if v is None else (None if check.test(v) is None else f"null or {check.test(v)}"))


def items(item: Check, *, nonempty: bool = True) -> Check:
    """A list whose every element passes ``item`` (reported as ``key[i]``)."""
    what = "a non-empty list" if nonempty else "a list"
    return Check(lambda v: None if isinstance(v, list) and (v or not nonempty) else what, item)


Rule = tuple[str, Check]

_ABSENT = object()


def _plain(v):
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v


def get(cfg, key: str):
    """The resolved value at a dotted key; a missing key or a broken interpolation is a ConfigError."""
    try:
        v = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        v = _plain(v)
    except Exception as e:  # omegaconf's interpolation and missing-value errors
        raise ConfigError(f"{key}: cannot be resolved ({type(e).__name__}: {_one_line(e)})") from None
    if v is _ABSENT:
        raise ConfigError(f"{key}: missing from the configuration (see conf/)")
    return v


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def apply_rules(cfg, rules: Sequence[Rule], prefix: str = "") -> None:
    """Check every ``(key, check)`` of ``rules`` on ``cfg``; keys are reported as ``prefix + key``."""
    for key, check in rules:
        if key.endswith("?"):  # checked only where the config has it
            key = key[:-1]
            if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
                continue
        try:
            value = get(cfg, key)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
        check(prefix + key, value)
