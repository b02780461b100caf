"""Indexes over one segment or one set of pending records: the HNSW graph (``hnsw``),
sparse posting lists (``inverted``) and metadata filters over column chunks
(``metadata``). Used by the engine; uses ``_format`` and ``_kernels``."""
