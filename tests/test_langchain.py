"""The LangChain integration: LangChain's own standard suite, then Needle-specific behaviour.

The standard suite (``langchain_tests``) writes its async tests as plain
``async def`` methods, expecting pytest-asyncio's auto mode. This project runs
pytest-asyncio in strict mode, where an async test runs only when marked
``asyncio``; a mark on the class would also land on the sync tests (a
PytestWarning, an error here). So each coroutine test the suite defines is
marked itself, in place: the very same function objects stay on the class,
as the suite's own ``test_no_overrides_DO_NOT_OVERRIDE`` requires.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import warnings

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

import needle_mm  # noqa: E402
from needle_mm.integrations.langchain import TEXT_KEY, NeedleVectorStore  # noqa: E402

for _name, _test in list(vars(VectorStoreIntegrationTests).items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test) and not any(
            m.name == "asyncio" for m in getattr(_test, "pytestmark", [])):
        pytest.mark.asyncio(_test)  # marks the function object itself (the class attribute is unchanged)


class TestNeedleStandardSuite(VectorStoreIntegrationTests):
    """LangChain's standard VectorStore tests, sync and async, on a fresh file each."""

    @pytest.fixture()
    def vectorstore(self, tmp_path):
        store = NeedleVectorStore(embedding=self.get_embeddings(), path=tmp_path / "suite.needle")
        try:
            yield store
        finally:
            store.close()


# ---------------------------------------------------------------- our own tests


class TableEmbeddings(Embeddings):
    """Known texts embed to given vectors (normalised); others to a direction hashed from the text.

    Counts ``embed_query`` calls, so a test can tell whether a query was embedded."""

    def __init__(self, table: dict[str, list[float]] | None = None, dim: int = 3):
        self.table = table or {}
        self.dim = len(next(iter(self.table.values()))) if self.table else dim
        self.queries = 0

    def _vector(self, text: str) -> list[float]:
        if text in self.table:
            v = np.asarray(self.table[text], dtype=np.float64)
        else:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
        return (v / np.linalg.norm(v)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return self._vector(text)


AXES = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1], "-x": [-1, 0, 0], "xy": [1, 1, 0], "xz": [1, 0, 1]}
QUERIES = {"q": [0.6, 0.3, 0.74]}

BOOKS = [
    Document(id="dune", page_content="x", metadata={"genre": "scifi", "year": 1965, "tags": ["desert", "classic"]}),
    Document(id="emma", page_content="y", metadata={"genre": "romance", "year": 1815}),
    Document(id="neuromancer", page_content="xy", metadata={"genre": "scifi", "year": 1984, "tags": ["cyber"]}),
    Document(id="ulysses", page_content="z", metadata={"genre": "modernist", "year": 1922}),
]


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "lc.needle")


@pytest.fixture
def books(path):
    store = NeedleVectorStore(embedding=TableEmbeddings(AXES | QUERIES), path=path)
    store.add_documents(BOOKS)
    yield store
    store.close()


def ids_of(docs) -> list[str]:
    return [d.id for d in docs]


def test_texts_are_stored_under_document_key_beside_the_metadata(books):
    entry = books.collection.get("dune")
    assert entry.metadata == {"genre": "scifi", "year": 1965, "tags": ["desert", "classic"], TEXT_KEY: "x"}
    assert books.get_by_ids(["dune"]) == [BOOKS[0]]


def test_persists_across_reopen_and_is_visible_to_other_readers(path):
    store = NeedleVectorStore(embedding=TableEmbeddings(AXES), path=path, collection_name="books")
    store.add_documents(BOOKS)
    # saved on add: a second, independent handle on the file (as another process would open it) sees it
    with needle_mm.Database.open(path, read_only=True) as other:
        assert other.collection("books").count() == len(BOOKS)
    store.delete(["emma"])
    with needle_mm.Database.open(path, read_only=True) as other:
        assert "emma" not in other.collection("books")
    store.close()

    reopened = NeedleVectorStore(embedding=TableEmbeddings(AXES), path=path, collection_name="books")
    assert ids_of(reopened.similarity_search("x", k=2)) == ["dune", "neuromancer"]
    assert reopened.get_by_ids(["ulysses", "emma"]) == [BOOKS[3]]
    reopened.close()


