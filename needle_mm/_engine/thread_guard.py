"""How threads share one :class:`~needle_mm.Database` (SPEC.md §7.2).

Two locks, always taken in this order:

- ``mutation`` (a re-entrant lock): held by every change to the in-memory
  state (a write, a refresh, a save, a whole transaction, close). Changes of
  one process are thus serialised as the file lock serialises them across
  processes; a save holds it from its plan to its commit, so a write made by
  another thread meanwhile waits and is never planned against a stale
  snapshot or dropped by the save that did not include it.
- ``view`` (shared/exclusive): readers hold it shared while they read the
  state; a writer holds it exclusive only while it changes the state in
  place (appending pending records, setting exclusion bits, swapping in a new
  snapshot), so a read never sees half of a change and never waits for a
  save's slow part (the graph insertion).

A thread that holds ``view`` shared must not ask for it exclusive (that
would wait for itself); reads therefore refresh before they take it, and a
read nested in another read never refreshes.
"""

from __future__ import annotations

import threading


class _PerThread(threading.local):
    depth = 0  # this thread's nested shared holds
    counted = False  # whether its outermost hold counts as a reader (not when it is the writer)


class SharedExclusiveLock:
    """Many readers or one writer; re-entrant for both, and a writer's thread
    may also read. Writers are preferred: a waiting writer stops new readers,
    so a stream of searches cannot starve a save.

    Readers take no mutex when no writer is about (the hot path: a search).
    A reader registers by appending to ``_active`` and then looks for a
    writer; a writer announces itself (``_writers_waiting``, under the
    mutex) and then waits for ``_active`` to empty. Each side publishes
    before it looks, and list appends and pops are atomic, so at least one
    of the two sees the other: the reader backs off and waits, or the writer
    waits for it; a reader leaving while a writer waits wakes it."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._active: list[None] = []  # one entry per reader inside
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0
        self._local = _PerThread()

    def held_shared(self) -> bool:
        """True if this thread holds the lock shared (and is not its writer)."""
        local = self._local
        return local.depth > 0 and local.counted

    def acquire_shared(self) -> None:
        local = self._local
        depth = local.depth
        if depth:
            local.depth = depth + 1
            return
        writer = self._writer
        if writer is not None and writer == threading.get_ident():
            local.depth, local.counted = 1, False
            return
        active = self._active
        while True:
            active.append(None)  # publish, then look
            if self._writer is None and not self._writers_waiting:
                break
            active.pop()
            self._wake_writers()
            with self._cond:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
        local.depth, local.counted = 1, True

    def release_shared(self) -> None:
        local = self._local
        depth = local.depth - 1
        local.depth = depth
        if depth == 0 and local.counted:
            self._active.pop()
            if self._writers_waiting:
                self._wake_writers()

    def _wake_writers(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        me = threading.get_ident()
        if self._writer == me:
            self._writer_depth += 1
            return
        if self.held_shared():
            raise RuntimeError("needle_mm internal error: a thread reading a Database asked to change it")
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._active:
                    self._cond.wait()
                self._writer, self._writer_depth = me, 1  # before we stop waiting: no reader slips in between
            finally:
                self._writers_waiting -= 1

    def release_exclusive(self) -> None:
        self._writer_depth -= 1
        if self._writer_depth == 0:
            with self._cond:
                self._writer = None
                self._cond.notify_all()


class ThreadGuard:
    """The two locks of one Database (see the module docstring)."""

    def __init__(self):
        self.mutation = threading.RLock()
        self.view = SharedExclusiveLock()
