"""OneRoster REST adapter (1.1 `/ims/oneroster/v1p1`, 1.2 `/ims/oneroster/rostering/v1p2`).

The only module that talks HTTP to a OneRoster provider. Authenticates with OAuth 2 client
credentials (a bearer token from the provider's token endpoint for a configured scope, fetched
again on a 401) or OAuth 1.0a signatures. Retries go through `rostersync.retry`.

Real providers differ from the specification in ways that must never turn into removals:

- Paging: the 1.1 spec only recommends `X-Total-Count`, providers cap `limit` (100 is common) and
  some ignore `offset` or return pages in an unstable order. So a page shorter than asked is not
  the end. We follow `Link: rel="next"` when the provider sends Link headers (only to the same
  scheme and host as the configured base), else page on by `offset` until an empty page. A read is
  *complete* when the distinct sourcedIds received equal `X-Total-Count`, or, without it, when it
  ended so and no page repeated a record. A page of records all seen before (an ignored `offset`)
  stops the read instead of looping until the timeout,
  and the invocation's deadline is checked before every page. The diff infers no removal from a
  read that is not complete (`RosterRead.complete`).
- Filters: full reads ask for `filter=status='active'`, deltas for `dateLastModified>'...'`. A
  provider that refuses a filter (400) is read without it: a refused delta becomes a full read,
  noted for the administrator; a delta that comes back with records older than its bound (the
  filter ignored) is noted too.
- 1.2 reads `/teachers` and `/students` instead of `/users` (no guardians, aides or administrators
  for nothing), and `/users` when the provider has no such routes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlparse, urlunparse

import requests

from rostersync import USER_AGENT
from rostersync.domain.sources.oneroster_diff import RosterRead
from rostersync.retry import Deadline, RetryPolicy, retry_after_seconds

log = logging.getLogger(__name__)

PATHS = {"1.1": "/ims/oneroster/v1p1", "1.2": "/ims/oneroster/rostering/v1p2"}
# The collection each endpoint's JSON body wraps its records in.
COLLECTIONS = {
    "classes": "classes",
    "users": "users",
    "enrollments": "enrollments",
    "teachers": "users",
    "students": "users",
}
# The scope a token is asked for when ONEROSTER_SCOPE is not set: every rostering read (Google
# Classroom's own OneRoster consumer asks for roster.readonly too). Some providers refuse a token
# request without a scope (Aeries, Visma).
DEFAULT_SCOPES = {
    "1.1": "https://purl.imsglobal.org/spec/or/v1p1/scope/roster.readonly",
    "1.2": "https://purl.imsglobal.org/spec/or/v1p2/scope/roster.readonly",
}
ACTIVE_FILTER = "status='active'"
# A provider that does not take a filter answers one of these; one without a route, the others.
FILTER_REFUSED = (400, 422, 501)
ROUTE_MISSING = (404, 405, 501)
# Up to this many users missing from a delta are fetched one by one (`/users/{id}`); more, and
# one paged read of the users is cheaper.
MAX_SINGLE_USER_READS = 100


class OneRosterError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # 429 and server faults pass; bad credentials (401/403) and bad requests do not.
        self.retryable = status is None or status == 429 or status >= 500


@dataclass
class Walk:
    """How one paged read of a collection went: what it received and whether that is all there is."""

    what: str
    seen: set[str] = field(default_factory=set)
    pages: int = 0
    total: int | None = None
    # Signs that records may have been skipped (repeats); an X-Total-Count matched by the distinct
    # records received outweighs them. `broken`: a reason nothing outweighs (a foreign next link).
    doubts: list[str] = field(default_factory=list)
    broken: str = ""

    @property
    def complete(self) -> bool:
        if self.broken:
            return False
        if self.total is not None:
            return len(self.seen) == self.total
        return not self.doubts

    @property
    def why_not(self) -> str:
        if self.complete:
            return ""
        reasons = [self.broken] if self.broken else []
        if self.total is not None and len(self.seen) != self.total:
            reasons.append(f"received {len(self.seen)} distinct records, X-Total-Count says {self.total}")
        reasons += self.doubts
        return f"{self.what}: " + "; ".join(reasons)


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


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
        scope: str | None = None,
        with_guardians: bool = False,
    ):
        # GUARDIANS=invite: parents and guardians are users too, which /teachers and /students leave
        # out, so every user is read from /users.
        self._with_guardians = with_guardians
        # "oauth2": client credentials for a bearer token; "oauth1": every request signed (OAuth
        # 1.0a HMAC-SHA256), the OneRoster 1.1 security model some providers still require.
        if auth not in ("oauth2", "oauth1"):
            raise ValueError(f"OneRoster auth must be oauth2 or oauth1, not {auth!r}")
        self._auth = auth
        if version not in PATHS:
            raise ValueError(f"OneRoster version must be one of {sorted(PATHS)}, not {version!r}")
        self._version = version
        self._root = base_url.rstrip("/") + PATHS[version]
        base = urlparse(self._root)
        self._origin = (base.scheme, base.netloc.lower())
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_url = token_url
        # None: the version's default; "" (ONEROSTER_SCOPE=none): ask for no scope at all.
        self._scope = DEFAULT_SCOPES[version] if scope is None else scope
        self._token: str | None = None
        self._token_expires = 0.0  # time.monotonic() after which the token is fetched again
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._page_size = page_size
        self._retry = retry or RetryPolicy()
        self._deadline = deadline or Deadline(300)
        self._timeout = timeout
        self.requests_made = 0

    # -- authentication --------------------------------------------------------------------------

    def _fetch_token(self) -> str:
        self.requests_made += 1
        data = {"grant_type": "client_credentials"}
        if self._scope:
            data["scope"] = self._scope
        try:
            resp = self._session.post(
                self._token_url, data=data, auth=(self._client_id, self._client_secret), timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise OneRosterError(f"OneRoster token request failed: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            detail = ""
            try:
                body = resp.json()
                if isinstance(body, dict) and body.get("error"):
                    detail = f" ({str(body['error'])[:60]})"
            except ValueError:
                pass
            hint = f" for scope {self._scope!r}" if self._scope else " (no scope asked: set ONEROSTER_SCOPE)"
            raise OneRosterError(
                f"OneRoster token endpoint answered {resp.status_code}{detail}{hint}", resp.status_code
            )
        try:
            body = resp.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise OneRosterError("OneRoster token endpoint gave no access_token", 502)
        # RFC 6749 5.1: a granted scope is sent when it differs from the one asked for. A token
        # without the rostering scope would fail on every read with 401/403: say so here instead.
        granted = body.get("scope")
        if self._scope and isinstance(granted, str) and granted.strip():
            missing = set(self._scope.split()) - set(granted.split())
            if missing:
                err = OneRosterError(
                    f"OneRoster granted the scope {granted!r} without {' '.join(sorted(missing))!r}: "
                    "ask the provider to allow it for this client, or set ONEROSTER_SCOPE",
                    403,
                )
                raise err
        self._token_expires = time.monotonic() + _usable_seconds(body.get("expires_in"))
        return token

    def _authorization(self, url: str, params: Mapping[str, Any]) -> str:
        if self._auth == "oauth1":
            from rostersync.adapters.oauth1 import authorization_header

            return authorization_header("GET", url, params, self._client_id, self._client_secret)
        if self._token is None or time.monotonic() >= self._token_expires:
            # Fetched again shortly before expires_in runs out, not after a 401 (a 401 still
            # clears it below, for a token the provider revoked early).
            self._token = self._fetch_token()
        return f"Bearer {self._token}"

    # -- one request -----------------------------------------------------------------------------

    def _get_once(self, url: str, params: Mapping[str, Any]) -> tuple[dict, int | None, dict[str, str]]:
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
        total = resp.headers.get("X-Total-Count", "").strip()
        return body, int(total) if total.isdigit() else None, resp.links

    def _get(self, url: str, params: Mapping[str, Any], what: str) -> tuple[dict, int | None, dict]:
        return self._retry.call(lambda: self._get_once(url, params), self._deadline, f"GET {what}")

    def _same_origin(self, url: str) -> bool:
        parsed = urlparse(url)
        return (parsed.scheme, parsed.netloc.lower()) == self._origin

    # -- paging ----------------------------------------------------------------------------------

    def walk(self, collection: str, flt: str | None, walk: Walk) -> Iterator[list[dict]]:
        """Each page of one collection, with `walk` saying afterwards whether that was everything."""
        key = COLLECTIONS.get(collection.rsplit("/", 1)[-1], collection)
        url: str = f"{self._root}/{collection}"
        params: dict[str, Any] = {"limit": self._page_size, "offset": 0}
        if flt:
            params["filter"] = flt
        offset = 0
        while True:
            if self._deadline.expired():
                err = OneRosterError(
                    f"the poll's time budget ran out reading {collection} after {walk.pages} pages "
                    f"({len(walk.seen)} records); nothing was saved, the next poll starts again",
                    None,
                )
                err.retryable = False
                raise err
            body, total, links = self._get(url, params, collection)
            walk.pages += 1
            records = body.get(key)
            if not isinstance(records, list):
                raise OneRosterError(f"OneRoster {collection} page has no {key} list", 502)
            page = [r for r in records if isinstance(r, dict)]
            ids = [r.get("sourcedId") for r in page if isinstance(r.get("sourcedId"), str)]
            if total is not None:
                walk.total = total
            if not page:
                break
            new = [i for i in ids if i not in walk.seen]
            if not new:
                # Every record already seen: the provider ignores offset or repeats itself.
                walk.doubts.append(f"page {walk.pages} repeated records already read (is offset ignored?)")
                break
            if len(new) < len(ids):
                walk.doubts.append(f"page {walk.pages} repeated {len(ids) - len(new)} records (unstable order)")
            walk.seen.update(new)
            yield page
            offset += len(records)
            nxt = links.get("next", {}).get("url") if links else None
            if links:
                # The provider pages with Link headers: its rel="next" is the only way on.
                if not nxt:
                    break
                if not self._same_origin(nxt):
                    walk.broken = f"next link to another scheme or host ({urlparse(nxt).netloc}) not followed"
                    log.error("OneRoster %s: next link %s not followed (not %s)", collection, nxt, self._origin)
                    break
                parsed = urlparse(nxt)
                url = urlunparse(parsed._replace(query="", fragment=""))
                params = dict(parse_qsl(parsed.query, keep_blank_values=True))
                continue
            if total is not None and offset >= total:
                break
            # No Link header and no total reached: a short page is not the end (providers cap
            # limit), only an empty one is.
            params = params | {"offset": offset}
        if not walk.complete:
            log.warning("OneRoster read is not complete: %s", walk.why_not)

    def pages(self, collection: str, since: str | None = None) -> Iterator[list[dict]]:
        """Each page of one collection's records; with `since`, only those modified after it."""
        yield from self.walk(collection, f"dateLastModified>'{since}'" if since else None, Walk(collection))

    def _read_into(
        self, collections: tuple[str, ...], flt: str | None, target: dict, read: RosterRead, fallback_flt: bool
    ) -> None:
        """Reads one kind of record (from one or more collections) into `target`, with `flt`, or
        without it when the provider refuses it and `fallback_flt` says that is fine."""
        for collection in collections:
            walk = Walk(collection)
            try:
                self._collect(collection, flt, walk, target)
            except OneRosterError as exc:
                if not (flt and fallback_flt and exc.status in FILTER_REFUSED):
                    raise
                read.notes.append(
                    (
                        "filter_refused",
                        f"the provider refused filter={flt} on {collection} ({exc.status}): read unfiltered",
                    )
                )
                log.warning(
                    "OneRoster refused filter %s on %s (%s): reading it unfiltered", flt, collection, exc.status
                )
                walk = Walk(collection)
                self._collect(collection, None, walk, target)
            read.pages += walk.pages
            if not walk.complete:
                read.complete = False
                read.incomplete_reasons.append(walk.why_not)

    def _collect(self, collection: str, flt: str | None, walk: Walk, target: dict) -> None:
        for page in self.walk(collection, flt, walk):
            for record in page:
                sourced_id = record.get("sourcedId")
                if isinstance(sourced_id, str) and sourced_id:
                    target[sourced_id] = record

    def read(self, since: str | None = None) -> RosterRead:
        """Classes, users and enrollments: all of them (since None), or those modified after `since`."""
        if since:
            try:
                return self._delta(since)
            except OneRosterError as exc:
                if exc.status not in FILTER_REFUSED:
                    raise
                note = f"the provider refused the delta filter dateLastModified>'{since}' ({exc.status}): read in full"
                log.warning("OneRoster: %s", note)
                read = self._full()
                read.notes.insert(0, ("delta_filter_refused", note))
                read.delta_refused = True
                return read
        return self._full()

    def _full(self) -> RosterRead:
        read = RosterRead(full=True)
        self._read_into(("classes",), ACTIVE_FILTER, read.classes, read, fallback_flt=True)
        self._read_users(ACTIVE_FILTER, read)
        self._read_into(("enrollments",), ACTIVE_FILTER, read.enrollments, read, fallback_flt=True)
        return read

    def _read_users(self, flt: str | None, read: RosterRead) -> None:
        if self._version == "1.2" and not self._with_guardians:
            try:
                self._read_into(("teachers", "students"), flt, read.users, read, fallback_flt=flt == ACTIVE_FILTER)
                return
            except OneRosterError as exc:
                if exc.status not in ROUTE_MISSING:
                    raise
                read.notes.append(
                    ("route_missing", f"the provider has no /teachers or /students ({exc.status}): read /users")
                )
                log.warning("OneRoster has no /teachers or /students (%s): reading /users", exc.status)
        self._read_into(("users",), flt, read.users, read, fallback_flt=flt == ACTIVE_FILTER)

    def _delta(self, since: str) -> RosterRead:
        read = RosterRead(full=False)
        flt = f"dateLastModified>'{since}'"
        self._read_into(("classes",), flt, read.classes, read, fallback_flt=False)
        self._read_users(flt, read)
        self._read_into(("enrollments",), flt, read.enrollments, read, fallback_flt=False)
        # A record modified before the bound means the provider ignored the filter and sent everything.
        bound = _parse_time(since)
        older = 0
        for kind in (read.classes, read.users, read.enrollments):
            for record in kind.values():
                modified = _parse_time(record.get("dateLastModified"))
                if bound and modified and modified <= bound:
                    older += 1
        if older:
            read.delta_ignored = True
            note = (
                f"the provider ignored the delta filter dateLastModified>'{since}': "
                f"{older} of {read.size()} records were older (every delta downloads everything)"
            )
            read.notes.append(("delta_filter_ignored", note))
            log.warning("OneRoster: %s", note)
        return read

    def users(self, ids: set[str]) -> dict[str, Mapping[str, Any]]:
        """The users with these sourcedIds (those a delta's enrollments name but it did not carry).
        A few are read one by one; many in one paged read of every user. Unknown ids are left out."""
        found: dict[str, Mapping[str, Any]] = {}
        if len(ids) <= MAX_SINGLE_USER_READS:
            for user_id in sorted(ids):
                try:
                    body, _, _ = self._get(f"{self._root}/users/{quote(user_id, safe='')}", {}, "users/{id}")
                except OneRosterError as exc:
                    if exc.status == 404:
                        continue
                    raise
                record = body.get("user")
                if isinstance(record, dict):
                    found[user_id] = record
            return found
        # /users, not /teachers and /students: an enrollment may name an aide or an administrator.
        every = RosterRead(full=True)
        self._read_into(("users",), None, every.users, every, fallback_flt=False)
        return {k: v for k, v in every.users.items() if k in ids}


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
