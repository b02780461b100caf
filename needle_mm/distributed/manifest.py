"""The manifest of a sharded collection, and the rule that sends an id to its shard.

A manifest is one JSON file beside its shards::

    {"format": "needle-shards", "version": 1,
     "collection": "docs",
     "config": {"dimension": 384, "distance": "cosine", ...},   # create_collection's keywords
     "routing": {"rule": "blake2b-64", "shards": 4},
     "shards": [{"path": "shard-00000.needle", "records": 25012}, ...]}

``routing`` is the only thing that decides where a record lives: shard
``int.from_bytes(blake2b(id as UTF-8, digest_size=8), "little") % shards``, the
same in every process and on every machine (Python's ``hash`` is salted per
process, so it cannot be used). Every upsert and delete of an id therefore goes
to the one shard that may hold it. Shard paths are relative to the manifest's
directory, so the directory can be moved or copied as a whole. ``records`` is
what each shard held when the manifest was written (informational: later saves
do not rewrite the manifest).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import orjson

from ..errors import ShardError

FORMAT = "needle-shards"
VERSION = 1
RULE = "blake2b-64"
# create_collection's keywords a manifest may carry (JSON values only).
CONFIG_KEYS = ("dimension", "distance", "m", "ef_construction", "ef_search", "seed", "dtype", "quantization",
               "text_field", "text_options")


def shard_of(id: str, shards: int) -> int:
    """The shard (0 .. shards - 1) that holds ``id`` under the ``blake2b-64`` rule."""
    digest = hashlib.blake2b(id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def shard_file_name(index: int) -> str:
    return f"shard-{index:05d}.needle"


@dataclass(frozen=True)
class Manifest:
    path: str  # the manifest file, absolute
    collection: str
    config: dict
    shards: tuple[str, ...]  # shard files, absolute
    records: tuple[int, ...]

    @property
    def dimension(self) -> int:
        return self.config["dimension"]

    def shard_of(self, id: str) -> int:
        return shard_of(id, len(self.shards))

    def shard_name(self, index: int) -> str:
        """How errors name a shard: its number and its file."""
        return f"shard {index} ({self.shards[index]!r})"


def write_manifest(path: str, collection: str, config: dict, shard_files: list[str], records: list[int]) -> str:
    """Write the manifest atomically (a temporary file renamed over ``path``):
    readers see the previous manifest or this one, never a part."""
    path = os.path.abspath(path)
    base = os.path.dirname(path)
    doc = {"format": FORMAT, "version": VERSION, "collection": collection,
           "config": {key: config[key] for key in CONFIG_KEYS if config.get(key) is not None},
           "routing": {"rule": RULE, "shards": len(shard_files)},
           "shards": [{"path": os.path.relpath(f, base), "records": int(n)} for f, n in zip(shard_files, records)]}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as out:
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return path


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and check a manifest; anything missing or malformed is a :class:`ShardError` naming it."""
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read())
    except FileNotFoundError:
        raise ShardError(f"manifest {path!r} does not exist") from None
    except IsADirectoryError:
        raise ShardError(f"manifest {path!r} is a directory; pass the manifest file build_shards returned") from None
    except orjson.JSONDecodeError as e:
        raise ShardError(f"manifest {path!r} is not JSON: {e}") from None
    except OSError as e:
        raise ShardError(f"manifest {path!r} cannot be read: {e.strerror or e}") from None

    def bad(why: str) -> ShardError:
        return ShardError(f"manifest {path!r} {why}")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"is not a Needle shard manifest (no \"format\": {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise bad(f"has version {doc.get('version')!r}; this Needle reads version {VERSION}")
    collection, config, routing, shards = (doc.get(key) for key in ("collection", "config", "routing", "shards"))
    if not isinstance(collection, str) or not collection:
        raise bad("names no collection")
    if not isinstance(config, dict) or not isinstance(config.get("dimension"), int) or set(config) - set(CONFIG_KEYS):
        raise bad(f"has a malformed config {config!r}")
    if not isinstance(routing, dict) or routing.get("rule") != RULE:
        raise bad(f"routes by {routing!r}; this Needle knows the rule {RULE!r}")
    if not isinstance(shards, list) or not shards or routing.get("shards") != len(shards):
        raise bad(f"lists {len(shards) if isinstance(shards, list) else 'no'} shards "
                  f"but routes over {routing.get('shards')!r}")
    base = os.path.dirname(path)
    files, records = [], []
    for i, shard in enumerate(shards):
        if not (isinstance(shard, dict) and isinstance(shard.get("path"), str) and shard["path"]
                and isinstance(shard.get("records"), int)):
            raise bad(f"has a malformed entry for shard {i}: {shard!r}")
        files.append(os.path.normpath(os.path.join(base, shard["path"])))
        records.append(shard["records"])
    if len(set(files)) != len(files):
        raise bad("lists one shard file twice")
    return Manifest(path, collection, dict(config), tuple(files), tuple(records))
