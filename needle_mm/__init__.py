"""Needle: an embedded vector database in one file, shared by many processes.

>>> import needle_mm as needle
>>> db = needle.Database.open("vectors.needle")          # doctest: +SKIP
>>> db.create_collection("docs", 384)                    # doctest: +SKIP
"""

__version__ = "0.1.0"

from .client import Client  # noqa: E402
from .collection import Collection  # noqa: E402
from .config import CollectionConfig, DistanceFunction  # noqa: E402
from .database import Database  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .errors import __all__ as _error_names  # noqa: E402
from .results import Entry, SearchResult  # noqa: E402
from .sparse import SparseVector  # noqa: E402

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
