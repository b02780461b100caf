"""One collection in many Needle files, built and served on Ray (extra ``[ray]``).

>>> from needle_mm.distributed import build_shards, ShardedCollection   # doctest: +SKIP
>>> manifest = build_shards("embeddings/*.parquet", "out/", shards=4, dim=384,
...                         id_column="id", vector_column="embedding")   # doctest: +SKIP
>>> docs = ShardedCollection.open(manifest)                              # doctest: +SKIP
>>> docs.search(q, k=10, filter={"lang": "en"})                          # doctest: +SKIP

Each shard is an ordinary Needle file (``needle info``, ``verify``, ``rebuild``
work on it); the manifest beside them names the shards, the collection's
configuration and the rule that sends an id to its shard.
"""

from .build import build_shards
from .manifest import Manifest, read_manifest, shard_of
from .sharded import ShardedCollection

__all__ = ["build_shards", "ShardedCollection", "Manifest", "read_manifest", "shard_of"]
