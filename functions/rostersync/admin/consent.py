"""`rostersync consent-notifications`: the one-time OAuth consent of a Workspace administrator.

Classroom only accepts push-notification registrations made with a user's own grant, not with
the domain-wide delegation the sync uses for everything else. This runs Google's installed-app
flow with google-auth-oauthlib's InstalledAppFlow (PKCE with S256, a loopback redirect, the state
checked, the code exchanged for a refresh token) and stores the grant (google-auth's
authorized-user JSON) as a new version of the Secret Manager secret that
renew_classroom_registration reads. Nothing is written to disk or printed but the URL and the
secret version's name.

google-auth-oauthlib is a dependency of the command only (pyproject.toml), not of the functions,
which never import this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from rostersync.app.push_registration import PUSH_SCOPES

GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
PROMPT = "Open this URL as a Workspace administrator and allow access:\n{url}"
SUCCESS = "rostersync received the consent; you can close this window."


class ConsentError(Exception):
    """The consent did not complete; the message says why."""


@dataclass(frozen=True)
class ConsentRequest:
    client_id: str
    client_secret: str
    auth_uri: str = GOOGLE_AUTH_URI
    token_uri: str = GOOGLE_TOKEN_URI
    login_hint: str = ""


def run_consent(request: ConsentRequest, prompt: str = PROMPT, timeout: float = 600.0) -> dict:
    """The authorized-user info (client_id, client_secret, refresh_token, token_uri, type). Prints
    `prompt` with the consent URL on stdout, then waits up to `timeout` seconds for the redirect."""
    from google_auth_oauthlib.flow import InstalledAppFlow, WSGITimeoutError
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error

    if urlsplit(request.token_uri).scheme == "http" and urlsplit(request.token_uri).hostname in (
        "127.0.0.1",
        "localhost",
    ):
        # oauthlib refuses plain http; a loopback token endpoint is a local simulator (tests, demo).
        os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
    flow = InstalledAppFlow.from_client_config(
        {
            "installed": {
                "client_id": request.client_id,
                "client_secret": request.client_secret,
                "auth_uri": request.auth_uri,
                "token_uri": request.token_uri,
                "redirect_uris": ["http://127.0.0.1"],
            }
        },
        scopes=PUSH_SCOPES,
        autogenerate_code_verifier=True,  # PKCE: the code is useless to anyone who intercepts it
    )
    extra = {"login_hint": request.login_hint} if request.login_hint else {}
    try:
        credentials = flow.run_local_server(
            host="127.0.0.1",
            port=0,
            open_browser=False,  # often run over SSH: the administrator opens the URL
            authorization_prompt_message=prompt,
            success_message=SUCCESS,
            timeout_seconds=timeout,
            access_type="offline",  # a refresh token, so the daily renewal needs nobody
            prompt="consent",
            **extra,
        )
    except WSGITimeoutError:
        raise ConsentError(f"no consent arrived within {timeout:g} seconds") from None
    except (OAuth2Error, ValueError) as exc:  # refused, wrong state, or the token endpoint said no
        raise ConsentError(f"consent failed: {getattr(exc, 'description', None) or exc}") from None
    except requests.RequestException as exc:
        raise ConsentError(f"the token endpoint could not be reached: {type(exc).__name__}") from None
    if not credentials.refresh_token:
        raise ConsentError("the token endpoint gave no refresh token")
    return {
        "type": "authorized_user",
        "client_id": request.client_id,
        "client_secret": request.client_secret,
        "refresh_token": credentials.refresh_token,
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
