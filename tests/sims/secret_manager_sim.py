"""A Secret Manager v1 simulator: the two calls rostersync makes (secrets.addVersion, versions.access).

Follows cloud.google.com/secret-manager/docs/reference/rest: addVersion POSTs
``/v1/projects/P/secrets/S:addVersion`` with ``{"payload": {"data": base64}}`` and answers the
SecretVersion (``name`` .../versions/N, ``state`` ENABLED); a secret that does not exist is 404
NOT_FOUND (terraform creates secrets; versions come later). ``versions/latest:access`` answers
``{"name", "payload": {"data"}}``. Payloads over 64 KiB are 400 INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

MAX_PAYLOAD = 64 * 1024
_ADD = re.compile(r"^/v1/(projects/[^/]+/secrets/[^/:]+):addVersion$")
_ACCESS = re.compile(r"^/v1/(projects/[^/]+/secrets/[^/]+)/versions/([^/:]+):access$")


class SecretManagerSimulator:
    def __init__(self):
        self.secrets: dict[str, list[bytes]] = {}
        self.base_url = ""
        self._server = None
        self._lock = threading.Lock()

    def create_secret(self, name: str) -> None:
        self.secrets.setdefault(name, [])

    def latest(self, name: str) -> bytes | None:
        versions = self.secrets.get(name) or []
        return versions[-1] if versions else None

    def _error(self, code: int, status: str, message: str) -> Response:
        body = {"error": {"code": code, "message": message, "status": status}}
        return Response(json.dumps(body), status=code, content_type="application/json")

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        response = self._route(request)
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        add, access = _ADD.match(request.path), _ACCESS.match(request.path)
        with self._lock:
            if add and request.method == "POST":
                name = add.group(1)
                if name not in self.secrets:
                    return self._error(404, "NOT_FOUND", f"Secret [{name}] not found or has no versions.")
                try:
                    data = base64.b64decode((request.get_json(silent=True) or {})["payload"]["data"], validate=True)
                except (KeyError, TypeError, binascii.Error):
                    return self._error(400, "INVALID_ARGUMENT", "payload.data must be base64.")
                if len(data) > MAX_PAYLOAD:
                    return self._error(400, "INVALID_ARGUMENT", "Secret payload cannot exceed 65536 bytes.")
                self.secrets[name].append(data)
                version = {
                    "name": f"{name}/versions/{len(self.secrets[name])}",
                    "createTime": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                    "state": "ENABLED",
                }
                return Response(json.dumps(version), content_type="application/json")
            if access and request.method == "GET":
                name, which = access.groups()
                versions = self.secrets.get(name) or []
                index = len(versions) if which == "latest" else int(which) if which.isdigit() else 0
                if not 1 <= index <= len(versions):
                    return self._error(404, "NOT_FOUND", f"Secret Version [{name}/versions/{which}] not found.")
                payload = {"data": base64.b64encode(versions[index - 1]).decode()}
                return Response(
                    json.dumps({"name": f"{name}/versions/{index}", "payload": payload}),
                    content_type="application/json",
                )
        return self._error(404, "NOT_FOUND", f"Method not found: {request.method} {request.path}")

    def __enter__(self) -> SecretManagerSimulator:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/"
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
