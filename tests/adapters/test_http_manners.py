"""How our HTTP clients treat the providers: Retry-After in both of its forms, Clever's "do not
retry" answers not retried, a `rostersync/<version>` User-Agent, OAuth 2 tokens fetched again before
expires_in runs out, and OAuth 1.0a signatures equal to oauthlib's (an independent implementation)."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlencode

import pytest
from rostersync import USER_AGENT, __version__
from rostersync.adapters.clever import CleverClient, CleverError
from rostersync.adapters.oauth1 import authorization_header
from rostersync.adapters.oneroster import OneRosterClient
from rostersync.retry import Deadline, RetryPolicy, retry_after_seconds

from tests.sims.oneroster_sim import OneRosterSimulator

NOW = 1_800_000_000.0


def http_date(seconds_from_now: float, now: float = NOW) -> str:
    return email.utils.formatdate(now + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), (http_date(30), 30.0), (http_date(-30), 0.0), ("", None), (None, None)]
    + [("soon", None), ("-5", None), ("Wed, 99 Foo 2026 99:00:00 GMT", None), ("2026-10-21T07:28:00", None)],
)
def test_retry_after_in_seconds_or_as_an_http_date(header, seconds):
    assert retry_after_seconds(header, now=lambda: NOW) == seconds


class ScriptedServer:
    """A loopback HTTP server answering each GET with the next (status, headers, body) of a script,
    and recording every request's headers."""

    def __init__(self, script: list[tuple[int, dict, dict]]):
        self.script = list(script)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(dict(self.headers))
                status, headers, body = server.script.pop(0) if server.script else (500, {}, {})
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def clever(url: str, waits: list[float]) -> CleverClient:
    policy = RetryPolicy(base_delay=0.001, max_delay=0.001, max_attempts=4, sleep=waits.append)
    return CleverClient(url, "token", retry=policy, deadline=Deadline(60))


def test_clever_waits_as_long_as_an_http_date_retry_after_says_and_names_itself():
    ok = (200, {}, {"data": {"id": "s1"}})
    with ScriptedServer([(429, {"Retry-After": email.utils.formatdate(time.time() + 20, usegmt=True)}, {}), ok]) as s:
        waits: list[float] = []
        assert clever(s.url, waits).get("sections/s1")["data"]["id"] == "s1"
    assert len(waits) == 1 and 18 <= waits[0] <= 20  # the date, not the 1 ms backoff
    assert [r["User-Agent"] for r in s.requests] == [f"rostersync/{__version__}"] * 2
    assert f"rostersync/{__version__}" == USER_AGENT


@pytest.mark.parametrize("status", [400, 401, 501])
def test_clevers_do_not_retry_answers_are_not_retried(status):
    with ScriptedServer([(status, {}, {"error": "no"})] * 4) as s:
        waits: list[float] = []
        with pytest.raises(CleverError) as err:
            clever(s.url, waits).get("sections/s1")
    assert err.value.status == status and not err.value.retryable
    assert len(s.requests) == 1 and waits == []


@pytest.mark.parametrize("status", [500, 502, 503])
def test_clevers_server_errors_are_retried(status):
    with ScriptedServer([(status, {}, {}), (200, {}, {"data": {"id": "s1"}})]) as s:
        assert clever(s.url, []).get("sections/s1")["data"]["id"] == "s1"
    assert len(s.requests) == 2


def test_an_oauth2_token_is_fetched_again_before_expires_in_runs_out():
    with OneRosterSimulator() as sim:
        sim.add_class("c1", "Biology")
        sim.token_lifetime = 1  # the simulator refuses the token after a second
        client = OneRosterClient(
            sim.base_url, "1.2", sim.client_id, sim.client_secret, sim.token_url, deadline=Deadline(30)
        )
        assert [r["sourcedId"] for page in client.pages("classes") for r in page] == ["c1"]
        before = len(sim.requests)
        time.sleep(1.0)
        assert [r["sourcedId"] for page in client.pages("classes") for r in page] == ["c1"]
        again = sim.requests[before:]
        # A new token first, then the read: no request went out with the lapsed token (no 401).
        assert again[0] == ("POST", "/token") and all(m == "GET" for m, _ in again[1:])
        assert set(sim.user_agents) == {USER_AGENT}


@pytest.mark.parametrize(
    "query",
    [{}, {"limit": "100", "offset": "0"}, {"filter": "dateLastModified>'2026-01-02T03:04:05Z'", "sort": "sourcedId"}]
    + [{"fields": "sourcedId,name", "q": "a b+c/d~é"}],
)
def test_oauth1_signatures_equal_oauthlibs(query):
    oauthlib = pytest.importorskip("oauthlib.oauth1")
    url = "https://OneRoster.Example.org:443/ims/oneroster/v1p1/classes"
    ours = authorization_header("GET", url, query, "key-1", "secret/2+x", nonce="n0nce", timestamp=1700000000)
    client = oauthlib.Client(
        "key-1",
        client_secret="secret/2+x",
        signature_method=oauthlib.SIGNATURE_HMAC_SHA256,
        nonce="n0nce",
        timestamp="1700000000",
    )
    full = f"{url}?{urlencode(query)}" if query else url
    _, headers, _ = client.sign(full, http_method="GET")
    theirs = oauth_params(headers["Authorization"])
    assert oauth_params(ours) == theirs  # the signature and every other oauth_ parameter
    assert theirs["oauth_signature_method"] == "HMAC-SHA256"


def oauth_params(header: str) -> dict[str, str]:
    """`OAuth k="v", ...` -> {k: v} (values percent-decoded)."""
    assert header.startswith("OAuth ")
    pairs = (part.split("=", 1) for part in header[len("OAuth ") :].split(","))
    return {k.strip(): unquote(v.strip().strip('"')) for k, v in pairs}
