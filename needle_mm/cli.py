"""The ``needle`` command."""

from __future__ import annotations

import argparse
import os
import sys

from ._format.catalog import DISTANCES
from ._progress import plural
from ._version import __version__
from .errors import NeedleError


def _cmd_demo(args) -> int:
    from .ops.demo import run

    run(args.path, workers=args.workers)
    return 0


def _cmd_info(args) -> int:
    from .database import Database

    from ._storage.mapping import read_header

    with Database.open(args.file, read_only=True) as db:
        snap = db.engine.snapshot
        header = read_header(snap.io)
        print(f"{args.file}: {os.path.getsize(args.file):,} bytes, format {header.read_version}/"
              f"{header.write_version} (read/write), generation {snap.generation}, "
              f"{snap.superblock.file_length:,} bytes in use")
        from ._kernels.api import backend_info

        kernels = backend_info()
        print(f"  search kernels: {'ahead-of-time extension' if kernels['backend'] == 'aot' else 'numba JIT'} "
              f"({kernels['reason']})")
        for name in db.list_collections():
            meta = snap.collection(name)
            print(f"  {name}: {plural(meta.count, 'record')}, {meta.kind}, dim {meta.dim}, distance {meta.distance}, "
                  f"dtype {meta.dtype}, quantization {meta.quantization or 'none'}, "
                  + (f"text index on {meta.text.field!r}, " if meta.text is not None else "")
                  + f"{plural(len(meta.segments), 'segment')}")
    return 0


def _cmd_verify(args) -> int:
    from .errors import DatabaseNotFoundError
    from .ops.verify import verify_file

    if not os.path.exists(args.file):
        raise DatabaseNotFoundError(f"no database file at {args.file!r}")
    report = verify_file(args.file)
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_export(args) -> int:
    from .database import Database
    from .ops.export import export

    with Database.open(args.file, read_only=True) as db:
        n = export(db.collection(args.collection), args.format, args.out)
    # with the records on standard output, the summary goes to standard error
    print(f"exported {plural(n, 'record')} of {args.collection!r} to {args.out or 'standard output'} ({args.format})",
          file=sys.stdout if args.out else sys.stderr)
    return 0


def _cmd_replicate(args) -> int:
    from .ops.replicate import replicate, stop_on_signals

    def shown(s):
        print(f"replica at generation {s.generation}: {'copied whole' if s.mode == 'copy' else 'commit ranges'}, "
              f"{s.bytes:,} bytes" + (f" ({s.why})" if s.mode == "copy" and s.why else ""), flush=True)

    stop = stop_on_signals() if args.follow else None
    last = replicate(args.source, args.dest, follow=args.follow, interval=args.interval, stop=stop,
                     on_shipment=shown)
    if last.mode == "none":
        print(f"replica already at generation {last.generation}")
    return 0


def _cmd_restore(args) -> int:
    from .ops.object_replica import restore

    g = restore(args.replica, args.out, args.generation)
    print(f"restored generation {g} of {args.replica} to {args.out}")
    return 0


def _cmd_rebuild(args) -> int:
    from .ops.rebuild import rebuild

    report = rebuild(args.file, args.out, m=args.m, ef_construction=args.ef_construction,
                     ef_search=args.ef_search, dtype=args.dtype, quantization=args.quantization,
                     text_field=getattr(args, "text_field", None), lock_timeout=args.lock_timeout,
                     progress=not args.no_progress)
    print(("rebuilt " if args.command == "rebuild" else "compacted ") + report.summary())
    return 0


