"""The consent command's flow (rostersync/admin/consent.py: google-auth-oauthlib's InstalledAppFlow)
against the Classroom simulator's OAuth endpoints, which check PKCE as Google does."""

from __future__ import annotations

import base64
import hashlib
import queue
import threading
from urllib.parse import parse_qs, urlencode, urlsplit

import google_auth_oauthlib.flow
import pytest
import requests
from rostersync.admin.consent import ConsentError, ConsentRequest, run_consent

from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.test_classroom_push import ADMIN, CLIENT_ID, CLIENT_SECRET, DOMAIN, REDIRECT, SCOPES


@pytest.fixture
def sim():
    with ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as s:
        s.add_user(ADMIN, "District", "Admin")
        s.register_oauth_client(CLIENT_ID, CLIENT_SECRET)
        yield s


@pytest.fixture
def prompts(monkeypatch):
    """The URLs the flow prints (it prints its prompt; we read the URL from it)."""
    urls: queue.Queue[str] = queue.Queue()
    monkeypatch.setattr(google_auth_oauthlib.flow, "print", lambda text: urls.put(text.split()[-1]), raising=False)
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the simulator speaks http on loopback
    return urls


def request_for(sim) -> ConsentRequest:
    return ConsentRequest(CLIENT_ID, CLIENT_SECRET, sim.base_url + "o/oauth2/v2/auth", sim.base_url + "token", ADMIN)


def consent_with(sim, browser, timeout: float = 30.0, prompts=None) -> dict | ConsentError:
    """run_consent in a thread, `browser(url)` playing the administrator; its grant or its error."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["grant"] = run_consent(request_for(sim), timeout=timeout)
        except ConsentError as exc:
            outcome["grant"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    if browser is not None:
        browser(prompts.get(timeout=30))
    thread.join(timeout + 30)
    assert not thread.is_alive()
    return outcome["grant"]


def follow(url: str) -> None:
    """The browser: the consent screen redirects to the command's loopback listener."""
    assert requests.get(url, timeout=30).status_code == 200


def test_the_consent_uses_pkce_and_yields_a_working_refresh_token(sim, prompts):
    grant = consent_with(sim, follow, prompts=prompts)
    assert grant["type"] == "authorized_user" and grant["refresh_token"].startswith("1//")
    assert grant["token_uri"] == sim.base_url + "token" and grant["client_id"] == CLIENT_ID
    assert sim.pkce_methods == ["S256"]
    refreshed = requests.post(
        sim.base_url + "token",
        data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
        | {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=10,
    )
    assert refreshed.status_code == 200 and refreshed.json()["access_token"]


def test_the_consent_url_asks_for_offline_access_for_the_admin(sim, prompts):
    seen = []

    def look_then_follow(url: str) -> None:
        seen.append({k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()})
        follow(url)

    consent_with(sim, look_then_follow, prompts=prompts)
    (query,) = seen
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["access_type"] == "offline" and query["prompt"] == "consent" and query["login_hint"] == ADMIN
    assert query["redirect_uri"].startswith("http://127.0.0.1:") and query["state"]


def test_a_refusal_is_a_clear_error(sim, prompts):
    def refuse(url: str) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        requests.get(
            f"{query['redirect_uri']}?{urlencode({'error': 'access_denied', 'state': query['state']})}", timeout=10
        )

    error = consent_with(sim, refuse, prompts=prompts)
    assert isinstance(error, ConsentError) and "access_denied" in str(error)


def test_nobody_consenting_times_out(sim, prompts):
    error = consent_with(sim, None, timeout=0.5)
    assert isinstance(error, ConsentError) and "no consent arrived" in str(error)


def authorize(sim, challenge: str) -> str:
    answer = requests.get(
        sim.base_url + "o/oauth2/v2/auth",
        params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "scope": SCOPES}
        | {"state": "s", "code_challenge": challenge, "code_challenge_method": "S256"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


def exchange(sim, code: str, verifier: str | None) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        data["code_verifier"] = verifier
    return requests.post(sim.base_url + "token", data=data, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10)


@pytest.mark.parametrize("verifier", [None, "a-different-verifier-that-is-long-enough-0123456789"])
def test_the_simulator_refuses_a_code_without_its_verifier(sim, verifier):
    right = "the-verifier-the-client-keeps-to-itself-0123456789-abcdef"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(right.encode()).digest()).decode().rstrip("=")
    refused = exchange(sim, authorize(sim, challenge), verifier)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert exchange(sim, authorize(sim, challenge), right).status_code == 200  # client auth by HTTP Basic too
