"""``ShardedCollection``: one collection spread over the shard files of a manifest,
each served by a Ray actor, searched together and merged exactly.

What is exact: each shard returns its own best ``k`` (by the same kernels a
single file uses), and the merge keeps the ``k`` smallest distances of their
union, ties by id; with ``exact=True`` that is record for record the
brute-force answer over all shards. With HNSW each shard's walk is
approximate on its own part, as a single file's is on the whole.

What is atomic: a write goes to the one shard its id hashes to, and is
checked in full (every id, vector and metadata, and for inserts that no id
is live in any shard) before any shard is sent anything, so a rejected
batch changes nothing. ``save()`` commits each touched shard atomically and
in parallel, but not all of them as one: if one shard's save fails, the
others may have committed (the error names which). Readers of a shard move
to its new generation one shard at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .. import _input
from ..errors import DuplicateIdError, InvalidArgumentError, RecordNotFoundError, ShardError
from ..filters import compile_filter
from ..results import Entry, GivenMetadata, SearchResult, SearchResults
from .manifest import Manifest, read_manifest
from .runtime import needle_cause, raise_cause, ray_module

_MISSING = object()
OPEN_TIMEOUT = 600.0  # seconds for every actor to be placed and open its shard


WAVE_MIN_QUERIES = 64  # a batch this large is searched one shard at a time when the shards outnumber the CPUs


class ShardedCollection:
    """Open with :meth:`open`; search, read and write as a
    :class:`~needle_mm.Collection` (no text or sparse search)."""

    def __init__(self, manifest: Manifest, actors: list, infos: list[dict], read_only: bool, at_once: int):
        self._manifest = manifest
        self._actors = actors
        self._infos = infos
        self._read_only = read_only
        self._at_once = at_once
        self._touched: set[int] = set()
        self._ray = ray_module()

    # --------------------------------------------------------------- opening

    @classmethod
    def open(cls, manifest: str | os.PathLike, *, read_only: bool = False,
             actor_options: dict | None = None) -> "ShardedCollection":
        """Start one Ray actor per shard of ``manifest`` (the path ``build_shards``
        returned), each opening its shard read-only, and check every shard
        against the manifest: a missing, corrupt or different shard is a
        :class:`~needle_mm.errors.ShardError` naming it.

        ``read_only=True`` refuses writes. ``actor_options`` go to Ray's
        ``.options()`` for each actor (default ``num_cpus=0``: an actor waits
        on memory, and a shard per CPU would otherwise leave shards unplaced;
        and a ``runtime_env`` setting each actor's search threads,
        ``NUMBA_NUM_THREADS``: the cluster's CPUs divided by the shards, or a
        node's CPUs when the shards outnumber the cluster's CPUs and a large
        batch is searched one shard at a time).
        """
        plan = read_manifest(manifest)
        for i, path in enumerate(plan.shards):
            if not os.path.isfile(path):
                raise ShardError(f"{plan.shard_name(i)} is missing (named by manifest {plan.path!r})")
        ray = ray_module()
        from .shard_server import ShardServer

        options = {"num_cpus": 0, **(actor_options or {})}
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if len(plan.shards) <= cpus:
            # Every actor searches a batch at once, each with its share of the
            # cluster's CPUs as search threads (measured: 4 actors of 2 threads on
            # 2 cores cost a third more than 1 thread each).
            at_once, threads = len(plan.shards), max(1, cpus // len(plan.shards))
        else:
            # More shards than CPUs: a large batch is searched one shard at a time,
            # each actor with a whole node's CPUs as threads. Measured on 2 CPUs, 4
            # shards, 1,000 queries: Ray's overhead over the shards searched one after
            # the other in one process +4..12 % this way, +18..28 % two shards at a
            # time on one thread each (two processes share the caches worse than two
            # threads of one, and a wave waits for its slower shard).
            at_once, threads = 1, _node_cpus(ray)
        if "runtime_env" not in options:
            options["runtime_env"] = {"env_vars": {"NUMBA_NUM_THREADS": str(threads)}}
        server = ray.remote(ShardServer)
        actors = [server.options(**options).remote(path, plan.collection, read_only) for path in plan.shards]
        infos: list = [None] * len(actors)
        try:
            pending = {actor.open.remote(): i for i, actor in enumerate(actors)}
            ready, unready = ray.wait(list(pending), num_returns=len(pending), timeout=OPEN_TIMEOUT)
            if unready:
                raise ShardError(f"{len(unready)} shard actor(s) were not running after {OPEN_TIMEOUT:.0f} s "
                                 f"(first: {plan.shard_name(pending[unready[0]])}); is the Ray cluster short "
                                 f"of the resources actor_options asks for?")
            for ref in ready:
                i = pending[ref]
                try:
                    infos[i] = ray.get(ref)
                except Exception as e:
                    raise ShardError(f"{plan.shard_name(i)} cannot be opened: {_message(e)}") from None
            for i, info in enumerate(infos):
                if info["dimension"] != plan.dimension or info["distance"] != plan.config.get("distance", "cosine"):
                    raise ShardError(f"{plan.shard_name(i)} holds collection {plan.collection!r} with dimension "
                                     f"{info['dimension']} and distance {info['distance']!r}; the manifest says "
                                     f"{plan.dimension} and {plan.config.get('distance', 'cosine')!r}")
        except BaseException:
            for actor in actors:
                ray.kill(actor)
            raise
        return cls(plan, actors, infos, read_only, at_once)

    def close(self) -> None:
        """Close every shard and stop its actor (unsaved writes are dropped, with a warning in the actor)."""
        actors, self._actors = self._actors, []
        if actors:
            self._ray.get([a.close.remote() for a in actors])
            for actor in actors:
                self._ray.kill(actor)

    def __enter__(self) -> "ShardedCollection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ShardedCollection({self._manifest.collection!r}, {len(self._manifest.shards)} shards, "
                f"manifest={self._manifest.path!r})")

    # --------------------------------------------------------------- facts

    @property
    def name(self) -> str:
        return self._manifest.collection

    @property
    def dimension(self) -> int:
        return self._manifest.dimension

    @property
    def shards(self) -> tuple[str, ...]:
        """The shard files, in shard order."""
        return self._manifest.shards

    def shard_of(self, id: str) -> int:
        """The shard that holds (or would hold) ``id``."""
        _input.id_bytes(id)
        return self._manifest.shard_of(id)

    # --------------------------------------------------------------- calls

    def _live(self) -> list:
        if not self._actors:
            raise ShardError(f"{self!r} is closed")
        return self._actors

    def _gather(self, refs: dict) -> dict:
        """``{shard: result}`` for ``{ref: shard}``; an actor's NeedleError raised as
        itself, anything else as a ShardError naming the shard."""
        out = {}
        for ref, i in refs.items():
            try:
                out[i] = self._ray.get(ref)
            except Exception as e:
                raise_cause(e)
                raise ShardError(f"{self._manifest.shard_name(i)} failed: {_message(e)}") from None
        return out

    def _each(self, method: str, *args) -> list:
        actors = self._live()
        results = self._gather({getattr(a, method).remote(*args): i for i, a in enumerate(actors)})
        return [results[i] for i in range(len(actors))]

    def _routed(self, ids: list[str]) -> dict[int, list[int]]:
        """Positions in ``ids`` per shard."""
        by_shard: dict[int, list[int]] = {}
        for pos, i in enumerate(ids):
            by_shard.setdefault(self._manifest.shard_of(i), []).append(pos)
        return by_shard

    # --------------------------------------------------------------- search

    def search(self, query, k: int = 10, filter: dict | None = None, *, ef: int | None = None,
               exact: bool = False, include_vector: bool = False, as_arrays: bool = False,
               rescore: int | None = None):
        """The ``k`` nearest records over all shards, closest first (as
        :meth:`Collection.search <needle_mm.Collection.search>`)."""
        q = _input.vector(query, self.dimension, "query")
        found = self.search_batch(q[None, :], k, filter, ef=ef, exact=exact, include_vector=include_vector,
                                  as_arrays=as_arrays, rescore=rescore)
        return (found[0][0], found[1][0]) if as_arrays else found[0]

    def search_batch(self, queries, k: int = 10, filter: dict | None = None, *, ef: int | None = None,
                     exact: bool = False, include_vector: bool = False, as_arrays: bool = False,
                     rescore: int | None = None):
        """:meth:`search` for each row of ``queries``: every shard searches the whole
        batch at once (the queries are put in Ray's object store once), then the
        shards' answers are merged per row."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InvalidArgumentError(f"k must be a non-negative integer, got {k!r}")
        if as_arrays and include_vector:
            raise InvalidArgumentError("as_arrays returns ids and distances only: drop include_vector, or as_arrays")
        queries = _input.matrix(queries, self.dimension, "queries")
        compile_filter(filter)  # a bad filter is refused here, once, not by every shard
        actors = self._live()
        # A large batch goes into the object store once for all shards; a small one
        # travels inline with each call (Ray inlines arguments under 100 KB).
        shared = self._ray.put(queries) if queries.nbytes > 64 * 1024 else queries
        args = (shared, k, filter, ef, exact, rescore) + (() if as_arrays else (include_vector,))
        # A small batch costs the round trips more than the actors' contention: all at once.
        at_once = self._at_once if len(queries) >= WAVE_MIN_QUERIES else len(actors)
        method = "search_arrays" if as_arrays else "search_hits"
        parts: dict = {}
        for w in range(0, len(actors), at_once):
            parts.update(self._gather({getattr(a, method).remote(*args): i
                                       for i, a in enumerate(actors[w:w + at_once], w)}))
        if as_arrays:
            return merge_arrays([parts[i] for i in range(len(actors))], k)
        return [merge_hits([parts[i][row] for i in range(len(actors))], k) for row in range(len(queries))]

    @property
    def searching_at_once(self) -> int:
        """How many shards search a batch of at least ``WAVE_MIN_QUERIES`` queries at
        a time: every shard, or one when the shards outnumber the cluster's CPUs."""
        return self._at_once

    # --------------------------------------------------------------- reads

    def count(self, filter: dict | None = None) -> int:
        """Live records over all shards (matching ``filter``)."""
        compile_filter(filter)
        return sum(self._each("count", filter))

    def __len__(self) -> int:
        return self.count()

    def get(self, id: str, default=_MISSING) -> Entry:
        """The record ``id`` (read from the one shard it hashes to); ``default`` if
        given and absent, else :class:`RecordNotFoundError`."""
        entry = self.get_many([id])[0]
        if entry is None:
            if default is _MISSING:
                raise RecordNotFoundError(f"no record with id {id!r} in sharded collection {self.name!r}")
            return default
        return entry

    def get_many(self, ids: Sequence[str]) -> list[Entry | None]:
        """The records with these ids, in the order given, ``None`` where absent."""
        if isinstance(ids, (str, bytes)):
            raise InvalidArgumentError("get_many takes a list of ids; use get() for one")
        ids = list(ids)
        for i in ids:
            _input.id_bytes(i)
        routed = self._routed(ids)
        actors = self._live()
        found = self._gather({actors[s].get_many.remote([ids[p] for p in pos]): s for s, pos in routed.items()})
        out: list[Entry | None] = [None] * len(ids)
        for s, pos in routed.items():
            for p, entry in zip(pos, found[s]):
                out[p] = entry
        return out

    def ids(self, filter: dict | None = None) -> list[str]:
        """Every live id (matching ``filter``), shard by shard."""
        compile_filter(filter)
        return [i for part in self._each("ids", filter) for i in part]

    # --------------------------------------------------------------- writes

    def _writing(self) -> list:
        if self._read_only:
            from ..errors import ReadOnlyError
            raise ReadOnlyError(f"{self!r} was opened read_only=True")
        return self._live()

    def _checked(self, ids, vectors, metadatas) -> tuple[list[str], np.ndarray, list | None]:
        """A write batch checked in full here, before any shard sees it."""
        if isinstance(ids, (str, bytes)):
            raise InvalidArgumentError("pass a list of ids (insert/upsert take one id)")
        ids = list(ids)
        for i in ids:
            _input.id_bytes(i)
        vectors = _input.matrix(vectors, self.dimension)
        if vectors.shape[0] != len(ids):
            raise InvalidArgumentError(f"{len(ids)} ids but {vectors.shape[0]} vectors")
        if metadatas is not None:
            metadatas = list(metadatas)
            if len(metadatas) != len(ids):
                raise InvalidArgumentError(f"{len(ids)} ids but {len(metadatas)} metadata dicts")
            for meta in metadatas:
                if meta is not None:
                    _input.metadata(meta)
        return ids, vectors, metadatas

    def _send(self, method: str, ids: list[str], vectors: np.ndarray, metadatas: list | None) -> None:
        actors = self._writing()
        routed = self._routed(ids)
        refs = {}
        for s, pos in routed.items():
            refs[getattr(actors[s], method).remote([ids[p] for p in pos], vectors[pos],
                                                   None if metadatas is None else [metadatas[p] for p in pos])] = s
        self._touched.update(routed)
        self._gather(refs)

    def insert(self, id: str, vector, metadata: dict | None = None) -> None:
        self.insert_many([id], _input.vector(vector, self.dimension)[None, :], None if metadata is None else [metadata])

    def insert_many(self, ids: Sequence[str], vectors, metadatas=None) -> None:
        """Add records, each to its shard; all-or-nothing: a repeated id, or one
        already live in its shard, and nothing is added anywhere."""
        ids, vectors, metadatas = self._checked(ids, vectors, metadatas)
        if len(set(ids)) != len(ids):
            seen: set = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise DuplicateIdError(f"id {dup!r} appears more than once in this batch")
        actors = self._writing()
        routed = self._routed(ids)
        live = self._gather({actors[s].live_among.remote([ids[p] for p in pos]): s for s, pos in routed.items()})
        taken = [i for s in sorted(live) for i in live[s]]
        if taken:
            raise DuplicateIdError(f"id {taken[0]!r} already exists in sharded collection {self.name!r}"
                                   + (f" (and {len(taken) - 1} more)" if len(taken) > 1 else "")
                                   + "; use upsert to replace")
        self._send("insert_many", ids, vectors, metadatas)

    def upsert(self, id: str, vector, metadata: dict | None = None) -> None:
        self.upsert_many([id], _input.vector(vector, self.dimension)[None, :], None if metadata is None else [metadata])

    def upsert_many(self, ids: Sequence[str], vectors, metadatas=None) -> None:
        """Insert or replace records, each in its shard (a repeated id keeps its last record)."""
        self._send("upsert_many", *self._checked(ids, vectors, metadatas))

    def delete(self, ids: str | Sequence[str] | None = None, *, filter: dict | None = None) -> int:
        """Delete ids (each from its shard) or every record matching ``filter``
        (in every shard); how many live records were deleted."""
        if (ids is None) == (filter is None):
            raise InvalidArgumentError("delete takes ids or filter=, not both and not neither")
        actors = self._writing()
        if filter is not None:
            compile_filter(filter)
            self._touched.update(range(len(actors)))
            return sum(self._each("delete", None, filter))
        ids = [ids] if isinstance(ids, str) else list(ids)
        for i in ids:
            _input.id_bytes(i)
        routed = self._routed(ids)
        self._touched.update(routed)
        done = self._gather({actors[s].delete.remote([ids[p] for p in pos], None): s for s, pos in routed.items()})
        return sum(done.values())

    def update_metadata(self, id: str, metadata: dict | None) -> None:
        """Replace the metadata of ``id`` in its shard."""
        _input.id_bytes(id)
        if metadata is not None:
            _input.metadata(metadata)
        s = self._manifest.shard_of(id)
        actors = self._writing()
        self._touched.add(s)
        self._gather({actors[s].update_metadata.remote(id, metadata): s})

    def save(self) -> dict[int, int]:
        """Commit every shard written since the last save, in parallel; ``{shard: generation}``.

        Each shard's commit is atomic; the set is not: if a shard fails, the
        :class:`ShardError` lists the shards that did commit and those that did not."""
        actors = self._live()
        touched = sorted(self._touched)
        refs = {actors[s].save.remote(): s for s in touched}
        saved, failed = {}, {}
        for ref, s in refs.items():
            try:
                saved[s] = self._ray.get(ref)
            except Exception as e:
                failed[s] = _message(e)
        self._touched = set(failed)
        if failed:
            raise ShardError("save() committed shards " + (", ".join(map(str, sorted(saved))) or "none")
                             + "; these failed and keep their unsaved writes: "
                             + "; ".join(f"{self._manifest.shard_name(s)}: {why}" for s, why in sorted(failed.items())))
        return saved


def _node_cpus(ray) -> int:
    """The CPUs of the largest live node of the cluster (at least 1)."""
    sizes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(max(sizes, default=1)))


