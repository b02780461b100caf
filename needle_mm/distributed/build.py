"""``build_shards``: one Needle file per shard, built by Ray tasks.

The build is a map-reduce on Ray's core API:

1. the source becomes Arrow blocks in Ray's object store (a Ray Dataset's
   own blocks; parquet through ``ray.data.read_parquet``; ``.npy`` files read
   as row ranges);
2. one *split* task per block routes each row by its id
   (:func:`~needle_mm.distributed.manifest.shard_of`) and returns one piece
   per shard;
3. one *build* task per shard concatenates its pieces and writes an ordinary
   Needle file (insert, then one ``save()``), under a temporary name renamed
   into place when it is complete;
4. the driver writes the manifest last, atomically: until it exists (or while
   the previous one stays), no reader sees a half-built set of shards.

A shard no row routes to is still written, empty, so every id has a file to go to.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from .._input import matrix
from ..config import CollectionConfig
from ..errors import InvalidArgumentError, InvalidIdError, InvalidVectorError
from .manifest import CONFIG_KEYS, shard_file_name, shard_of, write_manifest
from .runtime import ray_module, raise_cause

MANIFEST_NAME = "manifest.json"
NPY_ROWS_PER_BLOCK = 65536


def build_shards(source, out: str | os.PathLike, *, shards: int, dim: int, id_column: str = "id",
                 vector_column: str = "vector", distance: str = "cosine", collection: str = "default",
                 metadata_columns: list[str] | None = None, overwrite: bool = False, **config) -> str:
    """Build ``shards`` Needle files in directory ``out`` from ``source``, one Ray task per
    shard, and return the path of their manifest (``out/manifest.json``).

    Parameters
    ----------
    source : ray.data.Dataset, str or list of str
        A Ray Dataset; parquet files (paths, directories, globs or URLs
        ``ray.data.read_parquet`` reads); or ``.npy`` files of ``[n, dim]``
        vectors, whose ids are their row numbers (``"0"``, ``"1"``, ... across
        the files in the order given) and which carry no metadata.
    out : directory
        Where the shard files (``shard-00000.needle``, ...) and the manifest are
        written: a local directory, or one every Ray node mounts at the same path.
    shards : int
        How many shard files (1 to 4096); a record goes to the shard its id
        hashes to (see :mod:`needle_mm.distributed.manifest`).
    dim, distance, collection
        The collection every shard holds, as ``Database.create_collection`` takes them.
    id_column, vector_column : str
        The columns holding string ids (integers are turned into their decimal
        strings) and vectors (fixed-size lists, lists or tensors of ``dim`` floats).
    metadata_columns : list of str, optional
        The columns stored as each record's metadata; default every column but the id and vector.
    overwrite : bool
        Replace a manifest already in ``out`` (default: refuse).
    **config
        ``m``, ``ef_construction``, ``ef_search``, ``seed``, ``dtype``,
        ``quantization``, ``text_field``, ``text_options``: as for ``create_collection``.
    """
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or not 1 <= shards <= 4096:
        raise InvalidArgumentError(f"shards must be an integer from 1 to 4096, got {shards!r}")
    shards = int(shards)
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise InvalidArgumentError(f"build_shards got unknown parameter(s) {', '.join(map(repr, sorted(unknown)))}")
    given = {key: value for key, value in config.items() if value is not None}
    CollectionConfig(dim, distance, **given)  # every parameter checked here, before any task runs
    config = {"dimension": dim, "distance": str(getattr(distance, "value", distance)), **given}
    for name, value in (("id_column", id_column), ("vector_column", vector_column)):
        if not isinstance(value, str) or not value:
            raise InvalidArgumentError(f"{name} must be a column name, got {value!r}")
    if metadata_columns is not None and (isinstance(metadata_columns, str)
                                         or not all(isinstance(c, str) for c in metadata_columns)):
        raise InvalidArgumentError(f"metadata_columns must be a list of column names, got {metadata_columns!r}")
    out = os.path.abspath(os.fspath(out))
    manifest = os.path.join(out, MANIFEST_NAME)
    if os.path.exists(manifest) and not overwrite:
        raise InvalidArgumentError(f"{out!r} already holds a manifest; pass overwrite=True to replace it")
    os.makedirs(out, exist_ok=True)

    ray = ray_module()
    blocks, columns = _source_blocks(ray, source, dim, id_column, vector_column)
    for name in (id_column, vector_column, *(metadata_columns or ())):
        if name not in columns:
            raise InvalidArgumentError(f"the source has no column {name!r}; its columns: {', '.join(columns)}")
    if metadata_columns is None:
        metadata_columns = [c for c in columns if c not in (id_column, vector_column)]

    if shards == 1:  # every row goes to the one shard: nothing to split
        pieces = [[block] for block in blocks]
    else:
        split = ray.remote(num_returns=shards)(_split)
        pieces = [split.remote(block, id_column, shards) for block in blocks]
    build = ray.remote(_build_shard)
    files = [os.path.join(out, shard_file_name(i)) for i in range(shards)]
    built = [build.remote(files[i], collection, config, id_column, vector_column, metadata_columns,
                          *[p[i] for p in pieces]) for i in range(shards)]
    try:
        records = ray.get(built)
    except Exception as e:  # a task's NeedleError (a bad vector, a duplicate id) comes back wrapped
        raise_cause(e)
        raise
    return write_manifest(manifest, collection, config, files, records)


def _source_blocks(ray, source, dim: int, id_column: str, vector_column: str) -> tuple[list, list[str]]:
    """The source as object refs of Arrow tables, and its column names."""
    import ray.data

    if isinstance(source, ray.data.Dataset):
        dataset = source
    else:
        paths = [os.fspath(source)] if isinstance(source, (str, os.PathLike)) else list(source)
        if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise InvalidArgumentError(f"source must be a Ray Dataset, or paths of parquet or .npy files; got {source!r}")
        paths = [os.fspath(p) for p in paths]
        if all(p.endswith(".npy") for p in paths):
            return _npy_blocks(ray, paths, dim, id_column, vector_column), [id_column, vector_column]
        local = []
        for p in paths:  # local globs expanded here; URLs and directories go to Ray as they are
            matched = sorted(glob.glob(p)) if "://" not in p and glob.has_magic(p) else [p]
            if not matched or ("://" not in p and not os.path.exists(matched[0])):
                raise InvalidArgumentError(f"no parquet file at {p!r}")
            local.extend(matched)
        try:
            dataset = ray.data.read_parquet(local)
        except Exception as e:
            raise InvalidArgumentError(f"cannot read parquet from {paths!r}: {e}") from None
    schema = dataset.schema()
    if schema is None:
        raise InvalidArgumentError("the source holds no rows")
    return list(dataset.to_arrow_refs()), list(schema.names)


def _npy_blocks(ray, paths: list[str], dim: int, id_column: str, vector_column: str) -> list:
    starts, ranges = 0, []
    for path in paths:
        try:
            rows = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise InvalidArgumentError(f"cannot read {path!r} as a .npy array: {e}") from None
        if rows.ndim != 2 or rows.shape[1] != dim:
            raise InvalidVectorError(f"{path!r} holds an array of shape {rows.shape}, not [n, {dim}]")
        for first in range(0, rows.shape[0], NPY_ROWS_PER_BLOCK):
            ranges.append((path, starts, first, min(first + NPY_ROWS_PER_BLOCK, rows.shape[0])))
        starts += rows.shape[0]
    read = ray.remote(_npy_block)
    return [read.remote(path, base, first, stop, id_column, vector_column) for path, base, first, stop in ranges]


def _npy_block(path: str, base: int, first: int, stop: int, id_column: str, vector_column: str):
    import pyarrow as pa

    rows = np.ascontiguousarray(np.load(path, mmap_mode="r")[first:stop], dtype=np.float32)
    ids = pa.array([str(base + i) for i in range(first, stop)], pa.string())
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), rows.shape[1])
    return pa.table({id_column: ids, vector_column: vectors})


def _ids_of(column) -> list[str]:
    ids = column.to_pylist()
    for i, value in enumerate(ids):
        if isinstance(value, str):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            ids[i] = str(value)
        else:
            raise InvalidIdError(f"id {value!r} (row {i} of a block) is not a string or an integer")
    return ids


def _split(block, id_column: str, shards: int):
    """One block's rows, one table per shard (``shards`` > 1)."""
    route = np.fromiter((shard_of(i, shards) for i in _ids_of(block.column(id_column))), np.int64, block.num_rows)
    order = np.argsort(route, kind="stable")
    bounds = np.searchsorted(route[order], np.arange(shards + 1))
    return tuple(block.take(order[bounds[s]:bounds[s + 1]]) for s in range(shards))