def test_ids_generated_given_and_upserted(path):
    store = NeedleVectorStore(embedding=TableEmbeddings(AXES), path=path)
    generated = store.add_texts(["x", "y"], [{"n": 1}, {"n": 2}])
    assert len(set(generated)) == 2 and all(len(i) == 36 for i in generated)  # uuid4 strings
    mixed = store.add_documents([Document(id="mine", page_content="z"), Document(page_content="xy")])
    assert mixed[0] == "mine" and mixed[1] not in generated
    assert store.add_texts(["-x"], [{"n": 9}], ids=["mine"]) == ["mine"]  # re-adding an id replaces it
    assert store.get_by_ids(["mine"]) == [Document(id="mine", page_content="-x", metadata={"n": 9})]
    assert store.collection.count() == 4
    assert store.add_texts([]) == []
    store.close()


def test_get_by_ids_order_missing_and_repeats(books):
    assert ids_of(books.get_by_ids(["ulysses", "nope", "dune", "ulysses"])) == ["ulysses", "dune"]
    assert books.get_by_ids([]) == []


# "q" ranks the books ulysses (z), neuromancer (xy), dune (x), emma (y); expected lists are in that order
@pytest.mark.parametrize("flt, expected", [
    ({"genre": "scifi"}, ["neuromancer", "dune"]),
    ({"genre": {"$eq": "romance"}}, ["emma"]),
    ({"genre": {"$in": ["romance", "modernist"]}}, ["ulysses", "emma"]),
    ({"year": {"$gt": 1900}}, ["ulysses", "neuromancer", "dune"]),
    ({"$and": [{"genre": "scifi"}, {"year": {"$gt": 1970}}]}, ["neuromancer"]),
    ({"$or": [{"year": {"$lt": 1900}}, {"tags": "cyber"}]}, ["neuromancer", "emma"]),
    ({"tags": {"$exists": False}}, ["ulysses", "emma"]),
    ({"year": {"$not": {"$gte": 1900}}}, ["emma"]),
    ({TEXT_KEY: {"$contains": "y"}}, ["neuromancer", "emma"]),  # the text itself
    ({}, ["ulysses", "neuromancer", "dune", "emma"]),
    (None, ["ulysses", "neuromancer", "dune", "emma"]),
])
def test_filters_are_needle_filters(books, flt, expected):
    assert ids_of(books.similarity_search("q", k=10, filter=flt)) == expected
    assert ids_of(d for d, _ in books.similarity_search_with_score("q", k=10, filter=flt)) == expected
    assert sorted(ids_of(books.max_marginal_relevance_search("q", k=10, filter=flt))) == sorted(expected)


def test_filter_ranks_by_distance(books):
    docs = books.similarity_search_with_score("xy", k=3, filter={"genre": {"$ne": "scifi"}})
    assert ids_of(d for d, _ in docs) == ["emma", "ulysses"]
    assert docs[0][1] == pytest.approx(1 - math.cos(math.pi / 4), abs=1e-6)  # cosine distance of y to xy
    assert docs[1][1] == pytest.approx(1.0, abs=1e-6)


def test_bad_filters_raise_needle_errors_before_embedding(books):
    embedding = books.embeddings
    for bad in ({"year": {"$between": [1, 2]}}, {"$xor": [{"a": 1}]}, {"year": {"$in": 1900}}, ["genre"]):
        with pytest.raises(needle_mm.FilterError):
            books.similarity_search("x", filter=bad)
        with pytest.raises(needle_mm.FilterError):
            books.max_marginal_relevance_search("x", filter=bad)
        with pytest.raises(needle_mm.FilterError):
            books.delete(filter=bad)
    assert embedding.queries == 0
    with pytest.raises(needle_mm.FilterError, match="between"):
        books.as_retriever(search_kwargs={"filter": {"year": {"$between": 3}}}).invoke("x")


def test_delete_by_ids_and_filter(books):
    assert books.delete(["emma", "not-there"]) is True
    assert books.delete(filter={"genre": "scifi"}) is True
    assert ids_of(books.similarity_search("x", k=10)) == ["ulysses"]
    with pytest.raises(needle_mm.InvalidArgumentError, match="delete_collection"):
        books.delete()
    books.delete_collection()
    assert books.collection is None and books.similarity_search("x") == []
    books.add_texts(["y"], ids=["again"])  # recreated on the next add
    assert ids_of(books.similarity_search("x")) == ["again"]


