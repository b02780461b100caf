"""Pinecone: fetch by id batches over its data-plane HTTP API, as the guide says.

Pinecone cannot list every id of a pod index, so the ids come from a file
(one per line) kept beside the application, as in the migration guide.
``host`` is the index host shown in the Pinecone console
(``https://<index>-<project>.svc.<region>.pinecone.io``); the API key goes
in the ``Api-Key`` header. Only the standard library is used (urllib).
Position: ids read. Ids Pinecone no longer has are skipped and counted.

Tests run this against a local stand-in of the same endpoints
(``tests/pinecone_standin.py``), because no real Pinecone can run here.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import orjson

from ..errors import SourceError
from ._run import Batch, Source
from .files import _lines

FETCH_BATCH = 100  # Pinecone's limit on ids per fetch request


class PineconeSource(Source):
    kind = "pinecone"

    def __init__(self, host: str, ids_path: str, api_key: str | None = None, namespace: str = "",
                 distance: str | None = None, timeout: float = 60.0):
        import os

        self.host = host if "://" in host else "https://" + host
        self.api_key = api_key or os.environ.get("PINECONE_API_KEY")
        if not self.api_key:
            raise SourceError("Pinecone needs an API key: api_key= (--api-key) or PINECONE_API_KEY")
        self.namespace, self.timeout = namespace, timeout
        self.ids = [line.rstrip(b"\r\n").decode("utf-8") for line in _lines(ids_path)]
        stats = self._call("POST", "/describe_index_stats", {})
        self.dim = int(stats["dimension"])
        self.total = stats.get("namespaces", {}).get(namespace, {}).get("vectorCount")
        self.distance = distance or stats.get("metric")
        self.missing = 0
        self.description = {"kind": "pinecone", "host": self.host, "namespace": namespace, "ids": ids_path}

    def _call(self, method: str, path: str, body=None, query=None):
        url = self.host.rstrip("/") + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        data = None if body is None or method == "GET" else orjson.dumps(body)
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Api-Key": self.api_key, "Content-Type": "application/json", "X-Pinecone-API-Version": "2024-07"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SourceError(f"Pinecone {method} {path}: HTTP {exc.code} {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"cannot reach Pinecone at {self.host}: {exc}") from None

    def count(self):
        return self.total

    def fetch(self, ids):
        out = {}
        for start in range(0, len(ids), FETCH_BATCH):
            part = list(ids[start:start + FETCH_BATCH])
            got = self._call("GET", "/vectors/fetch", query={"ids": part, "namespace": self.namespace})["vectors"]
            out.update({i: (np.asarray(v["values"], dtype=np.float32), v.get("metadata") or {}) for i, v in got.items()})
        return out

    def batches(self, position, batch_size):
        step = max(1, min(batch_size, FETCH_BATCH))
        for start in range(position or 0, len(self.ids), step):
            part = self.ids[start:start + step]
            got = self.fetch(part)
            found = [i for i in part if i in got]
            self.missing += len(part) - len(found)
            vectors = np.stack([got[i][0] for i in found]) if found else np.zeros((0, self.dim), np.float32)
            yield Batch(found, vectors, [got[i][1] for i in found], start + len(part))

    def search(self, vector, k):
        body = {"vector": np.asarray(vector).tolist(), "topK": k, "namespace": self.namespace}
        return [m["id"] for m in self._call("POST", "/query", body)["matches"]]
