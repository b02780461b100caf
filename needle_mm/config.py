"""Collection configuration: dimension, distance function and index parameters."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._format.catalog import DEFAULT_HNSW, DISTANCES, DTYPES, MAX_DIM, MAX_SPARSE_DIM, QUANTIZATIONS
from .errors import InvalidConfigError

__all__ = ["DistanceFunction", "CollectionConfig"]


class DistanceFunction(str, enum.Enum):
    """How a collection measures distance; smaller is always closer.

    - ``Cosine``: ``1 - cos(x, q)``, in [0, 2]. Vectors are stored as given.
    - ``Euclidean``: ``sqrt(sum((x - q)**2))``, the true L2 distance.
    - ``DotProduct``: ``1 - x·q`` (as hnswlib's and Chroma's ``ip``).
    """

    Cosine = "cosine"
    Euclidean = "euclidean"
    DotProduct = "dot"

    @classmethod
    def parse(cls, value) -> "DistanceFunction":
        if isinstance(value, DistanceFunction):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("_", "").replace("-", "")
            found = _ALIASES.get(key)
            if found is not None:
                return found
        raise InvalidConfigError(
            f"unknown distance {value!r}: use DistanceFunction.Cosine, .Euclidean or .DotProduct "
            f"(or one of the strings {sorted(_ALIASES)})"
        )


if {d.value for d in DistanceFunction} != set(DISTANCES):  # one registry: the catalog's names are the enum's
    raise ImportError("needle_mm: DistanceFunction and catalog.DISTANCES disagree")

_ALIASES = {
    "cosine": DistanceFunction.Cosine, "cos": DistanceFunction.Cosine,
    "euclidean": DistanceFunction.Euclidean, "l2": DistanceFunction.Euclidean,
    "dot": DistanceFunction.DotProduct, "dotproduct": DistanceFunction.DotProduct,
    "ip": DistanceFunction.DotProduct, "innerproduct": DistanceFunction.DotProduct,
}


def _positive_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


@dataclass(frozen=True)
class CollectionConfig:
    """Everything fixed when a collection is created.

    Parameters
    ----------
    dimension : int
        Length of every vector, 1 to 65536.
    distance : DistanceFunction or str
        ``Cosine`` (default), ``Euclidean`` or ``DotProduct``.
    m : int
        HNSW links per node on the upper layers (layer 0 has ``2*m``).
    ef_construction : int
        HNSW candidate list size while building.
    ef_search : int
        Default HNSW candidate list size while searching (``search(ef=...)`` overrides).
    seed : int
        Seed for the HNSW level draw, so builds are reproducible.
    sparse : bool
        Store sparse vectors (``{"indices": [...], "values": [...]}``) searched
        exactly by dot product (``DotProduct`` only; ``dimension`` up to
        2**32 - 1, e.g. a vocabulary size). The HNSW parameters are unused.
    dtype : str
        How vectors are stored: ``"f32"`` (default, exactly as given) or
        ``"f16"`` (half the file and memory; values rounded to float16, whose
        range is ±65504; search reads them widened to float32). Dense only.
    quantization : str or None
        ``"int8"``: every segment also keeps one byte per dimension of each
        vector (a per-dimension scale and offset, trained when the segment is
        written whole), and search walks the graph on those codes, then
        rescores the best candidates against the stored vectors
        (``search(rescore=...)``). ``"binary"``: one bit per dimension (the
        sign of each value against the per-dimension mean), walked by Hamming
        distance: 1/32 of the float32 vectors, rescored the same way (more
        candidates needed for the same recall; see the README). ``None``
        (default): search reads the vectors. Dense only; ``get`` always
        returns the stored vector.
    text_field : str or None
        A metadata key whose string values are indexed for full-text (BM25)
        search (``search(text=...)``, and hybrid with a vector); records
        without it (or with a non-string value) have no text. Dense only.
    text_options : dict or None
        How text is analysed and ranked: ``stemmer`` (a Snowball language such
        as ``"english"``; needs ``pip install needle-mm[text]``), ``stop_words``
        (a language whose Snowball stop-word list is dropped), ``fold_accents``
        (default True), and BM25's ``k1`` (1.2) and ``b`` (0.75). Default:
        nothing stemmed, nothing removed.
    """

    dimension: int
    distance: DistanceFunction = DistanceFunction.Cosine
    m: int = DEFAULT_HNSW.m
    ef_construction: int = DEFAULT_HNSW.ef_construction
    ef_search: int = DEFAULT_HNSW.ef_search
    seed: int = DEFAULT_HNSW.seed
    sparse: bool = False
    dtype: str = "f32"
    quantization: str | None = None
    text_field: str | None = None
    text_options: dict | None = None

    def __post_init__(self):
        if not isinstance(self.sparse, bool):
            raise InvalidConfigError(f"sparse must be True or False, got {self.sparse!r}")
        max_dim = MAX_SPARSE_DIM if self.sparse else MAX_DIM
        object.__setattr__(self, "dimension", _positive_int("dimension", self.dimension, 1, max_dim))
        object.__setattr__(self, "distance", DistanceFunction.parse(self.distance))
        if self.sparse and self.distance is not DistanceFunction.DotProduct:
            raise InvalidConfigError(f"sparse collections search by dot product: use DistanceFunction.DotProduct, "
                                     f"not {self.distance.name}")
        _positive_int("m", self.m, 2, 1024)
        _positive_int("ef_construction", self.ef_construction, 1, 1 << 20)
        _positive_int("ef_search", self.ef_search, 1, 1 << 20)
        _positive_int("seed", self.seed, 0, 2**62)
        if self.dtype not in DTYPES:
            raise InvalidConfigError(f"dtype must be 'f32' or 'f16', got {self.dtype!r}")
        if self.sparse and self.dtype != "f32":
            raise InvalidConfigError("sparse collections store float32 values: dtype must be 'f32'")
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise InvalidConfigError(f"quantization must be None or {' or '.join(map(repr, QUANTIZATIONS))}, "
                                     f"got {self.quantization!r}")
        if self.sparse and self.quantization is not None:
            raise InvalidConfigError("sparse collections are searched exactly: quantization must be None")
        if self.text_options is not None and self.text_field is None:
            raise InvalidConfigError("text_options need a text_field to index")
        if self.text_field is not None:
            if self.sparse:
                raise InvalidConfigError("sparse collections have no text index: text_field must be None")
            from ._engine.text_search import text_index

            index = text_index(self.text_field, self.text_options, InvalidConfigError)
            # the options as the file records them: every default filled in, so configs compare equal
            options = {"k1": index.k1, "b": index.b, **{k: index.analyzer[k] for k in ("stemmer", "stop_words",
                                                                                      "fold_accents")}}
            object.__setattr__(self, "text_options", options)

    @property
    def text_index(self):
        """The ``catalog.TextIndex`` this config asks for, or None."""
        if self.text_field is None:
            return None
        from ._engine.text_search import text_index

        return text_index(self.text_field, self.text_options, InvalidConfigError)