def test_mmr_prefers_diverse_results(path):
    table = {"query": [1, 0, 0], "cat": [0.9, 0.436, 0], "cat again": [0.9, 0.44, 0], "dog": [0.8, 0, 0.6]}
    store = NeedleVectorStore.from_texts(list(table)[1:], TableEmbeddings(table), ids=["cat", "cat2", "dog"], path=path)
    assert ids_of(store.similarity_search("query", k=2)) == ["cat", "cat2"]
    assert ids_of(store.max_marginal_relevance_search("query", k=2, fetch_k=3)) == ["cat", "dog"]
    assert ids_of(store.max_marginal_relevance_search("query", k=2, lambda_mult=1.0)) == ["cat", "cat2"]
    by_vector = store.max_marginal_relevance_search_by_vector([1.0, 0.0, 0.0], k=2)
    assert ids_of(by_vector) == ["cat", "dog"] and by_vector[0].page_content == "cat"
    assert store.max_marginal_relevance_search("query", k=0) == []
    with pytest.raises(needle_mm.InvalidArgumentError, match="lambda_mult"):
        store.max_marginal_relevance_search("query", lambda_mult=2)
    store.close()


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "dot"])
def test_relevance_scores_in_unit_interval(path, distance):
    store = NeedleVectorStore(TableEmbeddings(AXES), path=path, distance=distance)
    store.add_texts(list(AXES), ids=list(AXES))
    scored = store.similarity_search_with_relevance_scores("x", k=len(AXES))
    scores = {d.id: s for d, s in scored}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert [d.id for d, _ in scored][0] == "x" and scores["x"] == pytest.approx(1.0, abs=1e-6)
    assert scores["xy"] == pytest.approx(math.cos(math.pi / 4), abs=1e-5)  # unit vectors: the cosine similarity
    assert scores["y"] == pytest.approx(0.0, abs=1e-6) and scores["-x"] == 0.0  # opposite: clamped to 0
    assert [s for _, s in scored] == sorted(scores.values(), reverse=True)
    kept = store.similarity_search_with_relevance_scores("x", k=len(AXES), score_threshold=0.5)
    assert sorted(d.id for d, _ in kept) == ["x", "xy", "xz"]
    retriever = store.as_retriever(search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.9})
    assert ids_of(retriever.invoke("x")) == ["x"]
    store.close()


def test_custom_relevance_function(path):
    store = NeedleVectorStore(TableEmbeddings(AXES), path=path, distance="euclidean",
                              relevance_score_fn=lambda d: 1.0 / (1.0 + d))
    store.add_texts(["x", "-x"], ids=["x", "-x"])
    scores = dict((d.id, s) for d, s in store.similarity_search_with_relevance_scores("x", k=2))
    assert scores == {"x": pytest.approx(1.0), "-x": pytest.approx(1.0 / 3.0)}
    store.close()


def test_similarity_search_by_vector_and_scores(books):
    assert ids_of(books.similarity_search_by_vector([0.0, 0.0, 1.0], k=1)) == ["ulysses"]
    (doc, distance), = books.similarity_search_with_score("y", k=1)
    assert doc == BOOKS[1] and distance == pytest.approx(0.0, abs=1e-6)
    assert books.similarity_search("x", k=0) == []


def test_from_texts_and_from_documents(tmp_path):
    store = NeedleVectorStore.from_texts(["x", "y"], TableEmbeddings(AXES), metadatas=[{"k": 1}, {"k": 2}],
                                         ids=["a", "b"], path=tmp_path / "t.needle", collection_name="texts")
    assert store.collection_name == "texts"
    assert store.similarity_search("y", k=1) == [Document(id="b", page_content="y", metadata={"k": 2})]
    store.close()
    docs = NeedleVectorStore.from_documents(BOOKS, TableEmbeddings(AXES), path=tmp_path / "d.needle")
    assert sorted(ids_of(docs.get_by_ids([b.id for b in BOOKS]))) == sorted(b.id for b in BOOKS)
    docs.close()


def test_as_retriever(books):
    assert ids_of(books.as_retriever(search_kwargs={"k": 1}).invoke("xy")) == ["neuromancer"]
    filtered = books.as_retriever(search_kwargs={"k": 2, "filter": {"genre": {"$ne": "scifi"}}})
    assert ids_of(filtered.invoke("q")) == ["ulysses", "emma"]
    mmr = books.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4})
    assert len(mmr.invoke("x")) == 2


