"""The status page: a small read-only Flask app an administrator reads at a glance.

`/` leads with the sync's health (healthy / needs attention / failing, each finding with the
`rostersync` command that deals with it), then pictures (changes applied and problems opened per
day, the last polls, sections by state), the open problems grouped by kind, and the sections by
school and name, filtered by school, state and problem kind, a page at a time. `/problems` lists
every person and section of the groups; `/section/<id>` one section: its course, its members by
role and status, its problems and its history from the audit trail.

Server-rendered HTML from Jinja templates (templates/status/, one base layout) and one stylesheet
(static/status.css): no script and no inline style, so that a strict Content-Security-Policy
holds, and everything reads without JavaScript (the charts are plain SVG).

People are named by masked email (j***@district.example.org) and Clever id: the page is for the
district's administrators (behind IAP), but a full student email has no need to be on a screen.

Served by the `status_page` entry point in functions/main.py, behind IAP only: iap_auth.py verifies
IAP's signed header before every request and the page shows the identity from it (never the unsigned
header); it sends a strict Content-Security-Policy. It reads Firestore through admin_store.py and
writes nothing. The free-text search is posted, so the term is in no request URL (request logs).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
import zoneinfo
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import flask

from rostersync.adapters.admin_store import UnreachableError
from rostersync.admin import views as admin
from rostersync.config import ConfigError
from rostersync.domain.audit import APPLIED, PROBLEM

PAGE_SIZE = 50  # sections a page of the listing shows
GROUP_SAMPLE = 500  # open problems of a kind read to name its people (its count is exact regardless)
PEOPLE_SHOWN = 20  # people a problem group lists on the front page (/problems lists them all)
MAX_GROUP_ROWS = 2000  # open problems /problems reads for one kind (and the kind filter for its sections)
CHART_DAYS = 14  # days the activity chart covers
SCHOOLS_CACHE_SECONDS = 300  # the school filter's choices are read at most this often per instance


# -- times -----------------------------------------------------------------------------------------


def relative(when: dt.datetime | None, now: dt.datetime) -> str:
    """'just now', '5 minutes ago', 'in 3 days' ..."""
    if when is None:
        return "never"
    seconds = (now - when).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"


# -- pictures: plain SVG, drawn from numbers here and rendered by the templates ---------------------


def day_bars(days: list[dict], width: int = 480, height: int = 190) -> dict:
    """Two bars a day (changes applied, problems opened) on one scale, with the day labels."""
    top, bottom, left = 12, 28, 40
    peak = max([1, *(d["applied"] for d in days), *(d["problems"] for d in days)])
    slot = (width - left) / max(len(days), 1)
    bar = max(slot * 0.36, 2)
    plot = height - top - bottom
    bars, labels = [], []
    for i, d in enumerate(days):
        x = left + i * slot + slot * 0.1
        for j, key in enumerate(("applied", "problems")):
            h = plot * d[key] / peak
            bars.append(
                {
                    "x": round(x + j * bar, 1),
                    "y": round(top + plot - h, 1),
                    "w": round(bar, 1),
                    "h": round(h, 1),
                    "cls": key,
                    "title": f"{d['label']}: {d[key]} {'changes applied' if key == 'applied' else 'problems opened'}",
                }
            )
        if (len(days) - 1 - i) % 2 == 0:  # every other day, ending today: room for the labels
            labels.append({"x": round(x + bar, 1), "text": d["short"]})
    ticks = [{"y": round(top + plot - plot * f, 1), "text": f"{round(peak * f):,}"} for f in (0, 0.5, 1)]
    return {"width": width, "height": height, "bars": bars, "labels": labels, "ticks": ticks, "base": top + plot}


def poll_bars(polls: list[dict], now: dt.datetime, width: int = 480, height: int = 190) -> dict:
    """One bar a poll, as tall as it took, coloured by its outcome (oldest on the left)."""
    top, bottom, left = 12, 24, 40
    peak = max([1.0, *(float(p.get("seconds") or 0) for p in polls)])
    slot = (width - left) / max(len(polls), 12)
    plot = height - top - bottom
    bars = []
    for i, p in enumerate(polls):
        seconds = float(p.get("seconds") or 0)
        h = max(plot * seconds / peak, 2)
        at = admin._as_datetime(p.get("at"))
        bars.append(
            {
                "x": round(left + i * slot + slot * 0.15, 1),
                "y": round(top + plot - h, 1),
                "w": round(max(slot * 0.7, 2), 1),
                "h": round(h, 1),
                "cls": f"poll-{p.get('outcome') or 'unknown'}",
                "title": f"{relative(at, now)}: {p.get('outcome') or '?'}, {seconds:.1f} s, "
                f"{p.get('events_read') or 0} events, {p.get('changes') or 0} changes",
            }
        )
    ticks = [{"y": round(top + plot - plot * f, 1), "text": f"{peak * f:.0f} s"} for f in (0, 0.5, 1)]
    outcomes: dict[str, int] = {}
    for p in polls:
        outcomes[str(p.get("outcome") or "unknown")] = outcomes.get(str(p.get("outcome") or "unknown"), 0) + 1
    return {"width": width, "height": height, "bars": bars, "ticks": ticks, "base": top + plot, "outcomes": outcomes}


def state_bar(by_state: dict[str, int], width: int = 700, height: int = 28) -> dict:
    """One horizontal bar split by section state."""
    total = sum(by_state.values()) or 1
    parts, x = [], 0.0
    for state, n in by_state.items():
        if not n:
            continue
        w = width * n / total
        parts.append({"x": round(x, 1), "w": round(w, 1), "cls": f"state-{state}", "state": state, "n": n})
        x += w
    return {"width": width, "height": height, "parts": parts}


# -- the app ---------------------------------------------------------------------------------------


class _SchoolCache:
    def __init__(self):
        self._lock = threading.Lock()
        self._value: list[str] = []
        self._at = -1e9

    def get(self, read: Callable[[], list[str]]) -> list[str]:
        with self._lock:
            if time.monotonic() - self._at > SCHOOLS_CACHE_SECONDS:
                self._value, self._at = read(), time.monotonic()
            return self._value


class _DayCounts:
    """Audit counts of finished days never change (but for expiry, months later): kept per instance."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done: dict[tuple, int] = {}

    def get(self, store, outcome: str, start: dt.datetime, end: dt.datetime, today: dt.datetime) -> int:
        key = (outcome, start)
        with self._lock:
            if key in self._done:
                return self._done[key]
        n = store.audit_count(outcome, start, end)
        if end <= today:
            with self._lock:
                self._done[key] = n
        return n


