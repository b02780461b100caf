"""How long work reports itself: the ``needle_mm`` logger and ``progress=``.

The library prints nothing. Every save, rebuild, compact and import logs one
INFO record on ``logging.getLogger("needle_mm")`` with its duration, records
and bytes. A caller that wants to watch passes ``progress``: ``True`` draws a
tqdm bar on stderr (when tqdm is installed; nothing otherwise), a callable
receives ``(done, total)`` as the work advances.

The work that takes the time (graph building) is deep below the call that
started it, so the active :class:`Progress` travels in a context variable:
the build loops call :func:`expect` and :func:`advance`, which cost one
lookup when nobody watches. A context variable is per thread, so a save in
one thread never reports into another thread's bar.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from typing import Callable

from .errors import InvalidArgumentError

log = logging.getLogger("needle_mm")

_active: contextvars.ContextVar["Progress | None"] = contextvars.ContextVar("needle_mm_progress", default=None)


class Progress:
    """``(done, total)`` of one operation, sent to a callable and/or a tqdm bar.

    ``total`` may grow while the work runs (a save learns how many nodes each
    collection's graph needs only when it plans that collection)."""

    def __init__(self, callback: Callable[[int, int], object] | None, bar=None):
        self.callback = callback
        self.bar = bar
        self.done = 0
        self.total = 0

    def expect(self, n: int) -> None:
        if n > 0:
            self.total += n
            if self.bar is not None:
                self.bar.total = self.total
                self.bar.refresh()
            self._notify()

    def advance(self, n: int) -> None:
        if n > 0:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            self._notify()

    def _notify(self) -> None:
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def make(progress, label: str, unit: str = " rec") -> Progress | None:
    """The :class:`Progress` a ``progress=`` argument asks for (None: nobody watches)."""
    if progress is None or progress is False:
        return None
    if progress is True:
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return Progress(None, tqdm(total=None, unit=unit, desc=label, file=sys.stderr, leave=False))
    if callable(progress):
        return Progress(progress)
    raise InvalidArgumentError(f"progress must be True, False, None or a callable taking (done, total), "
                               f"got {progress!r}")


@contextlib.contextmanager
def reporting(progress, label: str, unit: str = " rec"):
    """Within the block, build loops report to the Progress ``progress`` asks for
    (an enclosing one, if this call asks for none: an import's saves feed its bar)."""
    made = make(progress, label, unit)
    if made is None:
        yield _active.get()
        return
    token = _active.set(made)
    try:
        yield made
    finally:
        _active.reset(token)
        made.close()


def expect(n: int) -> None:
    """The running operation has ``n`` more units of work to do."""
    p = _active.get()
    if p is not None:
        p.expect(n)


def advance(n: int) -> None:
    """``n`` units of the running operation are done."""
    p = _active.get()
    if p is not None:
        p.advance(n)


def plural(n: int, noun: str) -> str:
    """``"1 record"``, ``"2 records"``, with thousands separated."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