def test_two_stores_share_one_database(path):
    with needle_mm.Database.open(path) as db:
        a = NeedleVectorStore(TableEmbeddings(AXES), database=db, collection_name="a")
        b = NeedleVectorStore(TableEmbeddings({"p": [1, 0], "q": [0, 1]}), database=db, collection_name="b",
                              distance="euclidean")
        a.add_texts(["x", "y"], ids=["ax", "ay"])
        b.add_texts(["p", "q"], ids=["bp", "bq"])
        assert db.list_collections() == ["a", "b"]
        assert ids_of(a.similarity_search("x", k=5)) == ["ax", "ay"]
        assert ids_of(b.similarity_search("q", k=5)) == ["bq", "bp"]
        a.close()  # not a's to close
        assert ids_of(b.similarity_search("p", k=1)) == ["bp"]
        late = NeedleVectorStore(TableEmbeddings(AXES), database=db, collection_name="a")  # opens the existing one
        assert ids_of(late.get_by_ids(["ay"])) == ["ay"]
    with needle_mm.Database.open(path, read_only=True) as again:
        assert again.collection("a").count() == 2 and again.collection("b").count() == 2


def test_a_store_made_before_the_collection_sees_it_once_created(path):
    with needle_mm.Database.open(path) as db:
        reader = NeedleVectorStore(TableEmbeddings(AXES), database=db)
        writer = NeedleVectorStore(TableEmbeddings(AXES), database=db)
        assert reader.similarity_search("x") == [] and reader.get_by_ids(["a"]) == []
        writer.add_texts(["x"], ids=["a"])
        assert ids_of(reader.similarity_search("x")) == ["a"]


def test_writes_join_the_callers_transaction(path):
    with needle_mm.Database.open(path) as db:
        store = NeedleVectorStore(TableEmbeddings(AXES), database=db)
        with db.transaction():
            store.add_texts(["x", "y"], ids=["a", "b"])
            store.delete(["b"])
            with needle_mm.Database.open(path, read_only=True) as other:
                assert "langchain" not in other.list_collections()  # not committed yet
        with needle_mm.Database.open(path, read_only=True) as other:
            assert list(other.collection("langchain").ids()) == ["a"]


def test_reads_a_collection_written_with_the_needle_api(path):
    # as the Chroma importer and the migration guide store records: the text under "document"
    with needle_mm.Database.open(path) as db:
        coll = db.create_collection("imported", 3)
        coll.upsert_many(["r1", "r2"], np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32),
                         [{"document": "first", "src": "chroma"}, {"src": "no text"}])
    store = NeedleVectorStore(TableEmbeddings(AXES), path=path, collection_name="imported")
    assert store.similarity_search("x", k=2) == [Document(id="r1", page_content="first", metadata={"src": "chroma"}),
                                                 Document(id="r2", page_content="", metadata={"src": "no text"})]
    store.close()


def test_bad_input_raises_clear_errors(path, tmp_path):
    emb = TableEmbeddings(AXES)
    with pytest.raises(needle_mm.InvalidArgumentError, match="path= .* or database="):
        NeedleVectorStore(emb)
    with needle_mm.Database.open(tmp_path / "other.needle") as db:
        with pytest.raises(needle_mm.InvalidArgumentError, match="not both"):
            NeedleVectorStore(emb, path=path, database=db)
    with pytest.raises(needle_mm.InvalidConfigError, match="unknown distance"):
        NeedleVectorStore(emb, path=path, distance="manhattan")

    store = NeedleVectorStore(emb, path=path)
    with pytest.raises(needle_mm.InvalidMetadataError, match="'document'"):
        store.add_texts(["x"], [{"document": "clash"}])
    with pytest.raises(needle_mm.InvalidArgumentError, match="2 texts but 1 ids"):
        store.add_texts(["x", "y"], ids=["only-one"])
    with pytest.raises(needle_mm.InvalidArgumentError, match="1 texts but 2 metadatas"):
        store.add_texts(["x"], [{}, {}])
    with pytest.raises(needle_mm.InvalidArgumentError, match="unexpected keyword argument.*'k_nearest'"):
        store.similarity_search("x", k_nearest=3)
    assert store.collection is None  # refused before anything was written
    with pytest.raises(needle_mm.InvalidIdError):
        store.add_texts(["x"], ids=[7])
    with pytest.raises(needle_mm.InvalidMetadataError):
        store.add_texts(["x"], [{"when": object()}])
    store.add_texts(["x"], ids=["a"])
    with pytest.raises(needle_mm.InvalidArgumentError):
        store.similarity_search("x", k=-1)
    store.close()

    with pytest.raises(needle_mm.CollectionExistsError, match="distance='cosine'"):
        NeedleVectorStore(emb, path=path, distance="dot")
    wider = NeedleVectorStore(TableEmbeddings(dim=5), path=path)
    with pytest.raises(needle_mm.CollectionExistsError, match="dimension"):
        wider.add_texts(["five floats"])
    with pytest.raises(needle_mm.InvalidVectorError, match="dimension"):
        wider.similarity_search("five floats")
    wider.close()


