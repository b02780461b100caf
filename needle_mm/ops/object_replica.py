"""Replicas in object stores (SPEC §6.2): one object per shipped generation, and a manifest.

An object store cannot patch a file in place, so a replica there is a chain:
``base-<g>.needle``, a whole copy of the source at generation ``g``, then
``ranges-<g>.bin`` objects, each holding what the source's commits since the
previous link wrote (as of ``g``), its catalog and its superblock. The
manifest (``manifest.json``) lists the links in order; it is written after
the object it names, whole (one PUT), so it never names a missing object,
and a shipment interrupted before it is simply not there. ``needle restore
URL OUT --generation G`` rebuilds any generation the manifest lists: the
newest base at or before it, then every ranges object after that base up to
it, applied in order, into a new file renamed into place.

Any fsspec URL works (``s3://``, ``gs://``, ``memory://``, ``file://``...;
``pip install "needle-mm[replica]"`` brings fsspec; cloud stores need their
own fsspec package, e.g. s3fs).

A ranges object is, little-endian: ``b"NDLRANGE"``, u64 generation, u64
previous generation, u64 file length, u64 count; then per range u64
offset, u64 length and the bytes; then the 64-byte superblock.
"""

from __future__ import annotations

import os
import struct

import orjson

from .._format.header import DATA_START, SUPERBLOCK_OFFSETS, encode_superblock
from .._storage.io import replace_file
from ..errors import CorruptFileError, InvalidArgumentError, MissingDependencyError
from .shipping import Shipment, pending_ranges

MAGIC = b"NDLRANGE"
_HEAD = struct.Struct("<8sQQQQ")
_RANGE = struct.Struct("<QQ")
MANIFEST = "manifest.json"


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError('replicas in object stores need fsspec: pip install "needle-mm[replica]"') \
            from None
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def _manifest(fs, root: str) -> dict:
    path = f"{root}/{MANIFEST}"
    if not fs.exists(path):
        return {"format": 1, "file_uuid": None, "links": []}
    try:
        doc = orjson.loads(fs.cat_file(path))
        if not (isinstance(doc, dict) and doc.get("format") == 1 and isinstance(doc.get("links"), list)):
            raise ValueError("not a needle replica manifest")
        for link in doc["links"]:
            if not (isinstance(link, dict) and link.get("kind") in ("base", "ranges")
                    and type(link.get("generation")) is int and isinstance(link.get("object"), str)):
                raise ValueError(f"bad link {link!r:.80}")
        return doc
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptFileError(f"{root}/{MANIFEST}: {exc}") from None


def ship_to_store(source: str, url: str) -> Shipment:
    """One step of replication into the object-store replica at ``url``."""
    from ..database import Database

    fs, root = _filesystem(url)
    fs.makedirs(root, exist_ok=True)
    manifest = _manifest(fs, root)
    with Database.open(source, read_only=True, auto_refresh=False) as db:
        snap = db.engine.snapshot
        sb, catalog, buf = snap.superblock, snap.catalog, snap.mapping.buffer
        g, uuid = sb.generation, db.engine._io.file_uuid.hex()
        links = manifest["links"] if manifest["file_uuid"] == uuid else []
        d = links[-1]["generation"] if links else None
        if d == g:
            return Shipment(g, g, "none", 0)
        ranges = pending_ranges(catalog, d, g) if d is not None and d < g else None
        if ranges is None:
            name = f"base-{g:012d}.needle"
            head = bytearray(buf[:DATA_START])
            # the other slot may hold a newer, partly copied generation: the base opens at g
            head[SUPERBLOCK_OFFSETS[1 - sb.slot]:SUPERBLOCK_OFFSETS[1 - sb.slot] + 64] = bytes(64)
            head[SUPERBLOCK_OFFSETS[sb.slot]:SUPERBLOCK_OFFSETS[sb.slot] + 64] = encode_superblock(sb)
            with fs.open(f"{root}/{name}", "wb") as f:  # written front to back: object stores cannot seek back
                f.write(bytes(head))
                for lo in range(DATA_START, sb.file_length, 1 << 24):
                    f.write(buf[lo:min(sb.file_length, lo + (1 << 24))])
            link = {"kind": "base", "generation": g, "object": name, "bytes": sb.file_length}
            mode, why = "copy", "a new replica" if d is None else f"the catalog no longer lists every commit since {d}"
        else:
            writes = sorted([*ranges, (sb.catalog_offset, sb.catalog_offset + sb.catalog_length)])
            name = f"ranges-{g:012d}.bin"
            size = 0
            with fs.open(f"{root}/{name}", "wb") as f:
                f.write(_HEAD.pack(MAGIC, g, d, sb.file_length, len(writes)))
                for lo, hi in writes:
                    f.write(_RANGE.pack(lo, hi - lo))
                    f.write(buf[lo:hi])
                    size += hi - lo
                f.write(encode_superblock(sb))
            link = {"kind": "ranges", "generation": g, "previous": d, "object": name, "bytes": size + 64}
            mode, why = "ranges", ""
    doc = {"format": 1, "file_uuid": uuid, "links": [*links, link]}
    fs.pipe_file(f"{root}/{MANIFEST}", orjson.dumps(doc, option=orjson.OPT_INDENT_2))  # one PUT: the link exists now
    return Shipment(g, d, mode, link["bytes"], why)


