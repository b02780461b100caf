"""The public Database: one file, named collections, checkpoints.

A façade over the engine (``_engine/engine.py``), which owns the file, the
snapshots, the pending writes and the commit protocol (SPEC.md §6, §7).
Here: the documented API, and turning a user's configuration into a
collection descriptor.
"""

from __future__ import annotations

import contextlib
import os

from ._engine.engine import Engine
from ._format.catalog import MAX_NAME_BYTES, CollectionDescriptor, HnswParams
from ._storage.lock import DEFAULT_TIMEOUT
from .collection import Collection
from .config import CollectionConfig, DistanceFunction
from .errors import CollectionExistsError, CollectionNotFoundError, DatabaseClosedError, InvalidConfigError

__all__ = ["Database"]

_CONFIG_KEYWORDS = ("distance", "m", "ef_construction", "ef_search", "seed", "sparse", "dtype", "quantization",
                    "text_field", "text_options", "exist_ok")


def _shown(value) -> str:
    return repr(value.value if isinstance(value, DistanceFunction) else value)


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidConfigError(f"collection names must be non-empty strings, got {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidConfigError(f"collection name is longer than {MAX_NAME_BYTES} bytes of UTF-8")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidConfigError(f"collection name {name!r} is not valid Unicode") from None
    return name


class Database:
    """A Needle file. Open with :meth:`Database.open`.

    Use as a context manager to save on a clean exit and close always::

        with needle.Database.open("vectors.needle") as db:
            db.create_collection("docs", 384)
            ...

    One Database may be shared by many threads (SPEC.md §7.2).
    """

    def __init__(self, engine: Engine):
        self.engine = engine  # needle_mm's own operations (ops, importers) work through it

    @property
    def path(self) -> str:
        return self.engine.path

    @property
    def read_only(self) -> bool:
        return self.engine.read_only

    @property
    def auto_refresh(self) -> bool:
        return self.engine.auto_refresh

    # ------------------------------------------------------------ open/close

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False, *,
             lock_timeout: float = DEFAULT_TIMEOUT, auto_refresh: bool = True,
             autocommit: bool = False) -> "Database":
        """Open (and, unless ``read_only``, create if missing) the database file at ``path``.

        Parameters
        ----------
        path : str or path-like
            The ``.needle`` file. Its writer lock is ``<file>.lock``, ``<file>``
            the path with symlinks resolved.
        read_only : bool
            Open for reading only: never writes anything, not even a lock file.
        lock_timeout : float
            Seconds a ``save()`` waits for another writer before raising
            :class:`~needle_mm.errors.LockTimeoutError`.
        auto_refresh : bool
            Before each operation, check (one 64-byte read) whether another
            process has saved a newer generation, and move to it as
            :meth:`refresh` does. With ``False`` the process keeps reading the
            generation it has until it calls :meth:`refresh` or :meth:`save`.
        autocommit : bool
            Make every write call (``insert``, ``upsert_many``, ``delete``,
            ``update_metadata``, ``create_collection``, ...) its own commit, as
            SQLite's autocommit does; a ``transaction()`` block is still one
            commit. If a write's commit fails (a full disk, a lock timeout, an
            insert raced by another writer) it raises, the write stays
            pending, and the next write or ``save()`` retries it. Without it,
            writes wait for ``save()``, and closing a Database that holds
            unsaved writes discards them with a ``ResourceWarning`` saying how many.
        """
        return cls(Engine.open(path, read_only, lock_timeout=lock_timeout, auto_refresh=auto_refresh,
                               autocommit=autocommit))

    def close(self) -> None:
        """Release the file. Unsaved writes are discarded (with a ``ResourceWarning``
        saying how many). Waits for calls of other threads that are running on this Database."""
        self.engine.close(stacklevel=3)  # the warning names the caller's line

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and not self.engine.closed and not self.read_only:
                self.save()
        finally:
            # leaving on an error: the writes were not saved because of it; no warning on top
            self.engine.close(warn=exc_type is None, stacklevel=3)

    def __repr__(self) -> str:
        try:
            state = f"generation {self.engine.snapshot.generation}"
        except DatabaseClosedError:  # also while another thread closes it
            state = "closed"
        return f"Database({self.path!r}, {'read-only, ' if self.read_only else ''}{state})"

    # ------------------------------------------------------------ collections

    def create_collection(self, name: str, dimension: int, distance: DistanceFunction | str = DistanceFunction.Cosine,
                          *, m: int | None = None, ef_construction: int | None = None, ef_search: int | None = None,
                          seed: int | None = None, sparse: bool | None = None, dtype: str | None = None,
                          quantization: str | None = None, text_field: str | None = None,
                          text_options: dict | None = None, exist_ok: bool = False, **unknown) -> Collection:
        """Create a collection of ``dimension``-long vectors (cosine distance by default).

        Parameters
        ----------
        name : str
            The collection's name (up to 255 bytes of UTF-8).
        dimension : int
            Length of every vector (sparse collections: the index space, e.g. a vocabulary size).
        distance : DistanceFunction or str
            ``"cosine"`` (default), ``"euclidean"`` / ``"l2"`` or ``"dot"`` / ``"ip"``.
        m, ef_construction, ef_search, seed : int, optional
            HNSW parameters (defaults 16, 200, 64, 0); see :class:`CollectionConfig`.
        sparse : bool, optional
            A collection of sparse vectors (needs ``distance="dot"``).
        dtype : str, optional
            ``"f32"`` (default) or ``"f16"`` (half the size; values rounded to float16).
        quantization : str, optional
            ``"int8"`` / ``"binary"``: search walks one-byte / one-bit codes and
            rescores exactly (see :class:`CollectionConfig`); default none. A ``get_or_create`` that
            passes ``quantization="none"`` asks for an unquantized collection.
        text_field, text_options : optional
            Index this metadata field for full-text and hybrid search, analysed
            and ranked as ``text_options`` say (see :class:`CollectionConfig`).
        exist_ok : bool
            If a collection of this name exists, return it instead of raising
            :class:`CollectionExistsError` -- provided it matches: its dimension
            and distance, and every other parameter given here. A mismatch is a
            ``CollectionExistsError`` naming each difference.
        """
        if unknown:
            raise InvalidConfigError(f"create_collection got unknown parameter(s) {', '.join(map(repr, sorted(unknown)))}; "
                                     f"known: {', '.join(_CONFIG_KEYWORDS)}")
        given = {key: value for key, value in (("m", m), ("ef_construction", ef_construction),
                                               ("ef_search", ef_search), ("seed", seed), ("sparse", sparse),
                                               ("dtype", dtype), ("quantization", quantization),
                                               ("text_field", text_field), ("text_options", text_options))
                 if value is not None}
        if given.get("quantization") == "none":
            given["quantization"] = None
        config = CollectionConfig(dimension, distance, **given)
        if exist_ok:
            return self._get_or_create(name, config, {"dimension", "distance", *given})
        return self.create_collection_with_config(name, config)

    def get_or_create_collection(self, name: str, dimension: int,
                                 distance: DistanceFunction | str = DistanceFunction.Cosine, *,
                                 m: int | None = None, ef_construction: int | None = None,
                                 ef_search: int | None = None, seed: int | None = None,
                                 sparse: bool | None = None, dtype: str | None = None,
                                 quantization: str | None = None, text_field: str | None = None,
                                 text_options: dict | None = None, **unknown) -> Collection:
        """The collection called ``name``, created as :meth:`create_collection` would if
        it does not exist: ``create_collection(..., exist_ok=True)`` (as Chroma's
        ``get_or_create_collection``). An existing collection whose dimension,
        distance or any parameter given here differs raises
        :class:`CollectionExistsError` naming the differences."""
        unknown.pop("exist_ok", None)  # it is what this method means
        return self.create_collection(name, dimension, distance, m=m, ef_construction=ef_construction,
                                      ef_search=ef_search, seed=seed, sparse=sparse, dtype=dtype,
                                      quantization=quantization, text_field=text_field,
                                      text_options=text_options, exist_ok=True, **unknown)

    def _get_or_create(self, name: str, config: CollectionConfig, compared: set[str]) -> Collection:
        _check_name(name)
        for _ in range(2):  # a create racing ours (another thread) leaves one to compare with
            try:
                existing = self.collection(name)
            except CollectionNotFoundError:
                try:
                    return self.create_collection_with_config(name, config)
                except CollectionExistsError:
                    continue
            differences = [f"{key} is {_shown(getattr(existing.config, key))}, not {_shown(getattr(config, key))}"
                           for key in sorted(compared) if getattr(existing.config, key) != getattr(config, key)]
            if differences:
                raise CollectionExistsError(f"collection {name!r} exists with a different configuration: "
                                            + "; ".join(differences))
            return existing
        raise CollectionExistsError(f"collection {name!r} was created and dropped while being looked up")

    def create_collection_with_config(self, name: str, config: CollectionConfig) -> Collection:
        """Create a collection from a :class:`CollectionConfig`."""
        _check_name(name)
        if not isinstance(config, CollectionConfig):
            raise InvalidConfigError(f"config must be a CollectionConfig, got {type(config).__name__}")
        meta = CollectionDescriptor(
            name=name, dim=config.dimension, distance=config.distance.value, dtype=config.dtype,
            kind="sparse" if config.sparse else "dense",
            hnsw=HnswParams(config.m, config.ef_construction, config.ef_search, config.seed),
            quantization=config.quantization,
            text=config.text_index,
        )
        self.engine.create_collection(name, meta)
        return Collection(self.engine, name)

    def collection(self, name: str) -> Collection:
        """The collection called ``name``; :class:`CollectionNotFoundError` if there is none."""
        with self.engine.reading():
            self.engine.state(name)
        return Collection(self.engine, name)

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return self.engine.list_collections()

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records (on disk at the next ``save``)."""
        self.engine.drop_collection(name)

    # ------------------------------------------------------------ checkpoints

    @property
    def generation(self) -> int:
        """The committed generation this process reads (grows with every save)."""
        return self.engine.snapshot.generation

    @property
    def dirty(self) -> bool:
        """True when there are writes not yet saved."""
        return self.engine.dirty

    def refresh(self) -> bool:
        """Move to the newest committed generation; returns True if it changed.

        Pending (unsaved) writes of this process are kept and stay on top. If
        ``needle rebuild`` or ``needle compact`` has replaced the file at this
        path, the process moves to the new file (SPEC §7).
        """
        return self.engine.refresh()

    def save(self, progress=None) -> None:
        """Checkpoint: make every write so far durable and visible to other processes.

        ``progress``: ``True`` draws a bar of the graph nodes indexed (with
        tqdm, when installed), a callable receives ``(done, total)``. Each save
        logs its duration, records and bytes on the ``needle_mm`` logger (INFO).

        Threads sharing this Database are serialised: a save waits for another
        thread's save or transaction to end, and commits every write made
        before it started.

        Raises
        ------
        LockTimeoutError
            Another writer held the writer lock longer than ``lock_timeout``.
        DuplicateIdError
            An id this Database ``insert``-ed was meanwhile committed by another
            writer; nothing is committed and the writes stay pending (upsert
            or delete that id, then save again).
        DurabilityError
            The commit is made and other processes may already read it, but
            the final ``fsync`` failed: it may not survive a power loss. The
            writes are no longer pending (this Database reads the new generation).
        OSError
            The disk is full or failing; the previous checkpoint is intact and
            the writes stay pending, so ``save()`` can be retried.
        """
        self.engine.save(progress)

    @contextlib.contextmanager
    def transaction(self, exclusive: bool = False):
        """Group writes into one checkpoint: all of them become visible to other
        processes together when the block ends, or none if it raises.

        ::

            with db.transaction():
                db.collection("orders").upsert("o1", v, {"state": "paid"})
                db.collection("ledger").insert("l9", w, {"order": "o1"})

        Reads inside the block see its own writes. Writes made before the block
        and not yet saved are committed with it (and kept if it rolls back).
        The writer lock is taken only to commit, at the end; with
        ``exclusive=True`` it is held for the whole block, so no other process
        commits in between (its ``save()`` waits, up to its ``lock_timeout``).
        Other threads' writes and saves on this Database wait for the block to
        end. Transactions do not nest, and ``save()`` inside one raises
        :class:`TransactionError`.
        """
        with self.engine.transaction(exclusive):
            yield self