def _message(error: BaseException) -> str:
    """The NeedleError inside Ray's wrapper, as its own message; else the error's last line."""
    inner = needle_cause(error)
    if inner is not None:
        return f"{type(inner).__name__}: {inner}"
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def merge_arrays(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each shard's ``(ids, distances)`` of shape ``(m, k)``, merged into the ``k``
    smallest per row, ties by id (``None`` and ``inf`` past the last hit)."""
    ids = np.concatenate([p[0] for p in parts], axis=1)
    distances = np.concatenate([p[1] for p in parts], axis=1)
    m = ids.shape[0]
    if m == 0 or k == 0:
        return np.empty((m, k), dtype=object), np.empty((m, k), dtype=np.float32)
    order = np.argsort(distances, axis=1, kind="stable")
    width = min(k, order.shape[1])
    best = order[:, :width]
    top_ids = np.take_along_axis(ids, best, axis=1)
    top = np.take_along_axis(distances, best, axis=1)
    # Equal distances were ordered by shard; where a tie reaches into the kept
    # columns (or straddles the cut), order that row again by (distance, id).
    probe = np.take_along_axis(distances, order[:, :width + 1], axis=1)
    ties = np.flatnonzero(np.any((probe[:, 1:] == probe[:, :-1]) & np.isfinite(probe[:, 1:]), axis=1))
    for row in ties:
        ranked = sorted((float(d), i) for d, i in zip(distances[row], ids[row]) if i is not None)[:width]
        top_ids[row, :len(ranked)] = [i for _, i in ranked]
        top[row, :len(ranked)] = [d for d, _ in ranked]
    if width < k:
        top_ids = np.concatenate([top_ids, np.full((m, k - width), None, dtype=object)], axis=1)
        top = np.concatenate([top, np.full((m, k - width), np.inf, dtype=np.float32)], axis=1)
    return top_ids, top


def merge_hits(parts: list[list[tuple]], k: int) -> SearchResults:
    """One query's hits from each shard, as ``(id, distance, metadata, vector)``, merged into
    the ``k`` closest SearchResults, ties by id."""
    hits = sorted((h for part in parts for h in part), key=lambda h: (h[1], h[0]))[:k]
    out = []
    for id, distance, metadata, vector in hits:
        if vector is None:
            out.append(SearchResult(id, distance, GivenMetadata(metadata), 0))
        else:
            out.append(SearchResult.with_vector(id, distance, GivenMetadata(metadata), 0, vector))
    return SearchResults.of(out)