def generations(url: str) -> list[int]:
    """The generations the replica at ``url`` can restore, oldest first."""
    fs, root = _filesystem(url)
    return [link["generation"] for link in _manifest(fs, root)["links"]]


def restore(url: str, out: str, generation: int | None = None) -> int:
    """Rebuild the file as it was at ``generation`` (default: the newest kept)
    from the replica at ``url`` into a new file ``out``; returns the generation."""
    fs, root = _filesystem(url)
    links = _manifest(fs, root)["links"]
    if not links:
        raise InvalidArgumentError(f"{url!r} holds no replica (no {MANIFEST}, or it lists nothing)")
    kept = [link["generation"] for link in links]
    if generation is None:
        generation = kept[-1]
    if isinstance(generation, bool) or not isinstance(generation, int) or generation not in kept:
        raise InvalidArgumentError(f"generation {generation!r} is not kept in {url!r}; kept: {kept}")
    if os.path.exists(out):
        raise InvalidArgumentError(f"{out!r} already exists; restore writes a new file")
    end = kept.index(generation)
    start = max(i for i in range(end + 1) if links[i]["kind"] == "base")
    tmp = f"{out}.restore-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            with fs.open(f"{root}/{links[start]['object']}", "rb") as base:
                while True:
                    block = base.read(1 << 24)
                    if not block:
                        break
                    f.write(block)
            for link in links[start + 1:end + 1]:
                _apply(fs, f"{root}/{link['object']}", f, link)
            f.flush()
            os.fsync(f.fileno())
        replace_file(tmp, out)  # renames, then syncs the directory
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return generation


def _apply(fs, path: str, f, link: dict) -> None:
    """One ranges object onto the file being restored: its ranges, its length, its superblock."""
    with fs.open(path, "rb") as src:
        head = src.read(_HEAD.size)
        if len(head) != _HEAD.size:
            raise CorruptFileError(f"{path}: shorter than its header")
        magic, g, _, file_length, count = _HEAD.unpack(head)
        if magic != MAGIC or g != link["generation"]:
            raise CorruptFileError(f"{path}: not the ranges of generation {link['generation']}")
        for _ in range(count):
            lo, n = _RANGE.unpack(src.read(_RANGE.size))
            data = src.read(n)
            if len(data) != n or lo + n > file_length:
                raise CorruptFileError(f"{path}: a range runs past the object or the file")
            f.seek(lo)
            f.write(data)
        raw = src.read(64)
        if len(raw) != 64:
            raise CorruptFileError(f"{path}: its superblock is missing")
        if f.seek(0, os.SEEK_END) < file_length:
            f.truncate(file_length)
        slot = (g - 1) % 2  # generation g lives in slot (g - 1) mod 2 (SPEC §3)
        f.seek(SUPERBLOCK_OFFSETS[slot])
        f.write(raw)


__all__ = ["generations", "restore", "ship_to_store"]
