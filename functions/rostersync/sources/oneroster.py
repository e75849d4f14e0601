"""OneRoster REST adapter (1.1 `/ims/oneroster/v1p1`, 1.2 `/ims/oneroster/rostering/v1p2`).

The only module that talks HTTP to a OneRoster provider. Authenticates with OAuth 2 client
credentials (a bearer token from the provider's token endpoint, fetched again on a 401), pages with
`limit`/`offset` until `X-Total-Count` is reached or a page comes back short, and asks for deltas
with `filter=dateLastModified>'...'`. Retries go through `rostersync.retry`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

import requests

from rostersync import USER_AGENT
from rostersync.retry import Deadline, RetryPolicy, retry_after_seconds
from rostersync.sources.oneroster_diff import RosterRead

log = logging.getLogger(__name__)

PATHS = {"1.1": "/ims/oneroster/v1p1", "1.2": "/ims/oneroster/rostering/v1p2"}
# The collection each endpoint's JSON body wraps its records in.
COLLECTIONS = {"classes": "classes", "users": "users", "enrollments": "enrollments"}


class OneRosterError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # 429 and server faults pass; bad credentials (401/403) and bad requests do not.
        self.retryable = status is None or status == 429 or status >= 500


class OneRosterClient:
    def __init__(
        self,
        base_url: str,
        version: str,
        client_id: str,
        client_secret: str,
        token_url: str,
        page_size: int = 1000,
        retry: RetryPolicy | None = None,
        deadline: Deadline | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        auth: str = "oauth2",
    ):
        # "oauth2": client credentials for a bearer token; "oauth1": every request signed (OAuth
        # 1.0a HMAC-SHA256), the OneRoster 1.1 security model some providers still require.
        if auth not in ("oauth2", "oauth1"):
            raise ValueError(f"OneRoster auth must be oauth2 or oauth1, not {auth!r}")
        self._auth = auth
        if version not in PATHS:
            raise ValueError(f"OneRoster version must be one of {sorted(PATHS)}, not {version!r}")
        self._root = base_url.rstrip("/") + PATHS[version]
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_url = token_url
        self._token: str | None = None
        self._token_expires = 0.0  # time.monotonic() after which the token is fetched again
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._page_size = page_size
        self._retry = retry or RetryPolicy()
        self._deadline = deadline or Deadline(300)
        self._timeout = timeout
        self.requests_made = 0

    def _fetch_token(self) -> str:
        self.requests_made += 1
        try:
            resp = self._session.post(
                self._token_url,
                data={"grant_type": "client_credentials"},
                auth=(self._client_id, self._client_secret),
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise OneRosterError(f"OneRoster token request failed: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise OneRosterError(f"OneRoster token endpoint answered {resp.status_code}", resp.status_code)
        try:
            body = resp.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise OneRosterError("OneRoster token endpoint gave no access_token", 502)
        self._token_expires = time.monotonic() + _usable_seconds(body.get("expires_in"))
        return token

    def _authorization(self, url: str, params: Mapping[str, Any]) -> str:
        if self._auth == "oauth1":
            from rostersync.sources.oauth1 import authorization_header

            return authorization_header("GET", url, params, self._client_id, self._client_secret)
        if self._token is None or time.monotonic() >= self._token_expires:
            # Fetched again shortly before expires_in runs out, not after a 401 (a 401 still
            # clears it below, for a token the provider revoked early).
            self._token = self._fetch_token()
        return f"Bearer {self._token}"

    def _get_once(self, url: str, params: Mapping[str, Any]) -> tuple[dict, int | None]:
        authorization = self._authorization(url, params)
        self.requests_made += 1
        try:
            resp = self._session.get(
                url, params=params, headers={"Authorization": authorization}, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise OneRosterError(f"OneRoster request failed: {type(exc).__name__}") from exc
        if resp.status_code == 401:
            # The token expired: the next attempt fetches a new one (401 is retryable once here).
            self._token = None
            err = OneRosterError(f"OneRoster {urlparse(url).path} answered 401", 401)
            err.retryable = True
            raise err
        if resp.status_code != 200:
            retry_after = None
            if resp.status_code == 429:
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            raise OneRosterError(
                f"OneRoster {urlparse(url).path} answered {resp.status_code}: {resp.text[:200]}",
                resp.status_code,
                retry_after,
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise OneRosterError("OneRoster answered 200 with a body that is not JSON", 502) from exc
        if not isinstance(body, dict):
            raise OneRosterError("OneRoster answered with a JSON body that is not an object", 502)
        total = resp.headers.get("X-Total-Count")
        return body, int(total) if total and total.isdigit() else None

    def pages(self, collection: str, since: str | None = None) -> Iterator[list[dict]]:
        """Each page of one collection's records; with `since`, only those modified after it."""
        url = f"{self._root}/{collection}"
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": self._page_size, "offset": offset}
            if since:
                params["filter"] = f"dateLastModified>'{since}'"
            body, total = self._retry.call(lambda p=params: self._get_once(url, p), self._deadline, f"GET {collection}")
            records = body.get(COLLECTIONS[collection])
            if not isinstance(records, list):
                raise OneRosterError(f"OneRoster {collection} page has no {COLLECTIONS[collection]} list", 502)
            if records:
                yield [r for r in records if isinstance(r, dict)]
            offset += len(records)
            if (
                not records
                or (total is not None and offset >= total)
                or (total is None and len(records) < self._page_size)
            ):
                return

    def read(self, since: str | None = None) -> RosterRead:
        """Classes, users and enrollments: all of them (since None), or those modified after `since`."""
        out = RosterRead(full=since is None)
        for collection, target in (("classes", out.classes), ("users", out.users), ("enrollments", out.enrollments)):
            for page in self.pages(collection, since):
                for record in page:
                    sourced_id = record.get("sourcedId")
                    if isinstance(sourced_id, str) and sourced_id:
                        target[sourced_id] = record
        return out


def _usable_seconds(expires_in: object) -> float:
    """How long to use a token that lives `expires_in` seconds: a tenth less (at most a minute less),
    so a page started near the end does not carry a token that lapses in flight. A token without a
    readable expires_in is used for 5 minutes, then fetched again (cheap, and never stale for long)."""
    try:
        lifetime = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 300.0
    if lifetime <= 0:
        return 0.0
    return lifetime - min(60.0, lifetime / 10)
