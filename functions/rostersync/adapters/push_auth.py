"""Who may push to the Pub/Sub-fed functions: only Pub/Sub, with a Google-signed OIDC token.

Pub/Sub signs every push with an ID token of the subscription's push service account, for the
subscription's audience, in `Authorization: Bearer <token>`. Cloud Run checks it too (run.invoker);
this is the same check in code, so a function that was made public by mistake, or reached through
another path, still accepts nothing else. `PUSH_AUTH=off` (only with the local emulator, which sends
no tokens) turns it off.

Nothing here logs or returns the token itself; reasons name the claim that did not match.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import id_token

# Google's ID token signing certificates (PEM, keyed by `kid`).
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CLOCK_SKEW_SECONDS = 10


class PushAuthError(Exception):
    """The push request is not from our push subscription; the message says why (no token)."""


class CachingRequest:
    """A google.auth transport request that keeps successful GETs (the certificates) for their
    Cache-Control max-age, between 60 s and an hour, so a verification is not a fetch each time."""

    def __init__(self, inner: Callable | None = None, clock: Callable[[], float] = time.monotonic):
        self._inner = inner or google.auth.transport.requests.Request()
        self._clock = clock
        self._cache: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        if method != "GET" or body is not None:
            return self._inner(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(url)
            if hit and hit[0] > now:
                return hit[1]
        response = self._inner(url, method=method, headers=headers, timeout=timeout or 10, **kwargs)
        if getattr(response, "status", 0) == 200:
            with self._lock:
                self._cache[url] = (now + _max_age(getattr(response, "headers", {}) or {}), response)
        return response


def _max_age(headers: Mapping[str, str]) -> float:
    control = next((v for k, v in headers.items() if k.lower() == "cache-control"), "")
    for part in str(control).split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.isdigit():
            return float(min(3600, max(60, int(value))))
    return 300.0


class PushAuthenticator:
    """Checks the Authorization header of a push request. `mode` "off" accepts everything."""

    def __init__(
        self,
        mode: str,
        service_account: str = "",
        audiences: Iterable[str] = (),
        certs_url: str = GOOGLE_CERTS_URL,
        request: Callable | None = None,
    ):
        if mode not in ("oidc", "off"):
            raise ValueError(f"push auth mode must be 'oidc' or 'off', not {mode!r}")
        self.mode = mode
        self.service_account = service_account.strip().lower()
        self.audiences = [a for a in audiences if a]
        if mode == "oidc" and (not self.service_account or not self.audiences):
            raise ValueError("oidc push auth needs the push service account and at least one audience")
        self.certs_url = certs_url
        self._request = request or CachingRequest()

    def check(self, authorization: str | None) -> dict:
        """The verified claims, or PushAuthError. With mode "off", {}."""
        if self.mode == "off":
            return {}
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise PushAuthError("no Authorization header")
        if scheme.lower() != "bearer" or not token.strip():
            raise PushAuthError("the Authorization header is not 'Bearer <token>'")
        try:
            claims = id_token.verify_token(
                token.strip(),
                self._request,
                audience=self.audiences,
                certs_url=self.certs_url,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
            )
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            raise PushAuthError(f"token rejected: {_redacted(exc, token)}") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise PushAuthError(f"token issuer {claims.get('iss')!r} is not Google")
        email = str(claims.get("email") or "").lower()
        if email != self.service_account:
            raise PushAuthError(f"token is for {email or 'no email'!r}, not the push service account")
        if claims.get("email_verified") is not True:
            raise PushAuthError("token email is not verified")
        return claims


def _redacted(exc: Exception, token: str) -> str:
    """google-auth quotes a malformed token in its message ("Wrong number of segments in token:
    b'...'"): every piece of the token is cut out before the reason is logged."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    for piece in sorted({token.strip(), *token.strip().split(".")}, key=len, reverse=True):
        if len(piece) >= 4:
            text = text.replace(piece, "<redacted>")
    return text[:300]
