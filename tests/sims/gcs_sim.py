"""A tiny Cloud Storage JSON API simulator on 127.0.0.1: enough to download objects.

Follows the JSON API's media download: ``GET /storage/v1/b/{bucket}/o/{object}?alt=media``
(also under ``/download/storage/v1/...``), with an optional ``generation``; unknown objects 404.
``upload()`` stores an object with a new generation (microseconds, increasing, as Cloud Storage's
are) and, like a bucket notification with payload JSON_API_V1, hands the OBJECT_FINALIZE
attributes and object resource to ``on_finalize``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class GcsSimulator:
    def __init__(self, on_finalize: Callable[[dict[str, str], dict], None] | None = None):
        self.objects: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        self.on_finalize = on_finalize
        self._last_generation = 0
        self._lock = threading.Lock()
        self._server = None
        self.base_url = ""

    def __enter__(self) -> GcsSimulator:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def upload(self, bucket: str, name: str, data: bytes) -> str:
        with self._lock:
            generation = max(self._last_generation + 1, int(time.time() * 1_000_000))
            self._last_generation = generation
            self.objects.setdefault((bucket, name), []).append((generation, data))
        attributes = {
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
            "bucketId": bucket,
            "objectId": name,
            "objectGeneration": str(generation),
        }
        resource = {"kind": "storage#object", "bucket": bucket, "name": name, "generation": str(generation)}
        resource["size"] = str(len(data))
        if self.on_finalize:
            self.on_finalize(attributes, resource)
        return str(generation)

    def _wsgi(self, environ: dict, start_response: Callable):
        request = Request(environ)
        path = request.path.removeprefix("/download")
        parts = path.split("/")
        # /storage/v1/b/{bucket}/o/{object}
        if len(parts) < 7 or parts[1:3] != ["storage", "v1"] or parts[3] != "b" or parts[5] != "o":
            return Response(json.dumps({"error": {"code": 404}}), 404)(environ, start_response)
        bucket, name = unquote(parts[4]), unquote("/".join(parts[6:]))
        versions = self.objects.get((bucket, name), [])
        wanted = request.args.get("generation")
        found = [d for g, d in versions if wanted is None or str(g) == wanted]
        if not found:
            body = {"error": {"code": 404, "message": f"No such object: {bucket}/{name}"}}
            return Response(json.dumps(body), 404, mimetype="application/json")(environ, start_response)
        if request.args.get("alt") != "media":
            meta = {"bucket": bucket, "name": name, "generation": str(versions[-1][0])}
            return Response(json.dumps(meta), 200, mimetype="application/json")(environ, start_response)
        return Response(found[-1], 200, mimetype="application/zip")(environ, start_response)
