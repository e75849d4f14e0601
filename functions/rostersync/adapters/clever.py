"""Clever Data API v3.0 adapter: authenticated, paged, rate-limit-aware reads.

The only module that talks HTTP to Clever. Retries go through `rostersync.retry`.

Paging cannot be led astray: every follow-up request is built from our own parameters plus
`starting_after=<the last id we received>` on the configured base URL, never from the `next` link
Clever sends (a link to another host, a plain-http link or a loop of fresh URIs is never fetched).
Lists are sorted by id, so a page that brings nothing newer than the last id means the server
ignores the cursor: that is an error, not the end. Paging stops on an empty page, a short page, or
a page without a `next` link (recorded real responses leave it off the last page), and before each
request once the invocation's deadline has passed (`TimeBudgetSpent`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

import requests

from rostersync import USER_AGENT
from rostersync.domain.changes import normalize_email
from rostersync.domain.ports import CursorExpiredError
from rostersync.retry import Deadline, RetryPolicy, TimeBudgetSpent, retry_after_seconds

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


class CleverTimeBudgetSpent(CleverError, TimeBudgetSpent):
    def __init__(self, message: str):
        super().__init__(message)
        self.retryable = False


# Events a page (at most CLEVER_PAGE_SIZE): see event_pages.
EVENTS_PAGE_SIZE = 100
# Events are paged by bytes too: a sections event carries its whole section and the students it had
# before (previous_attributes), about 190 KB for a 3,000-student section. A page costs the poller
# roughly ten times its JSON size at its peak (the body, its text, the parsed objects, and the page
# before it still held while the next is fetched): 100 such events held it at 277 MiB, above the
# functions' 256 MiB. The next page asks for as many events as fit in this many bytes at the size
# the last page's events had (at least 1, at most EVENTS_PAGE_SIZE): an ordinary district's pages
# of 100 small events are untouched. The first page of a poll asks for EVENTS_FIRST_PAGE events,
# since nothing is known yet of their size (a term start's first page would otherwise be the
# heaviest): one more request in a busy poll, none in an idle one.
EVENTS_PAGE_BYTES = 2_000_000
EVENTS_FIRST_PAGE = 10


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
        # Paging stops at the deadline only when the caller gave one (the poll's time budget); a
        # client without it (the reconcile pass, the CLI) pages to the end.
        self._paging_deadline = deadline
        self._timeout = timeout
        self.requests_made = 0
        self.last_body_bytes = 0  # the size of the last 200 answer's body (paging by bytes)

    def _url(self, path_or_uri: str) -> str:
        if path_or_uri.startswith("http"):
            return path_or_uri
        if not path_or_uri.startswith(f"/{API_VERSION}"):
            path_or_uri = f"/{API_VERSION}/{path_or_uri.lstrip('/')}"
        return self._base + path_or_uri

    def _get_once(self, url: str, params: Mapping[str, Any] | None) -> dict:
        self.requests_made += 1
        timeout = self._deadline.call_timeout(self._timeout)
        try:
            resp = self._session.get(url, params=params, timeout=timeout)
        except requests.Timeout as exc:
            if self._paging_deadline is not None and timeout < self._timeout:
                # Cut short by what was left of the poll's budget, not by Clever: the poll stops
                # here as "partial" (a slow bootstrap page near the end) and the next goes on.
                raise CleverTimeBudgetSpent(f"time budget spent waiting for {urlparse(url).path}") from exc
            raise CleverError(f"Clever request failed: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            raise CleverError(f"Clever request failed: {type(exc).__name__}") from exc
        if resp.status_code == 200:
            self.last_body_bytes = len(resp.content)
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

    def pages(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        page_bytes: int | None = None,
        first_limit: int | None = None,
    ) -> Iterator[list[dict]]:
        """Yields each page's objects (unwrapped from {"data": ..., "uri": ...}); see the module
        docstring for why the next request is ours and when paging stops. `page_bytes`: each next
        page asks for as many records as fit in that many bytes at the last page's size a record
        (never more than `params`' limit); the first page asks for `first_limit` when given."""
        params = dict(params or {})
        most = int(params.pop("limit", self._page_size))
        limit = min(most, first_limit) if first_limit else most
        after = params.pop("starting_after", None)
        warned = False
        while True:
            if self._paging_deadline is not None and self._paging_deadline.expired():
                raise CleverTimeBudgetSpent(f"time budget spent while paging {path} after {after}")
            body = self.get(path, params | {"limit": limit} | ({"starting_after": after} if after else {}))
            items = body.get("data")
            if not isinstance(items, list):
                raise CleverError(f"Clever page {path} has no data list", 502)
            objects = [item["data"] if isinstance(item, dict) and "data" in item else item for item in items]
            if not objects:
                return
            if after:
                # Anything at or before the cursor was seen already (or is not ours to page to).
                fresh = [o for o in objects if not isinstance(_id(o), str) or _id(o) > after]
                if not fresh or not any(isinstance(_id(o), str) for o in fresh):
                    # The server ignores the cursor (the same page again): reading on would loop.
                    raise CleverError(f"Clever paging of {path} loops back: no id after {after} on the next page", 502)
                objects = fresh
            yield objects
            next_uri = _link(body, "next")
            if not warned and next_uri and not self._same_origin(next_uri):
                log.warning("Clever sent a next link to another origin; not followed: %s", urlparse(next_uri).netloc)
                warned = True
            ids = [i for i in map(_id, objects) if isinstance(i, str)]
            if len(items) < limit or not next_uri or not ids:
                return
            after = max(ids)
            if page_bytes and items:
                per_record = max(1, self.last_body_bytes // len(items))
                limit = max(1, min(most, page_bytes // per_record))
            del body, items, objects  # not held while the next page is fetched

    def _same_origin(self, uri: str) -> bool:
        target, base = urlparse(uri), urlparse(self._base)
        return not target.netloc or (target.scheme, target.netloc) == (base.scheme, base.netloc)

    # -- the reads the poller needs ------------------------------------------------------------

    def newest_event_id(self) -> str | None:
        """The newest event Clever keeps, or None when it keeps none.

        `ending_before=last` is a v1 idiom that the v3.0/v3.1 API description does not list, so its
        answer is only a starting point: a 400 or an empty answer starts from the oldest retained
        event instead, and either way we page forward from there (our own paging, the feed's
        order) to the end. When `last` works that costs one more, empty, request; when it does not,
        one pass over the retained feed at bootstrap. If the time budget ends the pass early, the
        last id reached is returned: an older marker only makes the poller read events the
        bootstrap already covers, which the applier skips as stale or already so; a newer one than
        the truth could skip changes, and paging never yields one.
        """
        candidate = None
        try:
            body = self.get("events", {"ending_before": "last", "limit": 1})
            items = body.get("data") or []
            last = items[-1].get("data", items[-1]) if items and isinstance(items[-1], dict) else None
            candidate = last.get("id") if isinstance(last, dict) and isinstance(last.get("id"), str) else None
            if candidate is None:
                log.warning("Clever answered ending_before=last with no event: finding the newest by paging")
        except CleverError as exc:
            if exc.status != 400:
                raise
            log.warning("Clever refused ending_before=last (400): finding the newest event by paging")
        newest = candidate
        try:
            for page in self.pages("events", {"starting_after": candidate} if candidate else None):
                newest = max([newest or "", *(i for i in map(_id, page) if isinstance(i, str))]) or None
        except TimeBudgetSpent:
            log.warning("time budget spent finding the newest event; the bootstrap marks event %s", newest)
        return newest

    def event_exists(self, event_id: str) -> bool:
        return self._object(f"events/{event_id}") is not None

    def event_pages(self, after: str | None) -> Iterator[list[dict]]:
        # A sections event carries its whole section (and its previous_attributes): a page of 1,000
        # events of a 3,000-student section held the poller at 1 GiB. Pages of EVENTS_PAGE_SIZE keep
        # one page to about a tenth of that; an idle poll still makes one request.
        params: dict[str, Any] = {"record_type": ["sections", "users"], "limit": min(self._page_size, EVENTS_PAGE_SIZE)}
        if after:
            params["starting_after"] = after
        try:
            yield from self.pages("events", params, page_bytes=EVENTS_PAGE_BYTES, first_limit=EVENTS_FIRST_PAGE)
        except CleverError as exc:
            if after and exc.status == 404:
                raise CursorExpired(f"Clever no longer has event {after}: {exc}", 404) from exc
            raise

    def section_pages(self, after: str | None = None) -> Iterator[list[dict]]:
        return self.pages("sections", {"starting_after": after} if after else None)

    def contact_pages(self) -> Iterator[list[dict]]:
        """Users with the contact role (parents, guardians, emergency contacts: GUARDIANS=invite)."""
        return self.pages("users", {"role": "contact"})

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


def _id(obj: object) -> object:
    return obj.get("id") if isinstance(obj, dict) else None


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
