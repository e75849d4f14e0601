"""Who is looking at the status page: IAP's signed header, verified, and the page's response headers.

Identity-Aware Proxy signs every request it lets through with an ES256 JWT in
`x-goog-iap-jwt-assertion` (issuer https://cloud.google.com/iap, audience
/projects/<number>/global/backendServices/<id>). The unsigned `X-Goog-Authenticated-User-Email`
beside it is only trustworthy if nothing but IAP can reach the service, so it is never read: the
identity shown is the JWT's `email` claim. The keys are a JWK set (IAP_KEYS_URL, Google's by
default; a loopback URL in tests), turned into PEM keys for google-auth's `jwt.decode`, which
checks the signature, `exp`/`iat` and the audience.

`install(app, ...)` plugs it into a Flask app before every request, with the security headers
after it, so the page's views and templates know nothing of it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

import flask
import google.auth.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import jwt

from rostersync.adapters.push_auth import CLOCK_SKEW_SECONDS, CachingRequest

IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key-jwk"
ASSERTION_HEADER = "x-goog-iap-jwt-assertion"

# No scripts at all; the page's one inline <style>; forms post to the page only; never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class IapAuthError(Exception):
    """The request did not come through IAP; the message says why (never the token)."""


@dataclass(frozen=True)
class Viewer:
    email: str
    subject: str


def _b64int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def jwk_to_pem(key: dict) -> bytes:
    """An EC P-256 public key of a JWK set as PEM (what google-auth's ES256 verifier reads)."""
    if key.get("kty") != "EC" or key.get("crv") != "P-256":
        raise ValueError(f"key {key.get('kid')!r} is not an EC P-256 key")
    numbers = ec.EllipticCurvePublicNumbers(_b64int(key["x"]), _b64int(key["y"]), ec.SECP256R1())
    return numbers.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class IapVerifier:
    def __init__(self, audience: str, keys_url: str = IAP_KEYS_URL, request: Callable | None = None):
        if not audience:
            raise ValueError("IAP verification needs the backend service's audience (IAP_AUDIENCE)")
        self.audience = audience
        self.keys_url = keys_url
        self._request = request or CachingRequest()

    def _certs(self) -> dict[str, bytes]:
        """kid -> PEM, fetched through the caching transport (Cache-Control max-age)."""
        response = self._request(self.keys_url, method="GET")
        if getattr(response, "status", 0) != 200:
            raise IapAuthError(f"IAP keys unavailable ({getattr(response, 'status', '?')})")
        data = json.loads(response.data.decode() if isinstance(response.data, bytes) else response.data)
        return {k["kid"]: jwk_to_pem(k) for k in data.get("keys", []) if k.get("kid") and k.get("kty") == "EC"}

    def verify(self, assertion: str | None) -> Viewer:
        if not assertion:
            raise IapAuthError(f"no {ASSERTION_HEADER} header: the request did not come through IAP")
        try:
            header = jwt.decode_header(assertion)
        except (ValueError, TypeError):
            raise IapAuthError("the IAP assertion is not a JWT") from None
        if header.get("alg") != "ES256":
            raise IapAuthError(f"the IAP assertion is signed with {header.get('alg')!r}, not ES256")
        certs = self._certs()
        if header.get("kid") not in certs:
            raise IapAuthError("the IAP assertion's key is not one of IAP's")
        try:
            claims = jwt.decode(
                assertion,
                certs={header["kid"]: certs[header["kid"]]},
                audience=self.audience,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
            )
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise IapAuthError(f"the IAP assertion was rejected: {reason.split(':')[0]}") from None
        if claims.get("iss") != IAP_ISSUER:
            raise IapAuthError("the IAP assertion's issuer is not IAP")
        if not claims.get("email") or not claims.get("sub"):
            raise IapAuthError("the IAP assertion names nobody")
        return Viewer(str(claims["email"]).removeprefix("accounts.google.com:"), str(claims["sub"]))


def install(app: flask.Flask, verifier: Callable[[], IapVerifier | None], in_cloud: Callable[[], bool]) -> None:
    """Before every request: the viewer from IAP's JWT in flask.g.viewer, or 403. Without a
    verifier (IAP_AUDIENCE unset) the page answers 403 in the cloud and is open on a workstation,
    where it runs with its user's own credentials. After every request: the security headers."""
    log = app.logger

    @app.before_request
    def _require_iap():
        check = verifier()
        if check is None:
            if in_cloud():
                log.warning("status page request refused (403): IAP_AUDIENCE is not set")
                return _refused()
            flask.g.viewer = ""
            return None
        try:
            flask.g.viewer = check.verify(flask.request.headers.get(ASSERTION_HEADER)).email
        except IapAuthError as exc:
            log.warning("status page request refused (403): %s", exc)
            return _refused()
        return None

    @app.after_request
    def _security_headers(response: flask.Response) -> flask.Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response


def _refused():
    """403, saying only where to sign in (the reason is in the log, not told to a stranger)."""
    body = (
        "<!doctype html><title>403</title><h1>Forbidden</h1><p>Sign in through the district's "
        "rostersync address (Identity-Aware Proxy).</p>"
    )
    return body, 403, {"Content-Type": "text/html; charset=utf-8"}
