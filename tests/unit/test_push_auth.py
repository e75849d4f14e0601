"""The OIDC check on Pub/Sub pushes (push_auth.py, main._authorize_push), with our own signing key.

An RSA key made here signs the tokens; a loopback HTTP server serves its public key the way Google
serves its certificates (a JSON object of PEM keys by key id), and the authenticator is pointed at it.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import functions_framework
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt
from rostersync import wiring
from rostersync.adapters.push_auth import CachingRequest, PushAuthenticator, PushAuthError
from rostersync.app.deadletters import DeadLetterRecorder
from rostersync.config import ConfigError, load_settings

from tests.unit.test_deadletters import FakeDeadLetterStore

PUSH_SA = "rostersync-pubsub-push@district-project.iam.gserviceaccount.com"
AUDIENCE = "https://rostersync-apply-roster-event-123456789012.us-central1.run.app"
KID = "test-key-1"


def _private_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _public_pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def keys():
    return rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def certs_server(keys):
    """Serves {KID: public key PEM} of the first key, as https://www.googleapis.com/oauth2/v1/certs does."""
    body = json.dumps({KID: _public_pem(keys[0])}).encode()
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs", hits
    finally:
        server.shutdown()
        server.server_close()


def token(key, kid: str = KID, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "112233445566778899000",
        "sub": "112233445566778899000",
        "email": PUSH_SA,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    signer = crypt.RSASigner.from_string(_private_pem(key), key_id=kid)
    return jwt.encode(signer, claims).decode()


@pytest.fixture
def auth(certs_server):
    return PushAuthenticator("oidc", PUSH_SA, [AUDIENCE], certs_url=certs_server[0])


def test_a_valid_token_is_accepted(auth, keys):
    claims = auth.check(f"Bearer {token(keys[0])}")
    assert claims["email"] == PUSH_SA
    assert claims["aud"] == AUDIENCE


def test_any_configured_audience_is_accepted(certs_server, keys):
    other = "https://rostersync-record-dead-letter-123456789012.us-central1.run.app"
    auth = PushAuthenticator("oidc", PUSH_SA, [AUDIENCE, other], certs_url=certs_server[0])
    assert auth.check(f"Bearer {token(keys[0], aud=other)}")["aud"] == other


def _garbage_payload_token() -> str:
    def segment(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'RS256', 'kid': KID})}.{segment({'email': PUSH_SA})}.c2lnbmF0dXJl"