IMPORT_SOURCES = {
    # source: (positional/option arguments, the importers function's keyword for each)
    "chroma": [("--path", {}), ("--host", {}), ("--port", {"type": int, "default": 8000}),
               ("--collection", {"required": True})],
    "qdrant": [("--path", {}), ("--url", {}), ("--api-key", {}), ("--vector-name", {}),
               ("--collection", {"required": True})],
    "pgvector": [("--dsn", {"required": True}), ("--table", {"required": True}), ("--id-column", {"default": "id"}),
                 ("--vector-column", {"default": "embedding"}), ("--metadata-column", {"default": "metadata"}),
                 ("--text", {"action": "store_true", "help": "read vectors as text instead of binary"})],
    "faiss": [("--index", {"required": True}), ("--ids", {}), ("--metadata", {})],
    "milvus": [("--uri", {"required": True}), ("--collection", {"required": True}), ("--token", {}),
               ("--vector-field", {}), ("--metadata-field", {})],
    "pinecone": [("--host", {"required": True, "help": "the index host from the Pinecone console"}),
                 ("--ids", {"required": True, "help": "file with one id per line"}), ("--api-key", {}),
                 ("--namespace", {"default": ""})],
    "jsonl": [("--input", {"required": True}),
              ("--dim", {"type": int, "help": "dimension of a sparse collection (default: largest index + 1)"})],
    "npy": [("--input", {"required": True, "help": ".npy of [n, dim], or a `needle export --format npy` directory"}),
            ("--ids", {}), ("--metadata", {})],
    "parquet": [("--input", {"required": True}), ("--id-column", {"default": "id"}),
                ("--vector-column", {"default": "vector"}), ("--metadata-column", {"default": "metadata"})],
}


def _cmd_import(args) -> int:
    from . import importers

    options = dict(into=args.into, batch_size=args.batch_size, save_every=args.save_every, resume=args.resume,
                   verify=args.verify, progress=not args.no_progress, distance=args.distance)
    options.update({k: v for k, v in (("m", args.m), ("ef_construction", args.ef_construction),
                                      ("dtype", args.dtype)) if v is not None})
    a = args
    if a.source == "chroma":
        report = importers.from_chroma(a.file, a.collection, path=a.path, host=a.host, port=a.port, **options)
    elif a.source == "qdrant":
        report = importers.from_qdrant(a.file, a.collection, path=a.path, url=a.url, api_key=a.api_key,
                                       vector_name=a.vector_name, **options)
    elif a.source == "pgvector":
        report = importers.from_pgvector(a.file, a.dsn, a.table, id_column=a.id_column, vector_column=a.vector_column,
                                         metadata_column=a.metadata_column or None, binary=not a.text, **options)
    elif a.source == "faiss":
        report = importers.from_faiss(a.file, a.index, ids=a.ids, metadata=a.metadata, **options)
    elif a.source == "milvus":
        report = importers.from_milvus(a.file, a.uri, a.collection, token=a.token, vector_field=a.vector_field,
                                       metadata_field=a.metadata_field, **options)
    elif a.source == "pinecone":
        report = importers.from_pinecone(a.file, a.host, a.ids, api_key=a.api_key, namespace=a.namespace,
                                         **{**options, "into": a.into or "pinecone"})
    elif a.source == "jsonl":
        report = importers.from_jsonl(a.file, a.input, dim=a.dim, **options)
    elif a.source == "npy":
        report = importers.from_npy(a.file, a.input, ids=a.ids, metadata=a.metadata, **options)
    else:
        report = importers.from_parquet(a.file, a.input, id_column=a.id_column, vector_column=a.vector_column,
                                        metadata_column=a.metadata_column or None, **options)
    print(report.summary())
    if report.verify is not None:
        print(report.verify.table())
        return 0 if report.verify.ok else 1
    return 0


def _cmd_serve(args) -> int:
    try:
        from .remote.server import serve
    except ImportError as exc:
        print(f'needle serve needs the server extra ({exc}): pip install "needle_mm[server]"', file=sys.stderr)
        return 2

    serve(args.file, host=args.host, port=args.port, workers=args.workers, api_key=args.api_key,
          max_body=int(args.max_body_mb * 1024 * 1024), read_only=args.read_only, allowed_host=args.allowed_host,
          max_results=args.max_results)
    return 0


