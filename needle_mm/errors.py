"""Every error Needle raises on purpose.

One base class, :class:`NeedleError`, and one subclass per kind of failure, so
callers can catch exactly what they mean. Errors about a file name the file;
errors about input name the offending value. Where a built-in exception is the
natural reading (a missing record is a ``KeyError``, a bad value a
``ValueError``) the subclass derives from it too, so generic code still works.
"""

from __future__ import annotations

__all__ = [
    "TransactionError",
    "ImportStateError",
    "SourceError",
    "NeedleError",
    "InvalidVectorError",
    "InvalidIdError",
    "DuplicateIdError",
    "RecordNotFoundError",
    "InvalidMetadataError",
    "CollectionNotFoundError",
    "CollectionExistsError",
    "InvalidConfigError",
    "FilterError",
    "InvalidArgumentError",
    "DatabaseNotFoundError",
    "NotANeedleFileError",
    "CorruptFileError",
    "UnsupportedVersionError",
    "ReadOnlyError",
    "DatabaseClosedError",
    "LockTimeoutError",
    "LinkedFileError",
    "DurabilityError",
    "ServerUnavailableError",
    "MissingDependencyError",
    "ShardError",
]


class NeedleError(Exception):
    """Base class of every error raised by needle_mm."""


class InvalidVectorError(NeedleError, ValueError):
    """A vector has the wrong dimension, a non-finite value or a bad type."""


class InvalidIdError(NeedleError, TypeError):
    """A record id is not a non-empty ``str``."""


class DuplicateIdError(NeedleError, ValueError):
    """``insert`` was given an id that is already stored (use ``upsert``)."""


class RecordNotFoundError(NeedleError, KeyError):
    """No live record has this id."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want prose
        return str(self.args[0]) if self.args else ""


class InvalidMetadataError(NeedleError, ValueError):
    """Metadata is not a JSON object that orjson can encode."""


class CollectionNotFoundError(NeedleError, KeyError):
    """No collection has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CollectionExistsError(NeedleError, ValueError):
    """``create_collection`` was given a name that is taken."""


class InvalidConfigError(NeedleError, ValueError):
    """A collection configuration is invalid (dimension, distance, parameters)."""


class FilterError(NeedleError, ValueError):
    """A filter is malformed: unknown operator, wrong operand type, ..."""


class DatabaseNotFoundError(NeedleError, FileNotFoundError):
    """A read-only open named a file that does not exist."""


class InvalidArgumentError(NeedleError, ValueError):
    """An argument other than a vector, id, metadata or filter is invalid (``k=-1``, ...)."""


class NotANeedleFileError(NeedleError):
    """The file does not start with Needle's magic bytes."""


class CorruptFileError(NeedleError):
    """The file is a Needle file but a structure in it is damaged."""


class UnsupportedVersionError(NeedleError):
    """The file was written by a newer format version than this code knows."""


class ReadOnlyError(NeedleError):
    """A write was attempted through a database opened read-only."""


class DatabaseClosedError(NeedleError):
    """The database (or a collection of it) was used after ``close()``."""


class LockTimeoutError(NeedleError, TimeoutError):
    """The writer lock could not be taken within the timeout."""


class ImportStateError(NeedleError):
    """An import cannot start or resume given what the target collection already holds."""


class SourceError(NeedleError):
    """An import source is missing, unreadable, or holds records Needle cannot take."""


class TransactionError(NeedleError):
    """A transaction was misused: nested, or ``save()`` called inside one."""


class LinkedFileError(NeedleError):
    """A writer refused a file that has several hard links (SPEC.md §7): open it read-only or give it one name."""


class DurabilityError(NeedleError, OSError):
    """``save()`` committed a generation that other processes may already read,
    but syncing it to disk failed: it may not survive a power loss. The writes
    are no longer pending; the Database reads the new generation."""


class ServerUnavailableError(NeedleError, ConnectionError):
    """A Needle server could not be reached, or the connection failed before its
    answer arrived (refused, unknown host, reset, timed out); the message names the URL.

    When a write's connection fails after the request was sent, the write may or
    may not have been applied: read back before retrying an ``insert``."""


class MissingDependencyError(NeedleError, ImportError):
    """An optional feature needs a package that is not installed (stemming needs
    PyStemmer); the message names the extra that installs it."""


class ShardError(NeedleError):
    """A sharded collection (``needle_mm.distributed``) cannot be used as its
    manifest says: the manifest is missing or malformed, or a shard file is
    missing, corrupt, or holds a collection other than the manifest's. The
    message names the manifest or the shard file (and its number)."""
