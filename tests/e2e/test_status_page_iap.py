"""The status page behind Identity-Aware Proxy, end to end: the `status_page` entry point under
functions-framework with IAP_AUDIENCE set and IAP_KEYS_URL pointing at a loopback JWK set (IAP's
keys are ES256 P-256 keys in that format), so every request must carry a JWT signed by one of
them for that audience. A forged `X-Goog-Authenticated-User-Email` alone is refused, in requests
and in headless Chromium (through a loopback proxy that plays IAP by adding the headers)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import jwt
from google.auth.crypt import es

from tests.e2e.conftest import DOMAIN, World
from tests.e2e.test_status_page import chromium_dom
from tests.sims.stack import FunctionServer

pytestmark = pytest.mark.e2e

AUDIENCE = "/projects/123456789/global/backendServices/987654321"
VIEWER = f"registrar@{DOMAIN}"


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


class IapKeys:
    """IAP's side: ES256 signing keys, and their public JWK set served on loopback."""

    def __init__(self):
        self.keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("iap-1", "iap-2")}
        jwks = {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "alg": "ES256",
                    "use": "sig",
                    "kid": kid,
                    "x": _b64(key.public_key().public_numbers().x),
                    "y": _b64(key.public_key().public_numbers().y),
                }
                for kid, key in self.keys.items()
            ]
        }
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=60")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/iap/verify/public_key-jwk"

    def assertion(self, kid="iap-1", key=None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://cloud.google.com/iap",
            "aud": AUDIENCE,
            "sub": "accounts.google.com:1234567890",
            "email": VIEWER,
            "iat": now,
            "exp": now + 600,
            **overrides,
        }
        private = key or self.keys[kid]
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return jwt.encode(es.EsSigner.from_string(pem, kid), claims).decode()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def iap(world: World):
    keys = IapKeys()
    env = {**world.stack.env, "IAP_AUDIENCE": AUDIENCE, "IAP_KEYS_URL": keys.url}
    server = FunctionServer("status_page", "http", env=env).start()
    yield keys, server
    server.stop()
    keys.stop()


def test_only_a_valid_iap_assertion_opens_the_page(iap):
    keys, server = iap

    def get(headers: dict) -> requests.Response:
        return requests.get(server.url, headers=headers, timeout=60)

    forged = {"X-Goog-Authenticated-User-Email": f"accounts.google.com:{VIEWER}"}
    stranger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    refused = {
        "no header": {},
        "forged email header only": forged,
        "not a JWT": {**forged, "x-goog-iap-jwt-assertion": "not.a.jwt"},
        "signed by another key": {"x-goog-iap-jwt-assertion": keys.assertion(key=stranger)},
        "another backend service": {"x-goog-iap-jwt-assertion": keys.assertion(aud=AUDIENCE + "0")},
        "expired": {"x-goog-iap-jwt-assertion": keys.assertion(iat=now - 7200, exp=now - 3600)},
        "not issued by IAP": {"x-goog-iap-jwt-assertion": keys.assertion(iss="https://accounts.google.com")},
    }
    for what, headers in refused.items():
        answer = get(headers)
        assert answer.status_code == 403, what
        assert "Sections" not in answer.text and VIEWER not in answer.text, what
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["X-Content-Type-Options"] == "nosniff"

    for kid in ("iap-1", "iap-2"):  # IAP rotates between its keys
        answer = get({"x-goog-iap-jwt-assertion": keys.assertion(kid=kid)})
        assert answer.status_code == 200, kid
        assert f"Signed in as {VIEWER}" in answer.text and "No sections" in answer.text
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["X-Content-Type-Options"] == "nosniff"
    # The identity shown is the JWT's, never the unsigned header's.
    mixed = get({"x-goog-iap-jwt-assertion": keys.assertion(), "X-Goog-Authenticated-User-Email": "x@evil.example"})
    assert f"Signed in as {VIEWER}" in mixed.text and "evil.example" not in mixed.text
    # The search form posts: its term is in no URL, so in no request log.
    found = requests.post(
        server.url, data={"q": "nothing-matches", "state": ""}, headers={"x-goog-iap-jwt-assertion": keys.assertion()}
    )
    assert found.status_code == 200 and 'value="nothing-matches"' in found.text and 'method="post"' in found.text


class PlaysIap:
    """A loopback proxy in front of the page that adds headers to each request, as IAP does."""

    def __init__(self, target: str, headers: dict):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                request = urllib.request.Request(target.rstrip("/") + self.path, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        status, body, kind = answer.status, answer.read(), answer.headers["Content-Type"]
                except urllib.error.HTTPError as err:
                    status, body, kind = err.code, err.read(), err.headers["Content-Type"]
                self.send_response(status)
                self.send_header("Content-Type", kind or "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_in_headless_chromium_a_forged_header_is_refused_and_a_signed_one_shows_the_viewer(iap):
    keys, server = iap
    with PlaysIap(server.url, {"X-Goog-Authenticated-User-Email": f"accounts.google.com:{VIEWER}"}) as forged:
        dom = chromium_dom(forged.url)
    assert "Forbidden" in dom and "Sections" not in dom and VIEWER not in dom
    with PlaysIap(server.url, {"x-goog-iap-jwt-assertion": keys.assertion()}) as signed:
        dom = chromium_dom(signed.url)
    assert " · rostersync status</title>" in dom and f"Signed in as {VIEWER}" in dom and "No sections" in dom
