"""The audit trail: what the applier records for each change it applies or skips."""

from rostersync.admin import views as admin
from rostersync.domain import audit
from rostersync.domain.changes import ChangeKind
from rostersync.domain.sources.clever_events import changes_from_event

from tests.unit.clever_payloads import EMAILS, SECTION, STUDENTS, event, section
from tests.unit.test_applier import apply_event, created, ev_id, world  # noqa: F401 (fixture)


def outcomes(store, **match):
    return [e for e in store.audit if all(getattr(e, k) == v for k, v in match.items())]


def test_each_applied_operation_is_recorded_with_its_event_in_the_same_commit(world):  # noqa: F811
    classroom, store, applier = world
    created(applier)
    commits = store.ops["commit"]
    applied = outcomes(store, outcome=audit.APPLIED, event_id=ev_id(1))
    kinds = sorted(e.kind.split("/")[-1] for e in applied)
    assert kinds.count("create_course") == 1
    assert kinds.count("add_member") == classroom.writes - 1
    assert {e.email for e in applied if e.kind.endswith("add_member")} >= {EMAILS[s] for s in STUDENTS[:5]}
    assert all(e.section_id == SECTION and e.course_id for e in applied)
    assert commits == 1  # the trail rode along in the link's one commit


def test_older_events_and_overrides_are_recorded_as_skipped_and_a_redelivery_adds_nothing(world):  # noqa: F811
    classroom, store, applier = world
    created(applier)
    add = changes_from_event(
        event(ev_id(2), "sections.updated", section(students=STUDENTS[:6]), {"students": STUDENTS[:5]}), EMAILS
    )
    remove = changes_from_event(
        event(ev_id(3), "sections.updated", section(students=STUDENTS[:5]), {"students": STUDENTS[:6]}), EMAILS
    )
    for change in remove + add:
        applier.apply(change)
    late = [e for e in store.audit if e.event_id == ev_id(2)]
    assert [e.outcome for e in late] == [audit.SKIPPED_OLDER]
    assert late[0].clever_id == STUDENTS[5] and late[0].kind == ChangeKind.STUDENT_ADDED.value
    size = len(store.audit)
    for change in remove:
        applier.apply(change)
    assert len(store.audit) == size  # the same event again: nothing new to record

    # A teacher's rename: Clever's rename is recorded as skipped because of the override.
    classroom.courses[classroom.aliases[f"d:clever-{SECTION}"]]["name"] = "Mr Smith's Algebra"
    apply_event(applier, event(ev_id(4), "sections.updated", section(name="Algebra 1"), {"name": "Algebra I"}))
    [renamed] = [e for e in store.audit if e.event_id == ev_id(4)]
    assert renamed.outcome == audit.SKIPPED_OVERRIDE and "Mr Smith's Algebra" in renamed.what


def test_a_refused_add_is_recorded_as_a_problem(world):  # noqa: F811
    classroom, store, applier = world
    created(applier, students=STUDENTS[:10])
    problems = outcomes(store, outcome=audit.PROBLEM)
    assert problems and all(e.email == "student9@district.example.org" for e in problems)


def test_why_tells_the_newest_records():
    trail = [
        {"at": f"2026-01-0{n}T00:00:00", "event_id": f"e{n}", "what": f"add student s{n}", "outcome": "applied"}
        for n in range(1, 8)
    ]
    link = {"section_id": "s1", "state": "active", "course_id": "1", "members": {}}
    text = admin.why(link, [], [], None, trail)
    assert "7 records, the newest 5" in text and "Clever event e7" in text and "e2" not in text
    assert "(yet)" in admin.why(link, [], [], "u1", [])


def test_the_trail_is_capped_below_firestores_commit_limit():
    entries = [audit.AuditEntry("s", audit.APPLIED, f"add {n}") for n in range(audit.MAX_ENTRIES_PER_COMMIT + 50)]
    kept = audit.capped(entries)
    assert len(kept) == audit.MAX_ENTRIES_PER_COMMIT and "51 more" in kept[-1].what
