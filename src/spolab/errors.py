"""The two kinds of error an entry point turns into a one-line message and exit status 2.

- :class:`ConfigError`: a configuration value that cannot work (names the key, its value and the
  valid range), raised at start-up before any model is loaded or any sample drawn.
- :class:`OperationalError`: the machine said no (a full disk, a read-only or locked tracking
  database, ...); the message says what happened, where, and what to do.

``python -m spolab.<step>`` prints ``spolab.<step>: <kind>: <message>`` on stderr and exits 2,
without a traceback; ``SPOLAB_DEBUG=1`` re-raises so the traceback is shown.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator


class SpolabError(Exception):
    """Base of the errors an entry point reports as one line (exit status 2)."""

    kind = "error"


class ConfigError(SpolabError, ValueError):
    """A configuration that cannot work, with the key to change, its value and the valid range."""

    kind = "configuration error"


class OperationalError(SpolabError, OSError):
    """The environment refused (disk full, database read-only or locked): what, where, what to do."""

    kind = "operational error"


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and its chain of causes and contexts, outermost first (a cycle is walked once)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full_error(exc: BaseException | None) -> OSError | None:
    """The first ``OSError`` in the chain that says the disk is full (ENOSPC, or a quota: EDQUOT)."""
    return next((e for e in causes(exc) if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)),
                None)
