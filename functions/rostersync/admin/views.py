"""What the administrator's views show, from the Firestore documents (pure: no I/O here).

The CLI (cli.py) prints these as tables or JSON; the status page (status_page.py) as HTML.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections import Counter

from rostersync.domain.links import LinkState, MemberStatus

STATES = [s.value for s in LinkState]
MEMBER_STATUSES = [s.value for s in MemberStatus]


def classroom_link(course_id: str | None) -> str:
    """Classroom's alternateLink for a course: https://classroom.google.com/c/<base64 of the id>
    without padding. Course ids are digits, whose base64 never has '+' or '/', so plain and
    URL-safe base64 agree."""
    if not course_id:
        return ""
    return "https://classroom.google.com/c/" + base64.urlsafe_b64encode(str(course_id).encode()).decode().rstrip("=")


def plain(value):
    """A Firestore value as JSON can carry it (timestamps as ISO 8601)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def status(store) -> dict:
    clever = store.sync_state("clever")
    control = clever  # the pause flag shares the cursor's document (control.py)
    notifications = store.sync_state("classroom_notifications")
    sections = store.sections()
    by_state = Counter(str(s.get("state") or "?") for s in sections)
    return plain(
        {
            "paused": bool(control.get("paused")),
            "paused_at": control.get("paused_at"),
            "cursor": {
                "last_event_id": clever.get("last_event_id"),
                "bootstrapped_at": clever.get("bootstrapped_at") or None,
                "saved_at": clever.get("cursor_saved_at"),
            },
            "last_poll": clever.get("last_poll") or None,
            # The last time the cursor was given up (expired) and the district read again, and why.
            "last_rebootstrap": clever.get("last_rebootstrap") or None,
            "sections": {"total": len(sections), "by_state": {s: by_state.get(s, 0) for s in STATES} | by_state},
            "open_problems": len(store.problems()),
            "overrides": len(store.overrides()),
            "dead_letters_unreplayed": store.unreplayed_dead_letters(),
            "held_batches": store.held_batch_count(),
            "oneroster": oneroster_status(store.sync_state("oneroster")),
            # Guardian records by state (GUARDIANS=invite; empty when off).
            "guardians": store.guardian_state_counts(),
            "push_notifications": {
                "registration_id": notifications.get("registration_id"),
                "expiry_time": notifications.get("expiry_time"),
                "renewed_at": notifications.get("renewed_at"),
                "last_error": notifications.get("last_error"),
            },
        }
    )


def oneroster_status(doc: dict) -> dict | None:
    """The OneRoster source's cursor and last poll (None for a Clever district), with whether the
    last read was known complete: if not, no removal was inferred from it, and why."""
    if not doc:
        return None
    poll = doc.get("last_poll") or {}
    return {
        "since": doc.get("since"),
        "last_full_read": doc.get("last_full_read") or None,
        "last_incomplete_full_read": doc.get("last_incomplete_full_read") or None,
        "last_poll": poll or None,
        "complete": poll.get("complete", True) if poll else None,
        "incomplete_reasons": list(poll.get("incomplete_reasons") or []),
        "last_bundle": doc.get("last_bundle"),
    }


def section_detail(link: dict, overrides: list[dict], problems: list[dict]) -> dict:
    members: dict[str, list[dict]] = {}
    for cid, m in sorted((link.get("members") or {}).items()):
        members.setdefault(str(m.get("status") or "active"), []).append(
            {
                "clever_id": m.get("clever_id") or cid,
                "email": m.get("email"),
                "role": m.get("role"),
                "event_id": m.get("event_id"),
                "reason": m.get("reason") or "",
            }
        )
    return plain(
        {
            "section_id": link.get("section_id"),
            "section_name": link.get("section_name"),
            "state": link.get("state"),
            "course_id": link.get("course_id"),
            "alias": link.get("alias"),
            "classroom_link": classroom_link(link.get("course_id")),
            "owner_email": link.get("owner_email"),
            "failed_owner_email": link.get("failed_owner_email"),
            "name_set": link.get("name_set"),
            "name_override": link.get("name_override"),
            "teacher_added": link.get("teacher_added") or [],
            "shared_with": link.get("shared_with") or [],
            "school": link.get("school"),
            "updated_at": link.get("updated_at"),
            "members": members,
            "overrides": overrides,
            "problems": problems,
        }
    )