def _vectors_of(column, dim: int) -> np.ndarray:
    """An Arrow column of vectors (fixed-size lists, lists, or Ray's tensor extension) as ``[n, dim]`` float32."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise InvalidVectorError(f"the vector column holds {array.null_count} null(s)")
    if isinstance(array.type, pa.ExtensionType):
        rows = np.asarray(array.to_numpy(), dtype=np.float32)
    elif pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = np.asarray(array.value_lengths()) if not pa.types.is_fixed_size_list(array.type) \
            else np.full(len(array), array.type.list_size)
        wrong = np.flatnonzero(lengths != dim)
        if wrong.size:
            raise InvalidVectorError(f"vector at row {int(wrong[0])} of a block has {int(lengths[wrong[0]])} values, "
                                     f"the collection expects {dim}")
        rows = np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(array), dim)
    else:
        raise InvalidVectorError(f"the vector column has type {array.type}, not a list or tensor of floats")
    return matrix(rows, dim)


def _build_shard(path: str, collection: str, config: dict, id_column: str, vector_column: str,
                 metadata_columns: list[str], *pieces) -> int:
    """Write one shard file from its pieces; return how many records it holds.

    Built under ``<path>.building`` and renamed over ``path`` once saved, so
    ``path`` is never a half-written shard (a retried task starts again)."""
    import pyarrow as pa

    from .._storage.readers import table_path as reader_table_path
    from ..database import Database

    pieces = [p for p in pieces if p.num_rows]
    table = pa.concat_tables(pieces, promote_options="default") if pieces else None
    building = path + ".building"
    # The build's own side files (its writer lock and reader table) are named
    # after ``building`` and are removed with it: the output holds shards only.
    side_files = (building + ".lock", reader_table_path(building))
    for stale in (building, *side_files):
        if os.path.exists(stale):
            os.remove(stale)
    db = Database.open(building)
    try:
        kwargs = {key: value for key, value in config.items() if key != "dimension"}
        target = db.create_collection(collection, config["dimension"], **kwargs)
        if table is not None:
            ids = _ids_of(table.column(id_column))
            vectors = _vectors_of(table.column(vector_column), config["dimension"])
            metadatas = table.select(metadata_columns).to_pylist() if metadata_columns else None
            target.insert_many(ids, vectors, metadatas)
        db.save()
    finally:
        db.close()
    os.replace(building, path)
    for side in side_files:
        if os.path.exists(side):
            os.remove(side)
    return 0 if table is None else table.num_rows

