"""The status page: a small read-only Flask app showing what `rostersync status`, `sections`,
`problems` and `overrides` show, with a search box (a server-side filter: ?q=...&state=...), and
one page per section (`/section/<id>`) with its members and the `why` paragraph.

Served by the `status_page` entry point in functions/main.py. In the cloud it is reached through
IAP only: iap_auth.py verifies IAP's signed header before every request and shows the identity in
it, and adds the security headers (CSP, X-Frame-Options, nosniff). The search form posts, so the
search term (often a student's email) is not in any request log. It reads Firestore through
admin_store.py and writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flask
from markupsafe import Markup

from rostersync import admin
from rostersync.admin_store import UnreachableError
from rostersync.config import ConfigError

MAX_ROWS = 500  # rows a table shows; the search box narrows the rest

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #202124; }
table { border-collapse: collapse; margin-bottom: 1.5rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #dadce0; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f1f3f4; }
.state-active { color: #188038; } .state-owner_problem, .problem { color: #c5221f; }
.paused { background: #fce8e6; padding: 0.5rem; } .muted { color: #5f6368; }
form { margin: 1rem 0; } dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
"""

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}</style></head>
<body><h1><a href="{{ url_for('index') }}">rostersync</a>{% if heading %}: {{ heading }}{% endif %}</h1>
{% if viewer %}<p class="muted">signed in as {{ viewer }}</p>{% endif %}
{{ body }}
</body></html>"""

_INDEX = """
{% if st.paused %}<p class="paused" id="paused">The sync is <b>paused</b> since {{ st.paused_at }}:
poll_clever reads nothing from Clever until <code>rostersync resume</code>.</p>{% endif %}
<h2>Status</h2>
<dl id="status">
<dt>cursor</dt><dd>{{ st.cursor.last_event_id or "(none yet: the next poll bootstraps)" }}</dd>
<dt>bootstrapped at</dt><dd>{{ st.cursor.bootstrapped_at or "-" }}</dd>
<dt>last poll</dt><dd>{% if st.last_poll %}{{ st.last_poll.at }}: {{ st.last_poll.outcome }}
 ({{ st.last_poll.events_read or 0 }} events, {{ st.last_poll.changes or 0 }} changes,
 {{ st.last_poll.published or 0 }} published, {{ st.last_poll.held or 0 }} held){% else %}never{% endif %}</dd>
<dt>sections</dt><dd>{{ st.sections.total }}{% for s, n in st.sections.by_state.items() if n %}
 · {{ s }} {{ n }}{% endfor %}</dd>