_STATE_SENTENCE = {
    "active": "is in Classroom as course {course} (named {name}, owned by {owner}) and follows Clever",
    "owner_problem": "has no course in Classroom: its primary teacher{failed} could not own one, so nothing was "
    "created (a new primary teacher, or a fixed email, tries again)",
    "deleted": "was deleted in Clever{deleted}; its course {course} was archived (or kept, with "
    "SECTION_DELETED_ACTION=keep), never deleted, and is no longer synced",
    "declined": "has course {course}, which its teacher declined; nothing more is applied to it until an "
    "administrator runs 'rostersync reoffer {section}'",
    "archived": "has course {course}, which was archived (by someone in Classroom, or after its term ended); "
    "it is left alone",
}

_MEMBER_SENTENCE = {
    "active": "is in the course as a {role}: rostersync added them (Clever event {event})",
    "removed": "is not in the course: Clever no longer lists them in the section (event {event}), so rostersync "
    "removed them or never added them",
    "problem": "is not in the course: rostersync could not add them{reason}",
    "removed_by_teacher": "is not in the course: a teacher removed them by hand in Classroom, and the sync does not "
    "add them back for the same enrollment (a new enrollment in Clever would)",
    "leaving": "is still in the course although Clever dropped them (event {event}): they own it, and leave once "
    "ownership has moved to the new primary teacher",
}


def _quote(text: str | None) -> str:
    return f"'{text}'" if text else "(no name)"


def _matches(doc: dict, user: str) -> bool:
    u = user.strip().lower()
    return u in {str(doc.get("clever_id") or "").lower(), str(doc.get("email") or "").lower()}


WHY_TRAIL_RECORDS = 5  # the newest audit records `why` cites


def why(
    link: dict, overrides: list[dict], problems: list[dict], user: str | None = None, trail: list[dict] | None = None
) -> str:
    """One paragraph: the state (below) and then what the audit trail (oldest first) last recorded."""
    text = _why_state(link, overrides, problems, user)
    if trail is None:
        return text
    if not trail:
        return text + " The audit trail has no record of " + ("them" if user else "this section") + " (yet)."
    shown = trail[-WHY_TRAIL_RECORDS:]
    told = "; ".join(_trail_sentence(r) for r in shown)
    more = f"{len(trail)} records, the newest {len(shown)}" if len(trail) > len(shown) else f"{len(trail)} records"
    return f"{text} The audit trail ({more}): {told}."


def _trail_sentence(r: dict) -> str:
    at = plain(r.get("at"))
    event = r.get("event_id") or "?"
    source = (
        f"Clever event {event}"
        if event not in ("reconcile", "admin")
        else f"the {event} pass"
        if event == "reconcile"
        else "an administrator"
    )
    return f"{at or '?'}: {source}, {r.get('what') or r.get('kind')} ({str(r.get('outcome') or '?').replace('_', ' ')})"