def test_batch_size_splits_embedding_calls(path):
    calls = []

    class Counting(TableEmbeddings):
        def embed_documents(self, texts):
            calls.append(len(texts))
            return super().embed_documents(texts)

    store = NeedleVectorStore(Counting(AXES), path=path)
    store.add_texts(list(AXES), ids=list(AXES), batch_size=4)
    assert calls == [4, 2] and store.collection.count() == 6
    store.close()


@pytest.mark.asyncio
async def test_async_methods(path):
    store = NeedleVectorStore(TableEmbeddings(AXES), path=path)
    await store.aadd_documents(BOOKS)
    assert ids_of(await store.asimilarity_search("x", k=1, filter={"genre": "scifi"})) == ["dune"]
    mmr = await store.amax_marginal_relevance_search("x", k=2)
    assert len(mmr) == 2 and mmr[0].id == "dune"
    scored = await store.asimilarity_search_with_relevance_scores("x", k=4)
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    assert ids_of(await store.as_retriever(search_kwargs={"k": 1}).ainvoke("z")) == ["ulysses"]
    await store.adelete(["dune"])
    assert await store.aget_by_ids(["dune"]) == []
    store.close()


def test_id_lists_must_be_lists_not_one_str(books):
    # a str is an iterable of characters: delete("emma") must not delete the ids "e", "m", "a"
    for bad in ("dune", b"dune", None, 5, {"dune": 1}):
        with pytest.raises(needle_mm.InvalidArgumentError, match="ids must be a list"):
            books.get_by_ids(bad)
    for bad in ("emma", 5, {"emma": 1}):
        with pytest.raises(needle_mm.InvalidArgumentError, match="ids must be a list"):
            books.delete(bad)
    with pytest.raises(needle_mm.InvalidIdError, match=r"ids\[1\] must be a str"):
        books.delete(["emma", 7])
    with pytest.raises(needle_mm.InvalidIdError, match=r"ids\[0\] must be a str"):
        books.get_by_ids([["dune"]])
    with pytest.raises(needle_mm.InvalidArgumentError, match="texts must be a list"):
        books.add_texts("xyz")
    with pytest.raises(needle_mm.InvalidArgumentError, match="texts must be a list"):
        books.add_texts(None)
    with pytest.raises(needle_mm.InvalidArgumentError, match="ids must be a list"):
        books.add_texts(["x", "y"], ids="ab")
    with pytest.raises(needle_mm.InvalidArgumentError, match="metadatas must be a list"):
        books.add_texts(["x"], metadatas={"genre": "scifi"})
    assert books.collection.count() == len(BOOKS)  # nothing was deleted or added
    assert sorted(ids_of(books.get_by_ids([b.id for b in BOOKS]))) == sorted(b.id for b in BOOKS)


class ZeroEmbeddings(TableEmbeddings):
    """Embeds the text "zero" to the zero vector, which a cosine collection refuses."""

    def embed_documents(self, texts):
        return [[0.0] * self.dim if t == "zero" else self._vector(t) for t in texts]