def _timezone() -> zoneinfo.ZoneInfo:
    try:
        from rostersync import wiring

        return zoneinfo.ZoneInfo(wiring.settings().status_page_timezone)
    except (ConfigError, zoneinfo.ZoneInfoNotFoundError):
        return zoneinfo.ZoneInfo("UTC")


def _iap_verifier():
    """The IAP check from the settings (IAP_AUDIENCE, IAP_KEYS_URL), one per instance; None when
    IAP_AUDIENCE is unset."""
    from rostersync import wiring
    from rostersync.admin.iap_auth import IapVerifier

    s = wiring.settings()
    return IapVerifier(s.iap_audience, s.iap_keys_url) if s.iap_audience else None


def create_app(store_factory: Callable[[], object] | None = None, tz: zoneinfo.ZoneInfo | None = None) -> flask.Flask:
    # /assets, not Flask's /static: functions-framework's own app answers /static/... itself.
    app = flask.Flask(
        "rostersync.admin.status_page", template_folder="templates", static_folder="static", static_url_path="/assets"
    )
    from rostersync.admin import iap_auth
    from rostersync.config import in_cloud_run

    iap_auth.install(app, functools.cache(_iap_verifier), in_cloud_run)
    schools_cache, day_counts = _SchoolCache(), _DayCounts()
    zone = tz or _timezone()

    def store():
        if store_factory is not None:
            return store_factory()
        from rostersync import wiring

        return wiring.admin_store()

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    @app.template_filter("ago")
    def ago(value) -> str:
        return relative(admin._as_datetime(value), now())

    @app.template_filter("local")
    def local(value) -> str:
        when = admin._as_datetime(value)
        if when is None:
            return ""
        return when.astimezone(zone).strftime("%a %d %b %Y, %H:%M:%S %Z")

    @app.template_filter("iso")
    def iso(value) -> str:
        when = admin._as_datetime(value)
        return when.isoformat() if when else ""

    @app.template_filter("masked")
    def masked(value) -> str:
        return admin.mask_emails_in(value)

    @app.context_processor
    def viewer():
        # From IAP's verified JWT (iap_auth.py), never an unsigned header.
        return {"viewer": flask.g.get("viewer", ""), "timezone": str(zone)}

    def page(template: str, status: int = 200, **context):
        html = flask.render_template(template, **context)
        return html, status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}

    def overview(s) -> dict:
        """The banner's and the pictures' numbers: count() aggregations and two small documents."""
        clever, notifications = s.sync_state("clever"), s.sync_state("classroom_notifications")
        by_state = s.section_state_counts(admin.STATES)
        st = {
            "paused": bool(clever.get("paused")),
            "paused_at": clever.get("paused_at"),
            "paused_reason": clever.get("paused_reason") or clever.get("reason"),
            "last_poll": clever.get("last_poll") or None,
            "recent_polls": clever.get("recent_polls") or [],
            "cursor": {"last_event_id": clever.get("last_event_id"), "bootstrapped_at": clever.get("bootstrapped_at")},
            "sections": {"total": sum(by_state.values()), "by_state": by_state},
            "push_notifications": {
                "registration_id": notifications.get("registration_id"),
                "expiry_time": notifications.get("expiry_time"),
                "renewed_at": notifications.get("renewed_at"),
                "last_error": notifications.get("last_error"),
            },
            **s.counts(),
        }
        return st

    def activity(s) -> list[dict]:
        """Changes applied and problems opened a day, the last CHART_DAYS days in the district's time zone."""
        today = dt.datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        starts = [today - dt.timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
        jobs = [(o, d) for d in starts for o in (APPLIED, PROBLEM)]
        # Two at a time: the first view of an instance counts every day (the emulator scans for each
        # count and times out when flooded); later views count only today's.
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = list(pool.map(lambda j: day_counts.get(s, j[0], j[1], j[1] + dt.timedelta(days=1), today), jobs))
        by = dict(zip(jobs, counts, strict=True))
        return [
            {
                "label": d.strftime("%a %d %b"),
                "short": d.strftime("%d/%m") if d != today else "today",
                "applied": by[(APPLIED, d)],
                "problems": by[(PROBLEM, d)],
            }
            for d in starts
        ]

    def problem_groups(s, limit: int, kinds: list[str] | None = None) -> list[dict]:
        """The open problems by kind: exact counts by aggregation, people and sections from the first
        `limit` problems of each kind (a group says when it shows only those)."""
        counts = s.open_problem_kind_counts(kinds or list(admin.PROBLEM_LABELS))
        if not kinds:
            # Kinds this page has no label for yet: found among a sample, then counted exactly.
            sample = s.open_problem_rows(limit=limit)
            unknown = sorted({str(p.get("kind") or "other") for p in sample} - set(counts))
            counts |= s.open_problem_kind_counts(unknown) if unknown else {}
        kinds_present = [k for k, n in counts.items() if n]
        with ThreadPoolExecutor(max_workers=4) as pool:
            samples = list(pool.map(lambda k: s.open_problem_rows(k, limit=limit), kinds_present))
        groups = []
        for kind, rows in zip(kinds_present, samples, strict=True):
            for g in admin.group_problems(rows):
                g["count"] = counts[kind]
                g["sampled"] = len(rows) if len(rows) < counts[kind] else 0
                groups.append(g)
        groups.sort(key=lambda g: (-g["count"], g["kind"]))
        return groups

    def listing(s, q: str, state: str, school: str, kind: str, after: list | None, start: int):
        """One page of sections (and how many match, and the cursor of the next page)."""
        if q or kind:
            # A search or a problem kind: the matching sections are found first (few), then paged here.
            if kind:
                rows = s.open_problem_rows(kind, limit=MAX_GROUP_ROWS)
                ids = sorted({str(p["section_id"]) for p in rows if p.get("section_id")})
                rows = s.section_rows(ids)
            else:
                rows = s.all_section_rows()
            rows = [
                r
                for r in rows
                if (not state or r.get("state") == state)
                and (not school or str(r.get("school") or "") == school)
                and (not q or admin.matches_query({**r, "name": admin.display_name(r)}, q))
            ]
            rows.sort(key=lambda r: (str(r.get("school") or ""), str(r.get("section_name") or ""), r["section_id"]))
            return rows[start : start + PAGE_SIZE], len(rows), start + PAGE_SIZE < len(rows)
        rows, total = s.section_page(state or None, school or None, after, PAGE_SIZE + 1)
        return rows[:PAGE_SIZE], total, len(rows) > PAGE_SIZE

    def chart_or_none(job) -> dict | None:
        # A picture that cannot be drawn (its counts timed out) must not hide the health banner.
        try:
            return day_bars(job.result())
        except UnreachableError:
            return None

    @app.route("/", methods=["GET", "POST"])
    def index():
        args = flask.request.values
        q = args.get("q", "").strip()[:200]
        state = args.get("state", "").strip()
        state = state if state in admin.STATES else ""
        school = args.get("school", "").strip()[:200]
        kind = args.get("kind", "").strip()[:100]
        start = max(int(args.get("start", "0")) if args.get("start", "0").isdigit() else 0, 0)
        after = [args.get("after_school", ""), args.get("after_name", ""), args.get("after_id", "")]
        after = after if after[2] else None
        s = store()
        # Independent reads, at once: each is one or a few round trips to Firestore.
        with ThreadPoolExecutor(max_workers=4) as pool:
            st_job, groups_job = pool.submit(overview, s), pool.submit(problem_groups, s, GROUP_SAMPLE)
            activity_job = pool.submit(activity, s)
            schools_job = pool.submit(schools_cache.get, s.schools)
            rows, total, more = listing(s, q, state, school, kind, after, start)
            ids = [r["section_id"] for r in rows]
            members_job = pool.submit(s.section_members, ids)
            problem_count = s.open_problem_counts_for(ids)
            st, groups, members = st_job.result(), groups_job.result(), members_job.result()
        missing = st["open_problems"] - sum(g["count"] for g in groups)
        if missing > 0:  # kinds with no label here, none of them among the sample: counted, not named
            groups.append(
                {"kind": "", "label": "Other problems", "count": missing, "hint": "", "reasons": [],
                 "sections": [], "people": [], "example": "rostersync problems lists them", "sampled": 0}
            )  # fmt: skip
        health = admin.health(st, groups, now())
        for r in rows:
            r["name"] = admin.display_name(r)
            r["counts"] = admin.member_counts(members.get(r["section_id"]))
            r["owner"] = admin.mask_email(r.get("owner_email"))
            r["classroom_link"] = admin.classroom_link(r.get("course_id"))
            r["problems"] = problem_count.get(r["section_id"], 0)
        next_args = None
        if more:
            last = rows[-1]
            keep = {k: v for k, v in {"q": q, "state": state, "school": school, "kind": kind}.items() if v}
            if q or kind:
                next_args = keep | {"start": start + PAGE_SIZE}
            else:
                next_args = keep | {
                    "start": start + PAGE_SIZE,
                    "after_school": last.get("school") or "",
                    "after_name": last.get("section_name") or "",
                    "after_id": last["section_id"],
                }
        filters = {k: v for k, v in {"q": q, "state": state, "school": school, "kind": kind}.items() if v}
        return page(
            "status/index.html",
            st=st,
            health=health,
            groups=groups,
            people_shown=PEOPLE_SHOWN,
            activity=chart_or_none(activity_job),
            polls=poll_bars(st["recent_polls"][-48:], now()),
            states=state_bar(st["sections"]["by_state"]),
            rows=rows,
            total=total,
            start=start,
            next_args=next_args,
            filters=filters,
            q=q,
            state=state,
            school=school,
            kind=kind,
            all_states=admin.STATES,
            schools=schools_job.result(),
            kinds=[(g["kind"], g["label"]) for g in groups],
        )

    @app.get("/problems")
    def problems():
        kind = flask.request.args.get("kind", "").strip()[:100]
        groups = problem_groups(store(), MAX_GROUP_ROWS, [kind] if kind else None)
        return page("status/problems.html", groups=groups, kind=kind, limit=MAX_GROUP_ROWS)

    @app.get("/section/<section_id>")
    def section(section_id: str):
        s = store()
        link = s.section(section_id)
        if link is None:
            return page("status/not_found.html", 404, section_id=section_id)
        overrides, problem_docs = s.overrides(section_id), s.problems(section_id)
        trail = s.audit(section_id)
        detail = {
            "section_id": section_id,
            "name": admin.display_name(link),
            "section_name": link.get("section_name"),
            "state": link.get("state") or "active",
            "school": link.get("school"),
            "course_id": link.get("course_id"),
            "alias": link.get("alias"),
            "classroom_link": admin.classroom_link(link.get("course_id")),
            "owner": admin.mask_email(link.get("owner_email")),
            "owner_clever_id": link.get("owner_clever_id"),
            "failed_owner": admin.mask_email(link.get("failed_owner_email")),
            "name_set": link.get("name_set"),
            "name_override": link.get("name_override"),
            "shared_with": link.get("shared_with") or [],
            "teacher_added": [admin.mask_email(e) for e in link.get("teacher_added") or []],
            "updated_at": link.get("updated_at"),
            "counts": admin.member_counts(link.get("members")),
        }
        return page(
            "status/section.html",
            d=detail,
            why=admin.mask_emails_in(admin.summary(link)),
            member_groups=admin.member_groups(link),
            groups=admin.group_problems(problem_docs),
            overrides=[{**o, "detail": admin.mask_emails_in(o.get("detail"))} for o in overrides],
            timeline=admin.timeline(trail),
            trail_limited=len(trail) >= 200,
        )

    @app.get("/status.json")
    def status_json():
        return flask.jsonify(admin.status(store()))

    @app.errorhandler(UnreachableError)
    def unreachable(exc):
        return page("status/error.html", 503, heading="Firestore unavailable", error=str(exc))

    @app.errorhandler(ConfigError)
    def misconfigured(exc):
        return page("status/error.html", 500, heading="Configuration error", error=str(exc))

    return app


@functools.cache
def app() -> flask.Flask:
    """The app the status_page entry point serves (one per function instance)."""
    return create_app()


def serve(request: flask.Request):
    """Answers one functions-framework request with the app (its routes see the whole path)."""
    flask_app = app()
    with flask_app.request_context(request.environ):
        return flask_app.full_dispatch_request()