def _cmd_search(args) -> int:
    import numpy as np
    import orjson

    from .database import Database
    from .errors import FilterError, InvalidArgumentError

    if args.vector_file is None and not args.text:
        raise InvalidArgumentError("give the queries: --vector-file FILE (.npy), --text TEXT, or both (hybrid)")
    queries = None
    if args.vector_file is not None:
        try:
            queries = np.atleast_2d(np.load(args.vector_file, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot read queries from {args.vector_file!r}: {exc}") from None
    try:
        flt = orjson.loads(args.filter) if args.filter else None
    except orjson.JSONDecodeError as exc:
        raise FilterError(f"--filter is not JSON: {exc}") from None
    fusion = args.fusion
    if fusion.lstrip().startswith("{"):  # a JSON object, else a method's name ("rrf", "weighted")
        try:
            fusion = orjson.loads(fusion)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgumentError(f"--fusion is not JSON: {exc}") from None
    texts = args.text or None
    if texts is not None and queries is not None and len(texts) == 1 and len(queries) > 1:
        texts = texts * len(queries)  # one --text for every query vector
    with Database.open(args.file, read_only=True) as db:
        c = db.collection(args.collection)
        rows = c.search_batch(queries, args.k, flt, texts=texts, fusion=fusion, candidates=args.candidates,
                              ef=args.ef, exact=args.exact, rescore=args.rescore)
        for row in rows:
            print(orjson.dumps([{"id": r.id, "distance": r.distance, "metadata": r.metadata,
                                 **({"scores": r.scores} if getattr(r, "scores", None) is not None else {})}
                                for r in row], option=orjson.OPT_SERIALIZE_NUMPY).decode())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="needle", description="Needle vector database files")
    parser.add_argument("--version", action="version", version=f"needle {__version__} (needle_mm)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build a file from real sentences, search it, share it across processes")
    p.add_argument("--path", help="where to write the demo file (default: a temporary directory)")
    p.add_argument("--workers", type=int, default=3, help="reader processes to start")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("info", help="collections, counts, dims, segments")
    p.add_argument("file")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("verify", help="full structural check; exit 1 if anything is wrong")
    p.add_argument("file")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("export", help="write a collection to jsonl, parquet, or npy + jsonl side files")
    p.add_argument("file")
    p.add_argument("--collection", required=True)
    p.add_argument("--format", choices=["jsonl", "npy", "parquet"], default="jsonl")
    p.add_argument("--out", help="a .jsonl or .parquet file, or a directory for npy (default: jsonl to standard output)")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("import", help="stream another database's records into a collection")
    sources = p.add_subparsers(dest="source", required=True)
    for name, arguments in IMPORT_SOURCES.items():
        q = sources.add_parser(name, help=f"import from {name}")
        for flag, spec in arguments:
            q.add_argument(flag, **spec)
        q.add_argument("file", help="the .needle file to import into (created if missing)")
        q.add_argument("--into", help="target collection (default: the source's collection, table or file name)")
        q.add_argument("--distance", choices=DISTANCES,
                       help="for a new collection, when the source does not record one")
        q.add_argument("--m", type=int, help="HNSW M of a new collection")
        q.add_argument("--ef-construction", type=int, help="HNSW ef_construction of a new collection")
        q.add_argument("--dtype", choices=("f32", "f16"), help="vector storage of a new collection (default f32)")
        q.add_argument("--batch-size", type=int, default=1000)
        q.add_argument("--save-every", type=int, default=10_000, help="records between checkpoints")
        q.add_argument("--resume", action="store_true", help="continue an interrupted import of the same source")
        q.add_argument("--verify", action="store_true", help="compare counts, samples and top-10 search at the end")
        q.add_argument("--no-progress", action="store_true")
        q.set_defaults(func=_cmd_import)
    p = sub.add_parser("rebuild", help="rewrite the file with one optimal segment per collection, then replace it")
    p.add_argument("file")
    p.add_argument("--m", type=int, help="new HNSW M (default: keep each collection's)")
    p.add_argument("--ef-construction", type=int, help="new ef_construction")
    p.add_argument("--ef-search", type=int, help="new default ef_search")
    p.add_argument("--dtype", choices=("f32", "f16"),
                   help="vector storage of dense collections: f16 halves file and memory (default: keep)")
    p.add_argument("--quantization", choices=("int8", "binary", "none"),
                   help="int8 / binary: search dense collections on one-byte / one-bit codes, rescored exactly; "
                        "none: drop the codes (default: keep)")
    p.add_argument("--text-field", help="index this metadata field for full-text and hybrid search in the dense "
                                        "collections (none: drop their text index; default: keep)")
    p.add_argument("--out", help="write the new file here and leave FILE alone")
    p.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for other writers")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_rebuild)
    p = sub.add_parser("replicate", help="copy the file to a replica by what each commit wrote; --follow keeps it current")
    p.add_argument("source")
    p.add_argument("dest", help="a path, or an fsspec URL (s3://bucket/prefix, file:///dir): one object per generation")
    p.add_argument("--follow", action="store_true", help="keep following until SIGINT or SIGTERM")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between checks with --follow (default 0.2)")
    p.set_defaults(func=_cmd_replicate)
    p = sub.add_parser("restore", help="rebuild a kept generation of an object-store replica into a new file")
    p.add_argument("replica", help="the replica's URL (what needle replicate was given as DEST)")
    p.add_argument("out")
    p.add_argument("--generation", type=int, help="the generation to restore (default: the newest kept)")
    p.set_defaults(func=_cmd_restore)
    p = sub.add_parser("compact", help="reclaim the space of deleted and replaced records")
    p.add_argument("file")
    p.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for other writers")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_rebuild, out=None, m=None, ef_construction=None, ef_search=None, dtype=None,
                   quantization=None)
    p = sub.add_parser("serve", help="HTTP JSON API over the file (extra 'server'); OpenAPI at /openapi.json")
    p.add_argument("file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; others need an API key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the file (default 1)")
    p.add_argument("--api-key", default=None, help="require this key on every request (or set NEEDLE_API_KEY)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body accepted (default 32)")
    p.add_argument("--read-only", action="store_true", help="serve reads only; writes get 403")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header names NAME (repeatable; '*': any). "
                        "Default: loopback names and the bound address")
    p.add_argument("--max-results", type=int, default=10_000,
                   help="most results one search request may ask for, k x queries (default 10000)")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("search", help="search by the vectors of a .npy file, by text (BM25), or both (hybrid); "
                                      "prints one JSON line per query")
    p.add_argument("file")
    p.add_argument("--collection", required=True)
    p.add_argument("--vector-file", help=".npy with one query or a [m, dim] matrix")
    p.add_argument("--text", action="append", metavar="TEXT",
                   help="a full-text query (repeatable: one per query; with --vector-file, one per row, or one "
                        "for all rows); needs the collection's text index")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--filter", help="a MongoDB-style filter as JSON")
    p.add_argument("--fusion", default="rrf",
                   help="hybrid: rrf (default), weighted, or JSON such as '{\"method\": \"weighted\", \"alpha\": 0.7}'")
    p.add_argument("--candidates", type=int, default=100, help="hybrid: hits each ranking contributes (default 100)")
    p.add_argument("--ef", type=int)
    p.add_argument("--exact", action="store_true")
    p.add_argument("--rescore", type=int, help="quantized collections: candidates per result rescored exactly")
    p.set_defaults(func=_cmd_search)
    args = parser.parse_args(argv)
    # Every failure is one line on stderr and a non-zero exit, never a traceback.
    try:
        return args.func(args)
    except NeedleError as exc:
        print(f"needle: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `needle export ... | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 0
    except OSError as exc:  # the disk, permissions, a path that is not there
        where = f": {exc.filename!r}" if exc.filename else ""
        print(f"needle: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "import":
            print("needle: error: interrupted; the records up to the last checkpoint are saved. "
                  "Run the same command with --resume to continue.", file=sys.stderr)
        else:  # every command leaves the file whole: a rebuild's copy is removed by the next writer
            print(f"needle: error: {args.command} interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