@pytest.mark.parametrize("bad_add", [
    lambda store: store.add_texts(["zero"]),  # refused by Needle: a zero vector in a cosine collection
    lambda store: store.add_texts(["x"], [{"when": object()}]),  # refused by Needle: not JSON
    lambda store: store.add_texts(["x"], ids=[""]),  # refused by Needle: an empty id
], ids=["zero-vector", "non-json-metadata", "empty-id"])
def test_a_refused_first_add_leaves_no_collection_behind(path, tmp_path, bad_add):
    # database=: the caller's next save must not commit an empty collection
    with needle_mm.Database.open(tmp_path / "given.needle") as db:
        store = NeedleVectorStore(ZeroEmbeddings(AXES), database=db)
        with pytest.raises(needle_mm.NeedleError):
            bad_add(store)
        assert db.list_collections() == [] and not db.dirty and store.collection is None
        db.save()
    with needle_mm.Database.open(tmp_path / "given.needle") as db:
        assert db.list_collections() == []

    # path=: nothing pending, so close() discards (and warns about) nothing
    store = NeedleVectorStore(ZeroEmbeddings(AXES), path=path)
    with pytest.raises(needle_mm.NeedleError):
        bad_add(store)
    assert store.collection is None and not store.database.dirty
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.close()
    assert [str(w.message) for w in caught] == []

    # an existing collection is kept, with its records, when a later add is refused
    store = NeedleVectorStore(ZeroEmbeddings(AXES), path=path)
    store.add_texts(["x"], ids=["kept"])
    with pytest.raises(needle_mm.NeedleError):
        bad_add(store)
    assert ids_of(store.get_by_ids(["kept"])) == ["kept"] and not store.database.dirty
    store.close()


def test_counts_take_numpy_integers_and_refuse_the_rest(books, tmp_path):
    assert ids_of(books.similarity_search("x", k=np.int64(1))) == ["dune"]
    assert ids_of(books.max_marginal_relevance_search("x", k=np.int64(1), fetch_k=np.int32(3))) == ["dune"]
    assert ids_of(books.max_marginal_relevance_search_by_vector(AXES["x"], k=np.uint8(1))) == ["dune"]
    assert len(books.similarity_search("x", k=2, ef=np.int64(8))) == 2
    assert len(books.max_marginal_relevance_search("x", k=1, lambda_mult=np.float32(0.5))) == 1
    books.add_texts(["y"], ids=["np-batch"], batch_size=np.int64(1))
    books.delete(["np-batch"])
    for bad in (True, 2.0, "2", None, -1):
        with pytest.raises(needle_mm.InvalidArgumentError, match="k must be a non-negative integer"):
            books.similarity_search("x", k=bad)
        with pytest.raises(needle_mm.InvalidArgumentError, match="k must be a non-negative integer"):
            books.max_marginal_relevance_search("x", k=bad)
        with pytest.raises(needle_mm.InvalidArgumentError, match="fetch_k must be a non-negative integer"):
            books.max_marginal_relevance_search("x", k=1, fetch_k=bad)
        with pytest.raises(needle_mm.InvalidArgumentError, match="fetch_k must be a non-negative integer"):
            books.max_marginal_relevance_search_by_vector(AXES["x"], k=1, fetch_k=bad)
    for bad in (True, 0, 1.5, "8"):
        with pytest.raises(needle_mm.InvalidArgumentError, match="ef must be a positive integer"):
            books.similarity_search("x", ef=bad)
        with pytest.raises(needle_mm.InvalidArgumentError, match="batch_size must be a positive integer"):
            books.add_texts(["y"], batch_size=bad)
    for bad in ("x", None, True, 1.5, float("nan")):
        with pytest.raises(needle_mm.InvalidArgumentError, match="lambda_mult"):
            books.max_marginal_relevance_search("x", k=1, lambda_mult=bad)
    with pytest.raises(needle_mm.InvalidArgumentError, match="query must be a str"):
        books.similarity_search(None)
    assert books.collection.count() == len(BOOKS)

    # the same checks before the collection exists
    empty = NeedleVectorStore(TableEmbeddings(AXES), path=tmp_path / "empty.needle")
    assert empty.similarity_search("x", k=np.int64(2)) == [] and empty.max_marginal_relevance_search("x", k=np.int64(2)) == []
    with pytest.raises(needle_mm.InvalidArgumentError, match="k must"):
        empty.similarity_search("x", k=-1)
    with pytest.raises(needle_mm.InvalidArgumentError, match="fetch_k must"):
        empty.max_marginal_relevance_search("x", fetch_k="x")
    with pytest.raises(needle_mm.InvalidArgumentError, match="ef must"):
        empty.similarity_search("x", ef=0)
    empty.close()
