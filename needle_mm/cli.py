"""The ``needle`` command."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import NeedleError


def _cmd_demo(args) -> int:
    from .demo import run

    run(args.path, workers=args.workers)
    return 0


def _cmd_info(args) -> int:
    from .database import Database

    from .snapshot import read_header

    with Database.open(args.file, read_only=True) as db:
        snap = db._snapshot
        header = read_header(snap.io)
        print(f"{args.file}: {os.path.getsize(args.file)} bytes, format {header.read_version}/"
              f"{header.write_version} (read/write), generation {snap.generation}, "
              f"{snap.superblock.file_length} bytes in use")
        for name in db.list_collections():
            meta = snap.collection(name)
            print(f"  {name}: {meta.count} records, dim {meta.dim}, distance {meta.distance}, "
                  f"{len(meta.segments)} segments")
    return 0


def _cmd_verify(args) -> int:
    from .verify import verify_file

    report = verify_file(args.file)
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_export(args) -> int:
    from .database import Database
    from .export import export

    with Database.open(args.file, read_only=True) as db:
        n = export(db.collection(args.collection), args.format, args.out)
    print(f"exported {n} records of {args.collection!r} to {args.out} ({args.format})")
    return 0


def _cmd_rebuild(args) -> int:
    from .rebuild import rebuild

    report = rebuild(args.file, args.out, m=args.m, ef_construction=args.ef_construction,
                     ef_search=args.ef_search, dtype=args.dtype, lock_timeout=args.lock_timeout)
    print(("rebuilt " if args.command == "rebuild" else "compacted ") + report.summary())
    return 0


def _cmd_search(args) -> int:
    import numpy as np
    import orjson

    from .database import Database
    from .errors import FilterError, InvalidArgumentError

    try:
        queries = np.load(args.vector_file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"cannot read queries from {args.vector_file!r}: {exc}") from None
    try:
        flt = orjson.loads(args.filter) if args.filter else None
    except orjson.JSONDecodeError as exc:
        raise FilterError(f"--filter is not JSON: {exc}") from None
    with Database.open(args.file, read_only=True) as db:
        c = db.collection(args.collection)
        rows = c.search_batch(np.atleast_2d(queries), args.k, flt, ef=args.ef, exact=args.exact)
        for row in rows:
            print(orjson.dumps([{"id": r.id, "distance": r.distance, "metadata": r.metadata} for r in row]).decode())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="needle", description="Needle vector database files")
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
    p = sub.add_parser("export", help="write a collection to jsonl, or npy + jsonl side files")
    p.add_argument("file")
    p.add_argument("--collection", required=True)
    p.add_argument("--format", choices=["jsonl", "npy"], default="jsonl")
    p.add_argument("--out", required=True, help="a .jsonl file, or a directory for npy")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("rebuild", help="rewrite the file with one optimal segment per collection, then replace it")
    p.add_argument("file")
    p.add_argument("--m", type=int, help="new HNSW M (default: keep each collection's)")
    p.add_argument("--ef-construction", type=int, help="new ef_construction")
    p.add_argument("--ef-search", type=int, help="new default ef_search")
    p.add_argument("--dtype", help="storage dtype (format version 1 stores f32 only)")
    p.add_argument("--out", help="write the new file here and leave FILE alone")
    p.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for other writers")
    p.set_defaults(func=_cmd_rebuild)
    p = sub.add_parser("compact", help="reclaim the space of deleted and replaced records")
    p.add_argument("file")
    p.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for other writers")
    p.set_defaults(func=_cmd_rebuild, out=None, m=None, ef_construction=None, ef_search=None, dtype=None)
    p = sub.add_parser("search", help="search with the queries of a .npy file; prints one JSON line per query")
    p.add_argument("file")
    p.add_argument("--collection", required=True)
    p.add_argument("--vector-file", required=True, help=".npy with one query or a [m, dim] matrix")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--filter", help="a MongoDB-style filter as JSON")
    p.add_argument("--ef", type=int)
    p.add_argument("--exact", action="store_true")
    p.set_defaults(func=_cmd_search)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except NeedleError as exc:
        print(f"needle: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