def _why_state(link: dict, overrides: list[dict], problems: list[dict], user: str | None = None) -> str:
    """One paragraph: why the section's course, or one member (Clever id or email), is or is not in
    Classroom, from the link's state and member record, the overrides and the open problems."""
    section = link.get("section_id")
    state = str(link.get("state") or "active")
    course = link.get("course_id") or "(none)"
    name = link.get("name_override") or link.get("name_set")
    label = f"Section {section}" + (f" ({link['section_name']})" if link.get("section_name") else "")
    course_part = _STATE_SENTENCE.get(state, "is in state {state}").format(
        course=course,
        name=_quote(name),
        owner=link.get("owner_email") or "?",
        failed=f" ({link['failed_owner_email']})" if link.get("failed_owner_email") else "",
        deleted=f" (event {link['deleted_event_id']})" if link.get("deleted_event_id") else "",
        section=section,
        state=state,
    )
    if user is None:
        parts = [f"{label} {course_part}."]
        if link.get("name_override"):
            parts.append(
                f"Its teacher renamed the course to {_quote(link['name_override'])}, so Clever's renames are not "
                "applied."
            )
        active = [m for m in (link.get("members") or {}).values() if m.get("status") == "active"]
        if state == "active":
            parts.append(f"rostersync manages {len(active)} of its members.")
        parts += [_override_sentence(o) for o in overrides]
        parts += [_problem_sentence(p) for p in problems]
        if not overrides and not problems:
            parts.append("There are no overrides and no open problems for it.")
        return " ".join(parts)

    records = [dict(m, clever_id=m.get("clever_id") or cid) for cid, m in (link.get("members") or {}).items()]
    member = next((m for m in records if _matches(m, user)), None)
    mine_o = [o for o in overrides if _matches(o, user)]
    mine_p = [p for p in problems if _matches(p, user)]
    if member:
        who = f"{member.get('email') or member['clever_id']} (Clever {member['clever_id']}, {member.get('role')})"
        mstatus = str(member.get("status") or "active")
        reason = f" (Classroom said {member['reason']})" if member.get("reason") else ""
        sentence = _MEMBER_SENTENCE.get(mstatus, "has status {status}").format(
            role=member.get("role"), event=member.get("event_id") or "?", reason=reason, status=mstatus
        )
        parts = [f"In section {section}, {who} {sentence}."]
    elif mine_o or mine_p:
        parts = [f"In section {section}, rostersync has no member record for {user}."]
    else:
        parts = [
            f"In section {section}, rostersync has no record of {user}: Clever has not listed them in this section "
            "since it was linked, so the sync neither added nor removed them (a member added by hand in "
            "Classroom is left alone)."
        ]
    owner = {"email": link.get("owner_email"), "clever_id": link.get("owner_clever_id")}
    if link.get("owner_email") and _matches(owner, user):
        parts.append(f"They are the course owner rostersync set (Clever event {link.get('owner_event_id') or '?'}).")
    parts += [_override_sentence(o) for o in mine_o]
    parts += [_problem_sentence(p) for p in mine_p]
    if state != "active":
        parts.append(f"The course itself: {label.lower()} {course_part}.")
    return " ".join(parts)


def summary(link: dict) -> str:
    """The section's state in a sentence or two (the status page lists problems and overrides apart)."""
    text = _why_state(link, [], [], None)
    return text.removesuffix(" There are no overrides and no open problems for it.")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def _override_sentence(o: dict) -> str:
    return _sentence(f"Override ({o.get('kind')}): {o.get('detail') or o.get('email') or ''}")


def _problem_sentence(p: dict) -> str:
    reason = f" [{p['reason']}]" if p.get("reason") else ""
    text = _sentence(f"Open problem ({p.get('kind')}){reason}: {p.get('message') or ''}")
    return text + (" Hint: " + _sentence(p["hint"]) if p.get("hint") else "")


def matches_query(row: dict, query: str) -> bool:
    """Whether any field of a listing row contains the query (case-insensitive): the search box."""
    q = query.strip().lower()
    return not q or any(q in str(v).lower() for v in row.values() if not isinstance(v, dict | list))


GUARDIAN_STATE_SENTENCES = {
    "inviting": "is being invited: the sync recorded its intent and has not yet saved Classroom's answer (the "
    "next delivery or the nightly pass finishes it)",
    "pending": "was invited and has not answered yet",
    "accepted": "accepted: they are a Classroom guardian",
    "expired": "was invited, but the invitation expired after its 120 days (sent again at most once a period)",
    "declined": "was invited, but the invitation ended before its 120 days without them becoming a guardian: "
    "they declined, or someone withdrew it in Classroom. The sync does not send it again: ask the family; "
    "invite them in Classroom by hand, or end and restore the relationship in the SIS",
    "withdrawn": "is no longer a guardian in the SIS; the invitation was withdrawn (or never sent)",
    "removed": "is no longer a guardian in the SIS; the sync removed them from Classroom",
    "problem": "could not be invited: Classroom refused",
    "released": "was not invited by the sync (already in Classroom), so it leaves them as they are",
    "removed_by_hand": "accepted, then someone removed them in Classroom by hand; the sync does not invite them "
    "again unless the relationship ends and starts again in the SIS",
}


