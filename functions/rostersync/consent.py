"""`rostersync consent-notifications`: the one-time OAuth consent of a Workspace administrator.

Classroom only accepts push-notification registrations made with a user's own grant, not with
the domain-wide delegation the sync uses for everything else. This runs Google's installed-app
flow: it prints the consent URL, listens on a loopback port for the browser's redirect, exchanges
the code for a refresh token and stores the grant (google-auth's authorized-user JSON) as a new
version of the Secret Manager secret that renew_classroom_registration reads. Nothing is written
to disk or printed but the URL and the secret version's name.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from rostersync.push_registration import PUSH_SCOPES

GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


class ConsentError(Exception):
    """The consent did not complete; the message says why."""


@dataclass(frozen=True)
class ConsentRequest:
    client_id: str
    client_secret: str
    auth_uri: str = GOOGLE_AUTH_URI
    token_uri: str = GOOGLE_TOKEN_URI
    login_hint: str = ""


class _Redirect(BaseHTTPRequestHandler):
    result: dict = {}

    def do_GET(self) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        type(self).result.update(query)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"rostersync received the consent; you can close this window.")

    def log_message(self, *args) -> None:
        pass


def run_consent(request: ConsentRequest, show_url, timeout: float = 600.0) -> dict:
    """The authorized-user info (client_id, client_secret, refresh_token, token_uri, type)."""
    handler = type("Redirect", (_Redirect,), {"result": {}})
    server = HTTPServer(("127.0.0.1", 0), handler)
    redirect_uri = f"http://127.0.0.1:{server.server_port}/"
    state = secrets.token_urlsafe(16)
    params = {
        "client_id": request.client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(PUSH_SCOPES),
        "access_type": "offline",  # a refresh token, so the daily renewal needs nobody
        "prompt": "consent",
        "state": state,
    }
    if request.login_hint:
        params["login_hint"] = request.login_hint
    thread = threading.Thread(target=server.handle_request, daemon=True)
    server.timeout = timeout
    thread.start()
    show_url(f"{request.auth_uri}?{urlencode(params)}")
    thread.join(timeout + 5)
    server.server_close()
    answer = handler.result
    if answer.get("error"):
        raise ConsentError(f"consent refused: {answer['error']}")
    if answer.get("state") != state or not answer.get("code"):
        raise ConsentError("no consent arrived (timed out, or a redirect that was not ours)")
    token = requests.post(
        request.token_uri,
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "client_id": request.client_id,
            "client_secret": request.client_secret,
            "redirect_uri": redirect_uri,
        },
        timeout=30,
    )
    body = token.json() if token.headers.get("Content-Type", "").startswith("application/json") else {}
    if token.status_code != 200 or not body.get("refresh_token"):
        raise ConsentError(f"the token endpoint answered {token.status_code}: {body.get('error') or token.text[:200]}")
    return {
        "type": "authorized_user",
        "client_id": request.client_id,
        "client_secret": request.client_secret,
        "refresh_token": body["refresh_token"],
        "token_uri": request.token_uri,
    }


def read_client_secrets(text: str) -> ConsentRequest:
    """The OAuth client file the Google Cloud console downloads for a Desktop app client."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConsentError(f"the client secrets file is not JSON: {exc}") from None
    client = (doc.get("installed") or doc.get("web")) if isinstance(doc, dict) else None
    if not isinstance(client, dict) or not client.get("client_id") or not client.get("client_secret"):
        raise ConsentError('the client secrets file has no "installed" client with client_id and client_secret')
    return ConsentRequest(
        client["client_id"],
        client["client_secret"],
        client.get("auth_uri") or GOOGLE_AUTH_URI,
        client.get("token_uri") or GOOGLE_TOKEN_URI,
    )


def grant_json(info: dict) -> bytes:
    return json.dumps(info, sort_keys=True).encode()
