"""The engine: snapshots of a file, the in-memory state of its collections, search over
them, the plan of a commit, and how threads share all of it. Used by the public faces
(``database``, ``collection``); uses ``_index``, ``_format``, ``_storage``, ``_kernels``."""
