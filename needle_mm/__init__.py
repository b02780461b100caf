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
from .remote.client import Client
from .results import Entry, SearchResult
from .sparse import SparseVector

__all__ = [
    "Database",
    "Client",
    "Collection",
    "CollectionConfig",
    "DistanceFunction",
    "Entry",
    "SearchResult",
    "SparseVector",
    "__version__",
    *_error_names,
]
