"""A local stand-in for Pinecone's data-plane HTTP API, for importer tests only.

No real Pinecone can run on a test machine, so this serves the three
endpoints the importer uses, as Pinecone documents them: ``POST
/describe_index_stats``, ``GET /vectors/fetch?ids=..&namespace=..`` (at most
100 ids) and ``POST /query`` (brute force). Every request must carry the
``Api-Key`` header.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class PineconeStandIn:
    def __init__(self, ids, vectors, metadatas, api_key="test-key", namespace="", metric="cosine"):
        self.records = {i: (np.asarray(v, dtype=np.float32), m) for i, v, m in zip(ids, vectors, metadatas)}
        self.ids = list(ids)
        self.matrix = np.asarray(vectors, dtype=np.float32)
        self.api_key, self.namespace, self.metric = api_key, namespace, metric
        self.requests = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self):
                standin.requests += 1
                if self.headers.get("Api-Key") != standin.api_key:
                    self._reply(401, {"error": "unauthorised"})
                    return False
                return True

            def do_GET(self):
                if not self._authorised():
                    return
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                if url.path != "/vectors/fetch" or len(query.get("ids", [])) > 100:
                    return self._reply(400, {"error": "bad request"})
                found = {i: {"id": i, "values": standin.records[i][0].tolist(), "metadata": standin.records[i][1]}
                         for i in query["ids"] if i in standin.records}
                self._reply(200, {"vectors": found, "namespace": query.get("namespace", [""])[0]})

            def do_POST(self):
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/describe_index_stats":
                    return self._reply(200, {"dimension": standin.matrix.shape[1], "metric": standin.metric,
                                             "namespaces": {standin.namespace: {"vectorCount": len(standin.ids)}}})
                if self.path == "/query":
                    q = np.asarray(body["vector"], dtype=np.float32)
                    m = standin.matrix
                    scores = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
                    top = np.argsort(-scores, kind="stable")[: body["topK"]]
                    return self._reply(200, {"matches": [{"id": standin.ids[t], "score": float(scores[t])} for t in top]})
                self._reply(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
