"""Importers: stream another database's records into a Needle collection.

Every function takes the target ``db`` (a :class:`~needle_mm.Database` or a
path), reads its source in batches, inserts them with ``insert_many``, saves
every ``save_every`` records with the import's position committed alongside
(so ``resume=True`` continues exactly where a killed import stopped), shows a
reports progress (``progress=``), logs its result, and returns an :class:`ImportReport` (with a verification
table when ``verify=True``). Common keyword options::

    into="name"            target collection (default: the source's name)
    batch_size=1000        records read and inserted per batch
    save_every=10_000      records between checkpoints
    resume=False           continue an interrupted import of the same source
    verify=False           compare counts, sampled records and top-10 search
    progress=None          True: tqdm bars on stderr (records, then indexing); a callable gets (done, total)
    distance="cosine"      for sources that do not record one (npy, pgvector, ...)
    m=..., ef_construction=..., ef_search=...   HNSW parameters of a new collection
    dtype="f16"            store a new collection's vectors as half floats (SPEC §5.8)

Each source's client library is imported only when its importer is used;
install the matching extra (``pip install "needle_mm[chroma]"`` etc.).
"""

from __future__ import annotations

import os

from ._run import ImportReport, Source, run_import

__all__ = ["ImportReport", "Source", "run_import", "from_chroma", "from_qdrant", "from_pgvector", "from_faiss",
           "from_milvus", "from_pinecone", "from_jsonl", "from_npy", "from_parquet"]


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def from_chroma(db, collection: str, *, path: str | None = None, host: str | None = None, port: int = 8000,
                into: str | None = None, **options) -> ImportReport:
    """A Chroma collection (``path``: a PersistentClient directory; or ``host``/``port``)."""
    from .chroma import ChromaSource

    return run_import(ChromaSource(collection, path=path, host=host, port=port), db, into or collection, **options)


def from_qdrant(db, collection: str, *, path: str | None = None, url: str | None = None,
                api_key: str | None = None, vector_name: str | None = None, into: str | None = None,
                **options) -> ImportReport:
    """A Qdrant collection (``path``: local-mode directory; or ``url`` of a server)."""
    from .qdrant import QdrantSource

    source = QdrantSource(collection, path=path, url=url, api_key=api_key, vector_name=vector_name)
    return run_import(source, db, into or collection, **options)


def from_pgvector(db, dsn: str, table: str, *, id_column: str = "id", vector_column: str = "embedding",
                  metadata_column: str | None = "metadata", binary: bool = True, into: str | None = None,
                  **options) -> ImportReport:
    """A PostgreSQL table with a pgvector column; give ``distance=`` (pgvector does not store one)."""
    from .pgvector import PgvectorSource

    source = PgvectorSource(dsn, table, id_column, vector_column, metadata_column, options.get("distance"), binary)
    return run_import(source, db, into or table.split(".")[-1], **options)


def from_faiss(db, index: str, *, ids: str | None = None, metadata: str | None = None, into: str | None = None,
               **options) -> ImportReport:
    """A FAISS index file, with ids (one per line) and metadata (JSON lines) from side files."""
    from .faiss import FaissSource

    source = FaissSource(index, ids, metadata, options.get("distance"))
    return run_import(source, db, into or _stem(index), **options)


def from_milvus(db, uri: str, collection: str, *, token: str | None = None, vector_field: str | None = None,
                metadata_field: str | None = None, into: str | None = None, **options) -> ImportReport:
    """A Milvus collection (``uri``: a server URL, or a milvus-lite ``.db`` file)."""
    from .milvus import MilvusSource

    source = MilvusSource(uri, collection, token, vector_field, metadata_field)
    return run_import(source, db, into or collection, **options)


def from_pinecone(db, host: str, ids: str, *, api_key: str | None = None, namespace: str = "",
                  into: str = "pinecone", **options) -> ImportReport:
    """A Pinecone index, fetched by the ids listed in the file ``ids``."""
    from .pinecone import PineconeSource

    source = PineconeSource(host, ids, api_key, namespace, options.get("distance"))
    return run_import(source, db, into, **options)


def from_jsonl(db, path: str, *, into: str | None = None, **options) -> ImportReport:
    """JSON lines ``{"id", "vector", "metadata"}`` (what ``needle export`` writes).

    Sparse vectors (``{"indices", "values"}``) make a sparse collection of
    dimension ``dim=`` (default: one past the largest index in the file)."""
    from .files import JsonlSource

    source = JsonlSource(path, options.get("distance"), options.pop("dim", None))
    return run_import(source, db, into or _stem(path), **options)


def from_npy(db, vectors: str, *, ids: str | None = None, metadata: str | None = None, into: str | None = None,
             **options) -> ImportReport:
    """A ``[n, dim]`` .npy (or a ``needle export --format npy`` directory) with optional side files."""
    from .files import NpySource

    source = NpySource(vectors, ids, metadata, options.get("distance"))
    return run_import(source, db, into or _stem(vectors), **options)


def from_parquet(db, path: str, *, id_column: str = "id", vector_column: str = "vector",
                 metadata_column: str | None = "metadata", into: str | None = None, **options) -> ImportReport:
    """A Parquet file with id, vector (list of floats) and metadata columns."""
    from .files import ParquetSource

    source = ParquetSource(path, id_column, vector_column, metadata_column, options.get("distance"))
    return run_import(source, db, into or _stem(path), **options)