REJECTED = {
    "missing header": lambda k: None,
    "empty header": lambda k: "",
    "not bearer": lambda k: f"Basic {token(k[0])}",
    "bearer without token": lambda k: "Bearer ",
    "garbage": lambda k: "Bearer not-a-jwt-at-all",
    "unsigned (alg none)": lambda k: (
        "Bearer "
        + base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(json.dumps({"email": PUSH_SA, "aud": AUDIENCE}).encode()).rstrip(b"=").decode()
        + "."
    ),
    "bad signature": lambda k: f"Bearer {_garbage_payload_token()}",
    "signed by another key, same kid": lambda k: f"Bearer {token(k[1])}",
    "unknown key id": lambda k: f"Bearer {token(k[0], kid='other-kid')}",
    "wrong audience": lambda k: f"Bearer {token(k[0], aud='https://someone-else.run.app')}",
    "no audience": lambda k: f"Bearer {token(k[0], aud=None)}",
    "wrong email": lambda k: f"Bearer {token(k[0], email='attacker@evil-project.iam.gserviceaccount.com')}",
    "no email": lambda k: f"Bearer {token(k[0], email=None)}",
    "email not verified": lambda k: f"Bearer {token(k[0], email_verified=False)}",
    "expired": lambda k: f"Bearer {token(k[0], iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)}",
    "not Google's issuer": lambda k: f"Bearer {token(k[0], iss='https://evil.example')}",
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_bad_pushes_are_rejected_and_the_reason_never_holds_the_token(auth, keys, case):
    header = REJECTED[case](keys)
    with pytest.raises(PushAuthError) as err:
        auth.check(header)
    raw = (header or "").partition(" ")[2].strip()
    for piece in [raw, *raw.split(".")]:
        if len(piece) >= 8:
            assert piece not in str(err.value), f"the reason quotes the token: {err.value}"


def test_off_accepts_anything():
    assert PushAuthenticator("off").check(None) == {}


def test_oidc_needs_an_account_and_an_audience():
    with pytest.raises(ValueError):
        PushAuthenticator("oidc", "", [AUDIENCE])
    with pytest.raises(ValueError):
        PushAuthenticator("oidc", PUSH_SA, [])


def test_the_certificates_are_fetched_once_and_cached(certs_server, keys):
    url, hits = certs_server
    before = len(hits)
    auth = PushAuthenticator("oidc", PUSH_SA, [AUDIENCE], certs_url=url, request=CachingRequest())
    for _ in range(3):
        auth.check(f"Bearer {token(keys[0])}")
    assert len(hits) - before == 1


# -- settings -------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("PUSH_AUTH", "PUSH_SERVICE_ACCOUNT", "PUSH_AUDIENCE", "PUBSUB_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_push_auth_defaults_to_oidc(clean_env):
    s = load_settings()
    assert s.push_auth == "oidc"
    with pytest.raises(ConfigError, match="PUSH_SERVICE_ACCOUNT"):
        s.require_push_auth()


def test_push_auth_off_is_refused_without_the_emulator(clean_env):
    clean_env.setenv("PUSH_AUTH", "off")
    with pytest.raises(ConfigError, match="PUBSUB_EMULATOR_HOST"):
        load_settings()
    clean_env.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    assert load_settings().push_auth == "off"


def test_push_settings_are_read(clean_env):
    clean_env.setenv("PUSH_SERVICE_ACCOUNT", PUSH_SA)
    clean_env.setenv("PUSH_AUDIENCE", f"{AUDIENCE}, https://b.run.app")
    s = load_settings()
    s.require_push_auth()
    assert s.push_audiences == (AUDIENCE, "https://b.run.app")
    with pytest.raises(ConfigError, match="PUSH_AUTH"):
        clean_env.setenv("PUSH_AUTH", "sometimes")
        load_settings()


# -- through functions-framework: flask.abort(403) inside a CloudEvent function -------------------


def push_body(message_id: str = "42") -> dict:
    return {
        "subscription": "projects/p/subscriptions/roster-events-dead-letter-push",
        "deliveryAttempt": 1,
        "message": {
            "messageId": message_id,
            "publishTime": "2025-01-01T00:00:00Z",
            "data": base64.b64encode(b'{"kind": "course_wanted"}').decode(),
            "attributes": {"section_id": "sec1", "event_id": "ev1", "kind": "course_wanted"},
        },
    }


@pytest.fixture
def dead_letter_app(monkeypatch, auth):
    store = FakeDeadLetterStore()
    monkeypatch.setattr(wiring, "push_authenticator", lambda: auth)
    monkeypatch.setattr(wiring, "dead_letter_recorder", lambda: DeadLetterRecorder(store))
    app = functions_framework.create_app(
        "record_dead_letter", str(wiring.__file__).replace("rostersync/wiring.py", "main.py"), "cloudevent"
    )
    return app.test_client(), store


def test_functions_framework_answers_403_and_leaves_the_message_alone(dead_letter_app, keys, caplog):
    client, store = dead_letter_app
    bad = token(keys[0], aud="https://someone-else.run.app")
    with caplog.at_level(logging.WARNING):
        for headers in ({}, {"Authorization": f"Bearer {bad}"}):
            response = client.post("/", json=push_body(), headers=headers)
            assert response.status_code == 403
    assert store.docs == {}
    assert "rejected (403)" in caplog.text
    assert bad not in caplog.text and bad.split(".")[1] not in caplog.text


def test_functions_framework_runs_the_function_for_a_valid_token(dead_letter_app, keys):
    client, store = dead_letter_app
    response = client.post("/", json=push_body("77"), headers={"Authorization": f"Bearer {token(keys[0])}"})
    assert response.status_code == 200, response.data
    assert store.docs["77"]["attributes"] == {"section_id": "sec1", "event_id": "ev1", "kind": "course_wanted"}
    assert store.docs["77"]["delivery_attempts"] == 1


# -- the scheduled HTTP functions: only Cloud Scheduler's account ---------------------------------

SCHEDULER_SA = "rostersync-scheduler@district-project.iam.gserviceaccount.com"
POLLER_URL = "https://rostersync-poll-clever-123.us-central1.run.app"


@pytest.fixture
def poller_app(monkeypatch, certs_server):
    polls = []

    class CountingPoller:
        def poll(self):
            polls.append(1)
            return type("R", (), {"to_json": lambda self: {"outcome": "ok", "published": 0}})()

    monkeypatch.setattr(
        wiring,
        "scheduler_authenticator",
        lambda: PushAuthenticator("oidc", SCHEDULER_SA, [POLLER_URL], certs_url=certs_server[0]),
    )
    monkeypatch.setattr(wiring, "poller", CountingPoller)
    app = functions_framework.create_app(
        "poll_clever", str(wiring.__file__).replace("rostersync/wiring.py", "main.py"), "http"
    )
    return app.test_client(), polls


def test_only_the_scheduler_account_may_run_a_poll(poller_app, keys):
    client, polls = poller_app
    for headers in (
        {},
        {"Authorization": f"Bearer {token(keys[0], aud=POLLER_URL)}"},  # the push account, not the scheduler
        {"Authorization": f"Bearer {token(keys[0], email=SCHEDULER_SA)}"},  # another audience
    ):
        assert client.post("/", headers=headers).status_code == 403
    assert polls == []
    good = token(keys[0], email=SCHEDULER_SA, aud=POLLER_URL)
    response = client.post("/", headers={"Authorization": f"Bearer {good}"})
    assert response.status_code == 200 and polls == [1]