<dt>open problems</dt><dd>{{ st.open_problems }}</dd>
<dt>overrides</dt><dd>{{ st.overrides }}</dd>
<dt>dead letters</dt><dd>{{ st.dead_letters_unreplayed }} not replayed</dd>
<dt>held batches</dt><dd>{{ st.held_batches }}</dd>
</dl>
<form method="post" action="{{ url_for('index') }}" role="search">
<input type="search" name="q" value="{{ q }}" placeholder="section, course, email, kind..." aria-label="search">
<select name="state" aria-label="state"><option value="">any state</option>
{% for s in states %}<option value="{{ s }}"{% if s == state %} selected{% endif %}>{{ s }}</option>{% endfor %}
</select> <button type="submit">Search</button>
{% if q or state %}<a href="{{ url_for('index') }}">clear</a>{% endif %}
</form>
<h2>Sections ({{ sections|length }}{% if more.sections %} of {{ more.sections }}{% endif %})</h2>
<table id="sections"><tr><th>section</th><th>name</th><th>state</th><th>course</th><th>owner</th></tr>
{% for r in sections %}<tr><td><a href="{{ url_for('section', section_id=r.section_id) }}">{{ r.section_id }}</a></td>
<td>{{ r.name_override or r.name_set or r.section_name or "" }}</td>
<td class="state-{{ r.state }}">{{ r.state }}</td><td>{{ r.course_id or "" }}</td>
<td>{{ r.owner_email or "" }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">no sections</td></tr>{% endfor %}</table>
<h2>Open problems ({{ problems|length }}{% if more.problems %} of {{ more.problems }}{% endif %})</h2>
<table id="problems"><tr><th>kind</th><th>section</th><th>user</th><th>reason</th><th>message</th><th>hint</th></tr>
{% for p in problems %}<tr class="problem"><td>{{ p.kind }}</td>
<td><a href="{{ url_for('section', section_id=p.section_id) }}">{{ p.section_id }}</a></td>
<td>{{ p.email or p.clever_id or "" }}</td><td>{{ p.reason or "" }}</td><td>{{ p.message or "" }}</td>
<td>{{ p.hint or "" }}</td></tr>
{% else %}<tr><td colspan="6" class="muted">no open problems</td></tr>{% endfor %}</table>
<h2>Overrides ({{ overrides|length }}{% if more.overrides %} of {{ more.overrides }}{% endif %})</h2>
<table id="overrides"><tr><th>kind</th><th>section</th><th>course</th><th>email</th><th>detail</th></tr>
{% for o in overrides %}<tr><td>{{ o.kind }}</td>
<td><a href="{{ url_for('section', section_id=o.section_id) }}">{{ o.section_id }}</a></td>
<td>{{ o.course_id or "" }}</td><td>{{ o.email or "" }}</td><td>{{ o.detail or "" }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">no overrides</td></tr>{% endfor %}</table>
"""

_SECTION = """
<p id="why">{{ why }}</p>
<dl id="section">
{% for key in ["section_id", "section_name", "state", "course_id", "alias", "owner_email", "failed_owner_email",
               "name_set", "name_override", "school", "updated_at"] if d[key] %}
<dt>{{ key }}</dt><dd>{{ d[key] }}</dd>{% endfor %}
{% if d.classroom_link %}<dt>Classroom</dt><dd><a href="{{ d.classroom_link }}">{{ d.classroom_link }}</a></dd>
{% endif %}</dl>
<h2>Members we manage</h2>
<table id="members"><tr><th>status</th><th>role</th><th>email</th><th>Clever id</th><th>event</th><th>reason</th></tr>
{% for status, people in d.members.items() %}{% for m in people %}<tr><td>{{ status }}</td><td>{{ m.role }}</td>
<td>{{ m.email or "" }}</td><td>{{ m.clever_id }}</td><td>{{ m.event_id or "" }}</td><td>{{ m.reason }}</td></tr>
{% endfor %}{% else %}<tr><td colspan="6" class="muted">none</td></tr>{% endfor %}</table>
<h2>Overrides</h2>
<ul id="overrides">{% for o in d.overrides %}<li>{{ o.kind }}: {{ o.detail }}</li>
{% else %}<li class="muted">none</li>{% endfor %}</ul>
<h2>Open problems</h2>
<ul id="problems">{% for p in d.problems %}<li class="problem">{{ p.kind }} {{ p.email or p.clever_id or "" }}:
{{ p.message }}{% if p.hint %} <i>{{ p.hint }}</i>{% endif %}</li>
{% else %}<li class="muted">none</li>{% endfor %}</ul>
"""


def _page(title: str, heading: str, body_template: str, status: int = 200, **context):
    body = flask.render_template_string(body_template, **context)
    viewer = flask.g.get("viewer", "")  # from IAP's verified JWT (iap_auth.py), never an unsigned header
    html = flask.render_template_string(
        _BASE, title=title, heading=heading, body=Markup(body), style=_STYLE, viewer=viewer
    )
    return html, status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}


def _filtered(rows: list[dict], q: str) -> tuple[list[dict], int]:
    """The rows the query matches, at most MAX_ROWS, and how many matched when that cut them."""
    hits = [r for r in rows if admin.matches_query(r, q)]
    return hits[:MAX_ROWS], (len(hits) if len(hits) > MAX_ROWS else 0)


def _iap_verifier():
    """The IAP check from the settings (IAP_AUDIENCE, IAP_KEYS_URL), one per instance; None when
    IAP_AUDIENCE is unset."""
    from rostersync import wiring
    from rostersync.iap_auth import IapVerifier

    s = wiring.settings()
    return IapVerifier(s.iap_audience, s.iap_keys_url) if s.iap_audience else None


def create_app(store_factory: Callable[[], object] | None = None) -> flask.Flask:
    from rostersync import iap_auth
    from rostersync.config import in_cloud_run

    app = flask.Flask("rostersync.status_page")
    iap_auth.install(app, functools.cache(_iap_verifier), in_cloud_run)

    def store():
        if store_factory is not None:
            return store_factory()
        from rostersync import wiring

        return wiring.admin_store()

    @app.route("/", methods=["GET", "POST"])
    def index():
        q = flask.request.values.get("q", "").strip()[:200]
        state = flask.request.values.get("state", "").strip()
        state = state if state in admin.STATES else ""
        s = store()
        sections, more_sections = _filtered(s.sections(state or None), q)
        problems, more_problems = _filtered(admin.plain(s.problems()), q)
        overrides, more_overrides = _filtered(admin.plain(s.overrides()), q)
        return _page(
            "rostersync status",
            "",
            _INDEX,
            st=admin.status(s),
            q=q,
            state=state,
            states=admin.STATES,
            sections=sections,
            problems=problems,
            overrides=overrides,
            more={"sections": more_sections, "problems": more_problems, "overrides": more_overrides},
        )

    @app.get("/section/<section_id>")
    def section(section_id: str):
        s = store()
        link = s.section(section_id)
        if link is None:
            return _page(
                "not found", "no such section", "<p>No section {{ sid }} in Firestore.</p>", 404, sid=section_id
            )
        overrides, problems = s.overrides(section_id), s.problems(section_id)
        detail = admin.section_detail(link, overrides, problems)
        why = admin.why(link, overrides, problems)
        return _page(f"section {section_id}", f"section {section_id}", _SECTION, d=detail, why=why)

    @app.get("/status.json")
    def status_json():
        return flask.jsonify(admin.status(store()))

    @app.errorhandler(UnreachableError)
    def unreachable(exc):
        return _page("unavailable", "Firestore unavailable", "<p>{{ e }}</p>", 503, e=str(exc))

    @app.errorhandler(ConfigError)
    def misconfigured(exc):
        return _page("configuration", "configuration error", "<p>{{ e }}</p>", 500, e=str(exc))

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
