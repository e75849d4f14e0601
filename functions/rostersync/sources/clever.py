"""Clever Data API v3.0 adapter: authenticated, paged, rate-limit-aware reads.

The only module that talks HTTP to Clever. Paging follows the `rel: next` links Clever returns and
stops on an empty page (Clever gives a next link on the last page too). Retries go through
`rostersync.retry`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlparse

import requests

from rostersync import USER_AGENT
from rostersync.changes import normalize_email
from rostersync.ports import CursorExpiredError
from rostersync.retry import Deadline, RetryPolicy, retry_after_seconds

log = logging.getLogger(__name__)
API_VERSION = "v3.0"
# Above this many unknown users, one paged read of /users is cheaper than one request per user.
BULK_USER_THRESHOLD = 200


class CleverError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # 429 and server faults pass; a bad token (401), a bad request (400/413) do not.
        # Clever's documentation: 400 and 401 are not retried, nor 501 (not supported); 429 waits.
        self.retryable = status is None or status == 429 or (status >= 500 and status != 501)


class CursorExpired(CleverError, CursorExpiredError):
    """Clever no longer knows the event we would page after (events are kept 30 days)."""


class CleverClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        page_size: int = 1000,
        retry: RetryPolicy | None = None,
        deadline: Deadline | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
    ):
        self._base = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._session.headers["User-Agent"] = USER_AGENT
        self._page_size = page_size
        self._retry = retry or RetryPolicy()
        self._deadline = deadline or Deadline(300)
        self._timeout = timeout
        self.requests_made = 0

    def _url(self, path_or_uri: str) -> str:
        if path_or_uri.startswith("http"):
            return path_or_uri
        if not path_or_uri.startswith(f"/{API_VERSION}"):
            path_or_uri = f"/{API_VERSION}/{path_or_uri.lstrip('/')}"
        return self._base + path_or_uri

    def _get_once(self, url: str, params: Mapping[str, Any] | None) -> dict:
        self.requests_made += 1
        try:
            resp = self._session.get(url, params=params, timeout=self._timeout)
        except requests.RequestException as exc:
            raise CleverError(f"Clever request failed: {type(exc).__name__}") from exc
        if resp.status_code == 200:
            try:
                body = resp.json()
            except ValueError as exc:
                raise CleverError("Clever answered 200 with a body that is not JSON", 502) from exc
            if not isinstance(body, dict):
                raise CleverError("Clever answered with a JSON body that is not an object", 502)
            return body
        retry_after = None
        if resp.status_code == 429:
            retry_after = _retry_after(resp.headers)
        raise CleverError(
            f"Clever {urlparse(url).path} answered {resp.status_code}: {resp.text[:200]}",
            resp.status_code,
            retry_after,
        )

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict:
        url = self._url(path)
        return self._retry.call(lambda: self._get_once(url, params), self._deadline, f"GET {urlparse(url).path}")

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[list[dict]]:
        """Yields each page's objects (unwrapped from {"data": ..., "uri": ...}) until an empty page."""
        params = dict(params or {})
        params.setdefault("limit", self._page_size)
        uri: str = self._url(path) + "?" + urlencode(params, doseq=True)
        seen: set[str] = set()
        while True:
            if uri in seen:
                raise CleverError(f"Clever paging loops back to {uri}", 502)
            seen.add(uri)
            body = self.get(uri)
            items = body.get("data")
            if not isinstance(items, list):
                raise CleverError(f"Clever page {urlparse(uri).path} has no data list", 502)
            objects = [item["data"] if isinstance(item, dict) and "data" in item else item for item in items]
            if not objects:
                return
            yield objects
            next_uri = _link(body, "next")
            if not next_uri:
                return
            uri = self._url(next_uri)

    # -- the reads the poller needs ------------------------------------------------------------

    def newest_event_id(self) -> str | None:
        body = self.get("events", {"ending_before": "last", "limit": 1})
        items = body.get("data") or []
        if not items:
            return None
        last = items[-1].get("data", items[-1]) if isinstance(items[-1], dict) else None
        return last.get("id") if isinstance(last, dict) else None

    def event_pages(self, after: str | None) -> Iterator[list[dict]]:
        params: dict[str, Any] = {"record_type": ["sections", "users"]}
        if after:
            params["starting_after"] = after
        try:
            yield from self.pages("events", params)
        except CleverError as exc:
            if after and exc.status == 404:
                raise CursorExpired(f"Clever no longer has event {after}: {exc}", 404) from exc
            raise

    def section_pages(self) -> Iterator[list[dict]]:
        return self.pages("sections")

    def _object(self, path: str) -> dict | None:
        """One record, or None when Clever does not have it (404: deleted or not shared)."""
        try:
            body = self.get(path)
        except CleverError as exc:
            if exc.status == 404:
                return None
            raise
        data = body.get("data")
        return data if isinstance(data, dict) else None

    def section(self, section_id: str) -> dict | None:
        return self._object(f"sections/{section_id}")

    def user(self, user_id: str) -> dict | None:
        return self._object(f"users/{user_id}")

    def term(self, term_id: str) -> dict | None:
        return self._object(f"terms/{term_id}")

    def user_pages(self) -> Iterator[list[dict]]:
        return self.pages("users")


def _link(body: Mapping[str, Any], rel: str) -> str | None:
    for link in body.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == rel and isinstance(link.get("uri"), str):
            return link["uri"]
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    after = retry_after_seconds(headers.get("Retry-After"))
    if after is not None:
        return after
    reset = headers.get("X-RateLimit-Reset", "").strip()
    if reset.isdigit():
        return max(0.0, float(reset) - time.time())
    return None


class CleverUserDirectory:
    """Clever user id → Google email, cached for the life of one poll."""

    def __init__(self, client: CleverClient, bulk_threshold: int = BULK_USER_THRESHOLD):
        self._client = client
        self._emails: dict[str, str | None] = {}
        self._bulk_loaded = False
        self._bulk_threshold = bulk_threshold

    def preload_all(self) -> None:
        for page in self._client.user_pages():
            for user in page:
                if isinstance(user, dict) and isinstance(user.get("id"), str):
                    self._emails[user["id"]] = _email_of(user)
        self._bulk_loaded = True

    def emails(self, clever_ids: Iterable[str]) -> dict[str, str | None]:
        wanted = set(clever_ids)
        missing = wanted - self._emails.keys()
        if missing and not self._bulk_loaded and len(missing) > self._bulk_threshold:
            self.preload_all()
            missing = wanted - self._emails.keys()
        for cid in sorted(missing):
            user = None if self._bulk_loaded else self._client.user(cid)
            self._emails[cid] = _email_of(user) if user else None
        return {cid: self._emails[cid] for cid in wanted}


def _email_of(user: Mapping[str, Any]) -> str | None:
    email = user.get("email")
    return normalize_email(email) if isinstance(email, str) else None