def why_guardians(student_id: str, records: list[dict], problems: list[dict], trail: list[dict], user=None) -> str:
    """`rostersync why guardians-STUDENT [contact or email]`: each guardian's state in a sentence,
    the open problems, and what the audit trail last recorded."""
    if user:
        u = user.lower()
        records = [r for r in records if u in (str(r.get("contact_id")).lower(), str(r.get("email")).lower())]
        trail = [r for r in trail if u in (str(r.get("clever_id") or "").lower(), str(r.get("email") or "").lower())]
    if not records:
        text = f"The sync has no guardian record for student {student_id}" + (f" and {user}" if user else "") + "."
    else:
        text = " ".join(
            f"Guardian {r.get('email')} (contact {r.get('contact_id')}) "
            f"{GUARDIAN_STATE_SENTENCES.get(str(r.get('state')), str(r.get('state')))}"
            f"{' (' + str(r.get('reason')) + ')' if r.get('reason') else ''}, decided by event {r.get('event_id')}."
            for r in records
        )
    for p in problems:
        text += " " + _problem_sentence(p)
    if trail:
        shown = trail[-WHY_TRAIL_RECORDS:]
        text += f" The audit trail ({len(trail)} records): " + "; ".join(_trail_sentence(r) for r in shown) + "."
    return text


# -- the status page's reading of the same documents: health, grouped problems, pictures -----------

HEALTHY, ATTENTION, FAILING = "healthy", "attention", "failing"
_LEVELS = {HEALTHY: 0, ATTENTION: 1, FAILING: 2}
HEALTH_LABELS = {HEALTHY: "Healthy", ATTENTION: "Needs attention", FAILING: "Failing"}
STALE_POLL_MINUTES = 60  # no poll for this long: the scheduler or the function is not running
RENEW_BEFORE_HOURS = 24  # a push registration expiring sooner than this was not renewed in time


def mask_email(email: str | None) -> str:
    """j***e@district.example.org: enough to tell people apart on a page (with their Clever id), not
    a full address."""
    if not email or "@" not in str(email):
        return str(email or "")
    local, _, domain = str(email).partition("@")
    return f"{local[:1]}***{local[-1:] if len(local) > 3 else ''}@{domain}"


_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def mask_emails_in(text: str | None) -> str:
    """The text with every email address in it masked (problem messages quote them)."""
    return _EMAIL.sub(lambda m: mask_email(m.group(0)), str(text or ""))


