"""The writer lock: ``filelock.FileLock`` on the sidecar ``<db>.lock``.

The lock file is never deleted (deleting it would let two writers hold two
different inodes). The kernel drops a dead holder's ``flock`` automatically,
so a killed writer never blocks the next one.
"""

from __future__ import annotations

from ..errors import LockTimeoutError

DEFAULT_TIMEOUT = 30.0


class WriterLock:
    def __init__(self, db_path: str, timeout: float = DEFAULT_TIMEOUT):
        import filelock  # here, not at import: a reader never takes this lock (filelock costs ~10 ms to import)

        self.path = db_path + ".lock"
        self.timeout = timeout
        self._timeout_error = filelock.Timeout
        self._lock = filelock.FileLock(self.path, timeout=timeout)

    def __enter__(self) -> "WriterLock":
        try:
            self._lock.acquire()
        except self._timeout_error:
            raise LockTimeoutError(
                f"could not take the writer lock {self.path!r} within {self.timeout:g} s: "
                "another process is committing to this database"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    @property
    def held(self) -> bool:
        return self._lock.is_locked
