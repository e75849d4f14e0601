"""OAuth 1.0a request signing (RFC 5849), as OneRoster 1.1 providers that require it use it:
two-legged (consumer key and secret, no token), HMAC-SHA256, parameters in the Authorization header.

Pure functions; the OneRoster client calls `authorization_header` for every request it makes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import quote, urlsplit


def percent_encode(value: str) -> str:
    """RFC 5849 3.6: unreserved characters stay, everything else is %XX of its UTF-8 bytes."""
    return quote(str(value), safe="-._~")


def base_string_uri(url: str) -> str:
    """RFC 5849 3.4.1.2: scheme and host in lower case, default ports dropped, no query."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def signature_base_string(method: str, url: str, params: list[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: METHOD&uri&normalized parameters (each pair encoded, sorted, joined)."""
    encoded = sorted((percent_encode(k), percent_encode(v)) for k, v in params)
    normalized = "&".join(f"{k}={v}" for k, v in encoded)
    return "&".join((method.upper(), percent_encode(base_string_uri(url)), percent_encode(normalized)))


def signature(base_string: str, consumer_secret: str, token_secret: str = "", digest: str = "sha256") -> str:
    key = f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}"
    mac = hmac.new(key.encode(), base_string.encode(), getattr(hashlib, digest))
    return base64.b64encode(mac.digest()).decode()


def authorization_header(
    method: str,
    url: str,
    query: Mapping[str, object],
    consumer_key: str,
    consumer_secret: str,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> str:
    """The `Authorization: OAuth ...` value for one request (query: its query parameters)."""
    oauth = {
        "oauth_consumer_key": consumer_key,
        "oauth_nonce": nonce or secrets.token_hex(16),
        "oauth_signature_method": "HMAC-SHA256",
        "oauth_timestamp": str(timestamp if timestamp is not None else int(time.time())),
        "oauth_version": "1.0",
    }
    params = [(str(k), str(v)) for k, v in query.items()] + list(oauth.items())
    oauth["oauth_signature"] = signature(signature_base_string(method, url, params), consumer_secret)
    return "OAuth " + ", ".join(f'{k}="{percent_encode(v)}"' for k, v in oauth.items())