def _as_datetime(value) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def health(st: dict, problem_groups: list[dict] | None = None, now: dt.datetime | None = None) -> dict:
    """Healthy / needs attention / failing, from `status` (above) and the problem groups, with one
    finding per cause, each naming the `rostersync` command that deals with it. The worst finding
    sets the level."""
    now = now or dt.datetime.now(dt.UTC)
    findings: list[dict] = []

    def find(level: str, title: str, detail: str, command: str) -> None:
        findings.append({"level": level, "title": title, "detail": detail, "command": command})

    poll = st.get("last_poll") or {}
    polled_at = _as_datetime(poll.get("at"))
    held_paused = int(st.get("dead_letters_held_while_paused") or 0)
    if st.get("paused"):
        find(
            ATTENTION,
            "The sync is paused",
            "Nothing is read from Clever and changes are held until it is resumed"
            + (f" ({held_paused} held so far)." if held_paused else "."),
            "rostersync resume",
        )
    if not poll:
        find(
            ATTENTION,
            "No poll has run yet",
            "The first scheduled poll reads every section from Clever (the bootstrap).",
            "rostersync status",
        )
    elif poll.get("outcome") == "failed":
        reason = mask_emails_in((poll.get("problems") or ["no reason recorded"])[0])[:300]
        find(
            FAILING,
            "The last poll failed",
            f"{reason}. Fix the cause (Clever token, network); the next scheduled poll goes on from the cursor.",
            "rostersync status",
        )
    elif polled_at and not st.get("paused") and now - polled_at > dt.timedelta(minutes=STALE_POLL_MINUTES):
        minutes = int((now - polled_at).total_seconds() // 60)
        find(
            FAILING,
            f"No poll for {minutes} minutes",
            "Cloud Scheduler has not run poll_clever (or it cannot finish): check the scheduler job and the "
            "function's logs.",
            "rostersync status",
        )
    elif poll.get("outcome") == "partial":
        find(
            ATTENTION,
            "The last poll ran out of time",
            "It read part of the events; the next poll goes on from where it stopped.",
            "rostersync status",
        )
    dead = int(st.get("dead_letters_unreplayed") or 0) - held_paused
    if held_paused and not st.get("paused"):
        find(
            ATTENTION,
            f"{held_paused} change{'s' if held_paused != 1 else ''} held while the sync was paused",
            "They were not published again when the sync resumed.",
            "rostersync resume",
        )
    if dead > 0:
        find(
            FAILING,
            f"{dead} change{'s' if dead != 1 else ''} not applied (dead letters)",
            "The appliers gave up on them; fix the cause their log names, then publish them again.",
            "rostersync replay-dead-letters",
        )
    held = int(st.get("held_batches") or 0)
    if held:
        find(
            ATTENTION,
            f"{held} batch{'es' if held != 1 else ''} of removals held by the brake",
            "Many removals or archives at once: look at them, then approve or discard each batch.",
            "rostersync held",
        )
    push = st.get("push_notifications") or {}
    expiry = _as_datetime(push.get("expiry_time"))
    if push.get("last_error"):
        find(
            ATTENTION,
            "Classroom push notifications could not be renewed",
            mask_emails_in(push["last_error"])[:300] + ". Teachers' changes wait for the nightly reconcile.",
            "rostersync consent-notifications",
        )
    elif not push.get("registration_id"):
        find(
            ATTENTION,
            "Classroom push notifications are not registered",
            "Teachers' changes in Classroom are seen only by the nightly reconcile.",
            "rostersync consent-notifications",
        )
    elif expiry and expiry - now < dt.timedelta(hours=RENEW_BEFORE_HOURS):
        find(
            ATTENTION,
            "The push-notification registration is about to expire" if expiry > now else "The registration expired",
            "renew_classroom_registration has not renewed it; its log says why.",
            "rostersync consent-notifications",
        )
    groups = problem_groups or []
    total = sum(g["count"] for g in groups) if groups else int(st.get("open_problems") or 0)
    if total:
        kinds = "; ".join(f"{g['label']} ({g['count']:,})" for g in groups[:3])
        find(
            ATTENTION,
            f"{total:,} open problem{'s' if total != 1 else ''}",
            (kinds + ("; ..." if len(groups) > 3 else "") + ".") if kinds else "",
            "rostersync problems",
        )
    level = max((f["level"] for f in findings), key=_LEVELS.__getitem__, default=HEALTHY)
    findings.sort(key=lambda f: -_LEVELS[f["level"]])
    return {"level": level, "label": HEALTH_LABELS[level], "findings": findings}


PROBLEM_LABELS = {
    "user_not_in_google": "People without a Google account",
    "user_without_email": "People without an email in Clever",
    "owner_not_in_google": "Primary teachers without a Google account",
    "owner_cannot_own": "Primary teachers who cannot own a class",
    "course_create_rejected": "Courses Classroom refused to create",
    "course_limit": "Full courses",
    "classroom_rejected": "Changes Classroom refused",
    "course_missing": "Courses missing from Classroom",
    "link_too_large": "Sections too large to keep track of",
    "section_without_teacher": "Sections without a primary teacher",
    "bad_message": "Unreadable roster change messages",
    "bad_clever_record": "Unreadable Clever records",
    "bad_oneroster_record": "Unreadable OneRoster records",
    "bad_oneroster_bundle": "Rejected OneRoster bundles",
    "bad_notification": "Unreadable Classroom notifications",
}


def problem_label(kind: str) -> str:
    return PROBLEM_LABELS.get(kind) or str(kind or "other").replace("_", " ").capitalize()


def group_problems(problems: list[dict], masked: bool = True) -> list[dict]:
    """Open problems grouped by kind, biggest group first: the count, the hint once (the most common
    one), the sections affected and the people (one entry a person, with how many of their
    sections are affected). masked: people are named by masked email (the page); else in full (the
    administrator's terminal)."""
    by_kind: dict[str, list[dict]] = {}
    for p in problems:
        by_kind.setdefault(str(p.get("kind") or "other"), []).append(p)
    groups = []
    for kind, rows in by_kind.items():
        hints = Counter(str(p.get("hint") or "") for p in rows if p.get("hint"))
        reasons = Counter(str(p.get("reason") or "") for p in rows if p.get("reason"))
        sections = Counter(str(p.get("section_id") or "") for p in rows if p.get("section_id"))
        people: dict[str, dict] = {}
        for p in rows:
            key = str(p.get("clever_id") or p.get("email") or "")
            if not key:
                continue
            person = people.setdefault(
                key,
                {
                    "clever_id": p.get("clever_id") or "",
                    "email": mask_email(p.get("email")) if masked else (p.get("email") or ""),
                    "role": p.get("role") or "",
                    "sections": [],
                },
            )
            if p.get("section_id"):
                person["sections"].append(str(p["section_id"]))
        groups.append(
            {
                "kind": kind,
                "label": problem_label(kind),
                "count": len(rows),
                "hint": hints.most_common(1)[0][0] if hints else "",
                "reasons": [r for r, _ in reasons.most_common()],
                "sections": [{"section_id": s, "count": n} for s, n in sorted(sections.items())],
                "people": sorted(people.values(), key=lambda x: x["email"] or x["clever_id"]),
                "example": mask_emails_in(rows[0].get("message")) if masked else str(rows[0].get("message") or ""),
            }
        )
    groups.sort(key=lambda g: (-g["count"], g["kind"]))
    return groups


def member_groups(link: dict, masked: bool = True) -> list[dict]:
    """The section's members by role, then status (active first): [{role, status, people}]."""
    order = {s: i for i, s in enumerate(MEMBER_STATUSES)}
    groups: dict[tuple[str, str], list[dict]] = {}
    for cid, m in (link.get("members") or {}).items():
        key = (str(m.get("role") or "student"), str(m.get("status") or "active"))
        email = m.get("email")
        groups.setdefault(key, []).append(
            {
                "clever_id": m.get("clever_id") or cid,
                "email": mask_email(email) if masked else (email or ""),
                "reason": m.get("reason") or "",
            }
        )
    return [
        {"role": role, "status": status, "people": sorted(people, key=lambda p: (p["email"], p["clever_id"]))}
        for (role, status), people in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != "teacher", order.get(kv[0][1], 99), kv[0][1])
        )
    ]


