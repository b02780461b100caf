"""Needle: an embedded vector database in one file, shared by many processes.

>>> import needle_mm as needle
>>> db = needle.Database.open("vectors.needle")          # doctest: +SKIP
>>> db.create_collection("docs", 384)                    # doctest: +SKIP
"""

from ._version import __version__
from .collection import Collection
from .config import CollectionConfig, DistanceFunction
from .database import Database
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _error_names
from .results import Entry, SearchResult, SearchResults
from .sparse import SparseVector

__all__ = [
    "Database",
    "Client",  # noqa: F405 (lazy: __getattr__)
    "AsyncClient",  # noqa: F405 (lazy: __getattr__)
    "preload",  # noqa: F405 (lazy: __getattr__)
    "replicate",  # noqa: F405 (lazy: __getattr__)
    "Collection",
    "CollectionConfig",
    "DistanceFunction",
    "Entry",
    "SearchResult",
    "SearchResults",
    "SparseVector",
    "__version__",
    *_error_names,
]

# The clients of `needle serve` are imported on first use, so `import needle_mm`
# loads neither the remote package nor httpx (AsyncClient's transport).
_LAZY = ("Client", "AsyncClient", "preload", "replicate")


def __getattr__(name: str):
    if name == "Client":
        from .remote.client import Client as value
    elif name == "AsyncClient":
        from .remote.async_client import AsyncClient as value
    elif name == "preload":
        from .ops.preload import preload as value
    elif name == "replicate":
        from .ops.replicate import replicate as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
