"""NeedleVectorStore under llama-index-core itself: VectorStoreIndex end to end
(MockEmbedding: no model, no network), persistence through the file, the
metadata-filter mapping operator by operator, deletes, errors, async.

MockEmbedding gives every text the same vector, so ranking is checked with
nodes carrying explicit embeddings, through ``store.add`` / ``store.query``.
"""

from __future__ import annotations

import datetime
import math
import socket
import textwrap

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn  # noqa: E402

import needle_mm  # noqa: E402
from needle_mm.integrations import llama_index as integration  # noqa: E402
from needle_mm.integrations.llama_index import NeedleVectorStore, UnsupportedFilterError, to_needle_filter  # noqa: E402

DIM = 8


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the network (no OpenAI, no tiktoken or nltk downloads)."""
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def embed_model():
    return MockEmbedding(embed_dim=DIM)


def splitter():
    # a whitespace tokenizer: SentenceSplitter's default would load tiktoken's encoding
    return SentenceSplitter(chunk_size=512, chunk_overlap=0, tokenizer=str.split)


def documents():
    return [
        Document(id_="doc-needle", text="Needle keeps every vector in one memory-mapped file.",
                 metadata={"topic": "storage", "year": 2024}),
        Document(id_="doc-cats", text="Cats sleep for most of the day.", metadata={"topic": "cats", "year": 2020}),
        Document(id_="doc-tea", text="Green tea is brewed below boiling.", metadata={"topic": "tea", "year": 2022}),
    ]


def build_index(store):
    return VectorStoreIndex.from_documents(documents(), storage_context=StorageContext.from_defaults(vector_store=store),
                                           embed_model=embed_model(), transformations=[splitter()])


def unit(*xs):
    v = np.zeros(DIM)
    v[: len(xs)] = xs
    return (v / np.linalg.norm(v)).tolist()


# --------------------------------------------------------------- end to end


def test_from_documents_retrieve_then_reopen_the_file(db_path):
    with NeedleVectorStore(path=db_path, collection_name="llama_index") as store:
        index = build_index(store)
        hits = index.as_retriever(similarity_top_k=2).retrieve("where are vectors kept?")
        assert len(hits) == 2
        texts = {d.text for d in documents()}
        assert all(h.node.get_content() in texts for h in hits)
        assert all(h.score == pytest.approx(1.0, abs=1e-5) for h in hits)  # MockEmbedding: one vector for all
        first = {h.node.node_id: h.node for h in index.as_retriever(similarity_top_k=10).retrieve("anything")}
        assert len(first) == 3

    # a new store on the same file: the index is the file
    with NeedleVectorStore(path=db_path, collection_name="llama_index") as store:
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model())
        again = {h.node.node_id: h.node for h in index.as_retriever(similarity_top_k=10).retrieve("anything")}
        assert again.keys() == first.keys()
        for node_id, node in again.items():
            assert node.get_content() == first[node_id].get_content()
            assert node.metadata == first[node_id].metadata
            assert node.ref_doc_id == first[node_id].ref_doc_id
        by_doc = {n.ref_doc_id: n for n in again.values()}
        assert by_doc["doc-cats"].get_content() == "Cats sleep for most of the day."
        assert by_doc["doc-cats"].metadata == {"topic": "cats", "year": 2020}
        assert by_doc["doc-cats"].relationships[NodeRelationship.SOURCE].node_id == "doc-cats"

        # the Needle record: text under "document", user metadata at the top level
        coll = store.client.collection("llama_index")
        assert store.collection.name == "llama_index"
        (entry,) = [e for e in coll if e.metadata["ref_doc_id"] == "doc-tea"]
        assert entry.metadata["document"] == "Green tea is brewed below boiling."
        assert entry.metadata["topic"] == "tea" and entry.metadata["year"] == 2022
        assert [i for i, _ in coll.find({"topic": "tea"})] == [entry.id]


def test_retriever_filters_end_to_end(db_path):
    with NeedleVectorStore(path=db_path) as store:
        index = build_index(store)
        filters = MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GT)])
        hits = index.as_retriever(similarity_top_k=10, filters=filters).retrieve("x")
        assert sorted(h.node.metadata["topic"] for h in hits) == ["storage", "tea"]
        hits = index.as_retriever(similarity_top_k=10, doc_ids=["doc-cats"]).retrieve("x")
        assert [h.node.ref_doc_id for h in hits] == ["doc-cats"]


def test_delete_ref_doc_through_the_index_is_saved(db_path):
    with NeedleVectorStore(path=db_path) as store:
        index = build_index(store)
        index.delete_ref_doc("doc-cats")
        left = index.as_retriever(similarity_top_k=10).retrieve("x")
        assert sorted(h.node.ref_doc_id for h in left) == ["doc-needle", "doc-tea"]
        store.delete("no-such-document")  # nothing to delete: no error
    with NeedleVectorStore(path=db_path) as store:  # the delete was saved
        assert sorted(n.ref_doc_id for n in store.get_nodes()) == ["doc-needle", "doc-tea"]


@pytest.mark.asyncio
async def test_async_index_and_retrieve(db_path):
    with NeedleVectorStore(path=db_path) as store:
        index = VectorStoreIndex.from_documents(documents(), storage_context=StorageContext.from_defaults(vector_store=store),
                                                embed_model=embed_model(), transformations=[splitter()], use_async=True)
        hits = await index.as_retriever(similarity_top_k=3).aretrieve("x")
        assert sorted(h.node.ref_doc_id for h in hits) == ["doc-cats", "doc-needle", "doc-tea"]

        await store.async_add([TextNode(id_="near", text="near", embedding=unit(1, 0))])
        result = await store.aquery(VectorStoreQuery(query_embedding=unit(1, 0), similarity_top_k=1))
        assert result.ids == ["near"]
        assert [n.node_id for n in await store.aget_nodes(node_ids=["near"])] == ["near"]
        await store.adelete_nodes(node_ids=["near"])
        await store.adelete("doc-cats")
        assert sorted(n.ref_doc_id for n in store.get_nodes()) == ["doc-needle", "doc-tea"]
        await store.aclear()
        assert store.get_nodes() == []


# --------------------------------------------------------------- ranking and similarity


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "dot"])
def test_ranking_and_similarities(db_path, distance):
    vectors = {"a": unit(1, 0), "b": unit(1, 1), "c": unit(0, 1), "d": unit(-1, 0)}
    with NeedleVectorStore(path=db_path, distance=distance) as store:
        ids = store.add([TextNode(id_=i, text=f"text {i}", embedding=v) for i, v in vectors.items()])
        assert ids == list(vectors)
        q = unit(1, 0.2)
        result = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3))
        assert result.ids == ["a", "b", "c"]
        assert [n.node_id for n in result.nodes] == result.ids
        assert [n.get_content() for n in result.nodes] == ["text a", "text b", "text c"]
        qv = np.asarray(q)
        for node_id, sim in zip(result.ids, result.similarities):
            v = np.asarray(vectors[node_id])
            if distance == "euclidean":
                expected = 1.0 / (1.0 + np.linalg.norm(v - qv))
            else:  # unit vectors: cosine similarity = dot product
                expected = float(v @ qv)
            assert sim == pytest.approx(expected, abs=1e-5)
        assert result.similarities == sorted(result.similarities, reverse=True)


def test_node_ids_and_doc_ids_restrict_the_query(db_path):
    with NeedleVectorStore(path=db_path) as store:
        nodes = []
        for i, v in enumerate([unit(1, 0), unit(1, 1), unit(0, 1), unit(-1, 1)]):
            node = TextNode(id_=f"n{i}", text=f"t{i}", embedding=v, metadata={"k": i})
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 2}")
            nodes.append(node)
        store.add(nodes)
        q = unit(1, 0)
        r = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=2, node_ids=["n3", "n2", "n1", "gone"]))
        assert r.ids == ["n1", "n2"]
        assert r.similarities[0] == pytest.approx(math.sqrt(0.5), abs=1e-5)
        r = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=4, doc_ids=["doc1"]))
        assert r.ids == ["n1", "n3"]
        only_k = MetadataFilters(filters=[MetadataFilter(key="k", value=2, operator=FilterOperator.GTE)])
        r = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=4, node_ids=["n1", "n2", "n3"],
                                         filters=only_k))
        assert r.ids == ["n2", "n3"]
        # empty lists restrict nothing (VectorStoreIndex.as_retriever passes node_ids=[])
        r = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=4, node_ids=[], doc_ids=[]))
        assert r.ids == ["n0", "n1", "n2", "n3"]


# --------------------------------------------------------------- metadata filters

ROWS = {
    "r1": {"genre": "fiction", "year": 1990, "rating": 4.5, "tags": ["classic", "long"], "title": "The Long Road",
           "note": "read twice"},
    "r2": {"genre": "fiction", "year": 2005, "rating": 3.0, "tags": ["new"], "title": "Short Days", "note": ""},
    "r3": {"genre": "science", "year": 2015, "rating": 4.9, "tags": ["classic", "physics"], "title": "On Light"},
    "r4": {"genre": "history", "year": 2020, "rating": 2.5, "tags": [], "title": "Roads of Rome"},
    "r5": {"genre": "science", "year": 2023, "title": "Cells"},
}


@pytest.fixture
def filter_store(db_path):
    with NeedleVectorStore(path=db_path) as store:
        store.add([TextNode(id_=i, text=meta["title"], metadata=meta, embedding=unit(1, n))
                   for n, (i, meta) in enumerate(ROWS.items())])
        yield store


def matching(store, filters):
    result = store.query(VectorStoreQuery(query_embedding=unit(1, 0), similarity_top_k=10, filters=filters))
    ids = set(result.ids)
    by_get = {n.node_id for n in store.get_nodes(filters=filters)}
    assert by_get == ids  # the same filter through find() and through search()
    return ids


def f(key, value, op):
    return MetadataFilter(key=key, value=value, operator=op)


OPERATOR_CASES = [
    (f("genre", "fiction", FilterOperator.EQ), {"r1", "r2"}),
    (f("year", 2015, FilterOperator.EQ), {"r3"}),
    (f("genre", "fiction", FilterOperator.NE), {"r3", "r4", "r5"}),
    (f("year", 2015, FilterOperator.GT), {"r4", "r5"}),
    (f("year", 2015, FilterOperator.GTE), {"r3", "r4", "r5"}),
    (f("rating", 3.0, FilterOperator.LT), {"r4"}),
    (f("rating", 3.0, FilterOperator.LTE), {"r2", "r4"}),
    (f("genre", ["science", "history"], FilterOperator.IN), {"r3", "r4", "r5"}),
    (f("genre", ["science", "history"], FilterOperator.NIN), {"r1", "r2"}),
    (f("rating", [4.5, 4.9], FilterOperator.NIN), {"r2", "r4", "r5"}),  # a missing key is "not in"
    (f("tags", ["physics", "new"], FilterOperator.ANY), {"r2", "r3"}),
    (f("tags", ["classic", "long"], FilterOperator.ALL), {"r1"}),
    (f("tags", "classic", FilterOperator.CONTAINS), {"r1", "r3"}),
    (f("title", "Road", FilterOperator.TEXT_MATCH), {"r1", "r4"}),
    (f("document", "Light", FilterOperator.TEXT_MATCH), {"r3"}),  # the node text is filterable too
    (f("tags", None, FilterOperator.IS_EMPTY), {"r4", "r5"}),
    (f("note", None, FilterOperator.IS_EMPTY), {"r2", "r3", "r4", "r5"}),
]


@pytest.mark.parametrize("flt, expected", OPERATOR_CASES, ids=[f"{c[0].operator.name}-{c[0].key}" for c in OPERATOR_CASES])
def test_each_operator(filter_store, flt, expected):
    filters = MetadataFilters(filters=[flt])
    assert matching(filter_store, filters) == expected
    if flt.key in ROWS["r1"] or flt.key == "note":  # node metadata keys: LlamaIndex's own evaluator agrees
        assert llama_index_reference(filters) == expected


def llama_index_reference(filters):
    """The ids LlamaIndex's in-memory filter evaluator (SimpleVectorStore's) selects from ROWS."""
    keep = build_metadata_filter_fn(lambda node_id: ROWS[node_id], filters)
    return {node_id for node_id in ROWS if keep(node_id)}


def test_conditions_and_nesting(filter_store):
    fiction = f("genre", "fiction", FilterOperator.EQ)
    recent = f("year", 2010, FilterOperator.GT)
    classic = f("tags", "classic", FilterOperator.CONTAINS)
    assert matching(filter_store, MetadataFilters(filters=[fiction, classic])) == {"r1"}  # AND by default
    assert matching(filter_store, MetadataFilters(filters=[fiction, recent], condition=FilterCondition.OR)) \
        == {"r1", "r2", "r3", "r4", "r5"}
    assert matching(filter_store, MetadataFilters(filters=[fiction, classic], condition=FilterCondition.OR)) \
        == {"r1", "r2", "r3"}
    assert matching(filter_store, MetadataFilters(filters=[fiction], condition=FilterCondition.NOT)) \
        == {"r3", "r4", "r5"}
    for condition in FilterCondition:  # flat filters: the same sets as LlamaIndex's own evaluator
        flat = MetadataFilters(filters=[fiction, recent, classic], condition=condition)
        assert matching(filter_store, flat) == llama_index_reference(flat), condition
    # (fiction AND classic) OR (science AND year > 2020)
    nested = MetadataFilters(condition=FilterCondition.OR, filters=[
        MetadataFilters(filters=[fiction, classic]),
        MetadataFilters(filters=[f("genre", "science", FilterOperator.EQ), f("year", 2020, FilterOperator.GT)]),
    ])
    assert matching(filter_store, nested) == {"r1", "r5"}
    # rating >= 3 AND NOT (fiction OR tags contain physics)
    deeper = MetadataFilters(filters=[
        f("rating", 3.0, FilterOperator.GTE),
        MetadataFilters(condition=FilterCondition.NOT, filters=[fiction, f("tags", "physics", FilterOperator.CONTAINS)]),
    ])
    assert matching(filter_store, deeper) == set()
    assert matching(filter_store, MetadataFilters(filters=[])) == set(ROWS)


def test_the_needle_filter_documents():
    flt = MetadataFilters(condition=FilterCondition.OR, filters=[
        f("a", 1, FilterOperator.EQ), MetadataFilters(filters=[f("b", [1, 2], FilterOperator.IN), f("c", 3, FilterOperator.LT)])])
    assert to_needle_filter(flt) == {"$or": [{"a": {"$eq": 1}}, {"$and": [{"b": {"$in": [1, 2]}}, {"c": {"$lt": 3}}]}]}
    assert to_needle_filter(None, doc_ids=["d"]) == {"ref_doc_id": {"$in": ["d"]}}
    assert to_needle_filter(MetadataFilters(filters=[])) is None


def test_unsupported_operator_is_a_clear_error(filter_store):
    flt = MetadataFilters(filters=[f("title", "road", FilterOperator.TEXT_MATCH_INSENSITIVE)])
    with pytest.raises(UnsupportedFilterError, match="TEXT_MATCH_INSENSITIVE") as info:
        filter_store.query(VectorStoreQuery(query_embedding=unit(1, 0), similarity_top_k=2, filters=flt))
    assert isinstance(info.value, needle_mm.FilterError) and isinstance(info.value, ValueError)
    with pytest.raises(UnsupportedFilterError, match="TEXT_MATCH_INSENSITIVE"):
        filter_store.delete_nodes(filters=flt)
    # an operand Needle refuses: its FilterError names the part
    with pytest.raises(needle_mm.FilterError, match=r"\$contains"):
        to_needle_filter(MetadataFilters(filters=[f("title", 5, FilterOperator.TEXT_MATCH)]))


@pytest.mark.parametrize("mode", [VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.MMR,
                                  VectorStoreQueryMode.TEXT_SEARCH])
def test_other_query_modes_are_refused(filter_store, mode):
    with pytest.raises(needle_mm.InvalidArgumentError, match=mode.name):
        filter_store.query(VectorStoreQuery(query_embedding=unit(1, 0), similarity_top_k=2, mode=mode))


# --------------------------------------------------------------- writes, reads, handles


def test_delete_nodes_get_nodes_clear(filter_store, db_path):
    store = filter_store
    got = store.get_nodes(node_ids=["r3", "missing", "r1"])
    assert [n.node_id for n in got] == ["r3", "r1"]
    assert got[0].embedding == pytest.approx(unit(1, 2), abs=1e-6) and got[0].metadata == ROWS["r3"]
    science = MetadataFilters(filters=[f("genre", "science", FilterOperator.EQ)])
    assert [n.node_id for n in store.get_nodes(node_ids=["r1", "r3"], filters=science)] == ["r3"]

    store.delete_nodes(node_ids=["r1"])
    store.delete_nodes(node_ids=["r2", "r3"], filters=science)  # only the listed ones that match
    assert {n.node_id for n in store.get_nodes()} == {"r2", "r4", "r5"}
    store.delete_nodes(filters=science)
    assert {n.node_id for n in store.get_nodes()} == {"r2", "r4"}
    with pytest.raises(needle_mm.InvalidArgumentError, match="clear"):
        store.delete_nodes()
    with NeedleVectorStore(path=db_path, autosave=False) as other:  # every delete was saved
        assert {n.node_id for n in other.get_nodes()} == {"r2", "r4"}

    store.clear()
    assert store.get_nodes() == [] and store.collection is None
    assert store.query(VectorStoreQuery(query_embedding=unit(1, 0), similarity_top_k=3)).ids == []
    store.add([TextNode(id_="x", text="x", embedding=[1.0, 2.0, 3.0])])  # a new dimension after clear()
    assert store.collection.dimension == 3


def test_a_given_database_stays_open_and_updates_are_upserts(db_path):
    db = needle_mm.Database.open(db_path)
    try:
        store = NeedleVectorStore(database=db, collection_name="nodes", distance="euclidean")
        assert store.client is db
        store.add([TextNode(id_="a", text="one", embedding=unit(1, 0), metadata={"v": 1})])
        store.add([TextNode(id_="a", text="two", embedding=unit(0, 1), metadata={"v": 2})])
        store.close()
        (node,) = NeedleVectorStore(database=db, collection_name="nodes", distance=None).get_nodes()
        assert (node.get_content(), node.metadata) == ("two", {"v": 2})
        assert db.collection("nodes").distance.value == "euclidean"
        assert not db.dirty  # saved after each add
    finally:
        db.close()


def test_autosave_false_leaves_saving_to_the_caller(db_path):
    db = needle_mm.Database.open(db_path)
    try:
        store = NeedleVectorStore(database=db, autosave=False)
        store.add([TextNode(id_="a", text="a", embedding=unit(1, 0))])
        assert db.dirty
        db.save()
    finally:
        db.close()


def test_configuration_errors(db_path):
    with NeedleVectorStore(path=db_path) as store:
        store.add([TextNode(id_="a", text="a", embedding=unit(1, 0))])
    with pytest.raises(needle_mm.CollectionExistsError, match="euclidean"):
        NeedleVectorStore(path=db_path, distance="euclidean")
    with pytest.raises(needle_mm.InvalidConfigError):
        NeedleVectorStore(path=db_path, distance="manhattan")
    db = needle_mm.Database.open(db_path)
    try:
        with pytest.raises(needle_mm.InvalidArgumentError, match="not both"):
            NeedleVectorStore(path=db_path, database=db)
    finally:
        db.close()
    with NeedleVectorStore(path=db_path) as store:  # the failed constructions left the file usable
        assert [n.node_id for n in store.get_nodes()] == ["a"]


def test_bad_nodes_are_refused_with_the_reason(db_path):
    with NeedleVectorStore(path=db_path) as store:
        with pytest.raises(needle_mm.InvalidVectorError, match="no embedding"):
            store.add([TextNode(id_="a", text="a")])
        with pytest.raises(needle_mm.InvalidMetadataError, match="'document'.*reserved"):
            store.add([TextNode(id_="a", text="a", embedding=unit(1, 0), metadata={"document": "x.pdf"})])
        with pytest.raises(needle_mm.InvalidVectorError):  # Needle's own check: cosine refuses a zero vector
            store.add([TextNode(id_="z", text="z", embedding=[0.0] * DIM)])
        with pytest.raises(needle_mm.InvalidArgumentError, match="query_embedding"):
            store.query(VectorStoreQuery(query_embedding=None, similarity_top_k=1))
        assert store.add([]) == [] and store.collection is None
        assert not store.client.dirty  # the refused first batch left no collection pending


def test_non_json_metadata_is_stored_as_llama_index_serializes_it(db_path):
    when = datetime.datetime(2024, 5, 17, 12, 30)
    with NeedleVectorStore(path=db_path) as store:
        store.add([TextNode(id_="a", text="a", embedding=unit(1, 0), metadata={"when": when, "tags": {"x"}})])
        (node,) = store.get_nodes()
        assert node.metadata == {"when": "2024-05-17T12:30:00", "tags": ["x"]}
        assert store.collection.get("a").metadata["when"] == "2024-05-17T12:30:00"


def test_records_written_by_needle_itself_read_as_text_nodes(db_path):
    # e.g. a collection imported from Chroma: text under "document", metadata beside it
    with needle_mm.Database.open(db_path) as db:
        db.create_collection("imported", DIM).upsert_many(
            ["p1", "p2"], np.asarray([unit(1, 0), unit(0, 1)]),
            [{"document": "first", "src": "chroma"}, {"document": "second", "src": "chroma"}])
    with NeedleVectorStore(path=db_path, collection_name="imported") as store:
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model())
        hits = index.as_retriever(similarity_top_k=2).retrieve("x")
        assert sorted((h.node.node_id, h.node.get_content(), h.node.metadata["src"]) for h in hits) == [
            ("p1", "first", "chroma"), ("p2", "second", "chroma")]


def test_the_module_docstring_example_runs(tmp_path, monkeypatch, capsys):
    # its default SentenceSplitter loads tiktoken's encoding from llama-index's bundled cache (no_network guards it)
    example = integration.__doc__.split("::\n\n", 1)[1].split("\n\nHow a node is stored")[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(textwrap.dedent(example), "llama_index.py docstring", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("Needle keeps vectors in one file.") and float(out[0].split()[0]) == pytest.approx(1.0)
    assert out[1:] == ["2"]


def test_id_lists_must_be_lists_not_one_str(db_path):
    # a str is an iterable of characters: delete_nodes("ab") must not delete the nodes "a" and "b"
    with NeedleVectorStore(path=db_path) as store:
        nodes = [TextNode(id_=i, text=i, embedding=unit(*v)) for i, v in [("a", (1, 0)), ("b", (0, 1)), ("ab", (1, 1))]]
        for node in nodes:
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="d")
        store.add(nodes)
        q = unit(1, 0)
        for bad in ("ab", b"ab", 5, {"a": 1}):
            with pytest.raises(needle_mm.InvalidArgumentError, match="node_ids must be a list"):
                store.delete_nodes(bad)
            with pytest.raises(needle_mm.InvalidArgumentError, match="node_ids must be a list"):
                store.get_nodes(bad)
            with pytest.raises(needle_mm.InvalidArgumentError, match="node_ids must be a list"):
                store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3, node_ids=bad))
            with pytest.raises(needle_mm.InvalidArgumentError, match="doc_ids must be a list"):
                store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3, doc_ids=bad))
        with pytest.raises(needle_mm.InvalidArgumentError, match="doc_ids must be a list"):
            to_needle_filter(None, doc_ids="d")
        with pytest.raises(needle_mm.InvalidIdError, match=r"node_ids\[1\] must be a str"):
            store.delete_nodes(["a", 1])
        with pytest.raises(needle_mm.InvalidArgumentError, match="ref_doc_id must be a str"):
            store.delete(["d"])
        with pytest.raises(needle_mm.InvalidArgumentError, match="nodes must be a list"):
            store.add(nodes[0])  # one node, not a list of them
        with pytest.raises(needle_mm.InvalidArgumentError, match="nodes must be a list"):
            store.add("abc")
        with pytest.raises(needle_mm.InvalidArgumentError, match=r"nodes\[0\] must be a llama_index node"):
            store.add([{"id_": "x"}])
        with pytest.raises(needle_mm.FilterError, match="MetadataFilters"):
            store.get_nodes(filters={"key": "a"})
        assert sorted(n.node_id for n in store.get_nodes()) == ["a", "ab", "b"]  # nothing was deleted
        assert store.get_nodes(("ab",))[0].node_id == "ab"  # any sequence of ids
        store.delete_nodes(["ab"])
        assert sorted(n.node_id for n in store.get_nodes()) == ["a", "b"]


def test_similarity_top_k_is_checked_with_and_without_node_ids(db_path):
    with NeedleVectorStore(path=db_path) as store:
        q = unit(1, 0)
        for bad in (-1, True, 1.5, "2", None):  # before the collection exists too
            with pytest.raises(needle_mm.InvalidArgumentError, match="similarity_top_k must be a non-negative integer"):
                store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=bad))
        store.add([TextNode(id_=f"n{i}", text="t", embedding=unit(1, i)) for i in range(3)])
        for bad in (-1, True, 1.5, "2", None):
            for node_ids in (None, ["n0", "n1"]):
                with pytest.raises(needle_mm.InvalidArgumentError, match="similarity_top_k must be a non-negative integer"):
                    store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=bad, node_ids=node_ids))
        assert store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=np.int64(2))).ids == ["n0", "n1"]
        r = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=np.int64(1), node_ids=["n2", "n1"]))
        assert r.ids == ["n1"]
        with pytest.raises(needle_mm.InvalidArgumentError, match="VectorStoreQueryMode"):
            store.query(VectorStoreQuery(query_embedding=q, mode="no-such-mode"))
        with pytest.raises(needle_mm.InvalidVectorError):
            store.query(VectorStoreQuery(query_embedding=["a", "b"], similarity_top_k=1, node_ids=["n0"]))