def member_counts(members: dict | None) -> dict:
    """{"teachers": n, "students": n} of the members rostersync keeps in the course (active or leaving)."""
    counts = {"teachers": 0, "students": 0}
    for m in (members or {}).values():
        if str(m.get("status") or "active") in ("active", "leaving"):
            counts["teachers" if m.get("role") == "teacher" else "students"] += 1
    return counts


def display_name(row: dict) -> str:
    return str(row.get("name_override") or row.get("name_set") or row.get("section_name") or row.get("section_id"))


def timeline(trail: list[dict], masked: bool = True) -> list[dict]:
    """The section's audit trail, newest first, as entries of a timeline: when, who caused it,
    what (emails masked on the page) and the outcome."""
    entries = []
    for r in reversed(trail):
        event = str(r.get("event_id") or "")
        source = (
            "the reconcile pass"
            if event == "reconcile"
            else "an administrator"
            if event == "admin"
            else f"Clever event {event}"
            if event
            else ""
        )
        what = str(r.get("what") or r.get("kind") or "")
        entries.append(
            {
                "at": _as_datetime(r.get("at")),
                "source": source,
                "what": mask_emails_in(what) if masked else what,
                "outcome": str(r.get("outcome") or ""),
                "outcome_label": str(r.get("outcome") or "?").replace("_", " "),
            }
        )
    return entries
