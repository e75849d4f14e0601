"""A large district's Firestore as the sync leaves it, for the status page: links, open problems of a
few kinds, an audit trail over the last weeks and a history of polls.

Written with the sync's own document shapes (SectionCourseLink.to_doc, FirestoreStore's problem and
audit writers), in batches: thousands of sections in seconds, where syncing them through the
simulators would take minutes. Used by tests/e2e/test_status_page.py (a few hundred sections),
scripts/screenshots and the status-page benchmark (5,000 sections).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from rostersync.adapters.store import FirestoreStore
from rostersync.domain.audit import APPLIED, PROBLEM, AuditEntry
from rostersync.domain.changes import Person
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink, course_alias
from rostersync.domain.rules import Problem

from tests.sims.district import COURSES, FIRST_NAMES, LAST_NAMES

BATCH = 400  # writes a commit (Firestore takes 500)
NO_GOOGLE_HINT = "Create the Google account (or fix the email in the SIS); Classroom has no such user in the domain"


@dataclass
class SeededDistrict:
    sections: list[str]
    schools: list[str]
    problems: dict[str, int] = field(default_factory=dict)  # kind -> open problems
    people_without_google: int = 0


def _hex_id(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(24))


def seed_status_district(
    client,
    sections: int = 300,
    schools: int = 4,
    students_per_section: int = 25,
    sections_per_student: int = 2,
    without_google: int = 300,
    without_email: int = 40,
    owner_problems: int = 6,
    audit_days: int = 21,
    seed: int = 18,
    domain: str = "district.example.org",
) -> SeededDistrict:
    """Writes the district into the Firestore `client` points at (an emulator) and describes it."""
    rng = random.Random(seed)
    store = FirestoreStore(client)
    school_ids = [_hex_id(rng) for _ in range(schools)]
    used: set[str] = set()

    def person() -> tuple[str, str]:
        while True:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES).replace("'", "")
            email = f"{first}.{last}{rng.randint(1, 999)}@{domain}".lower()
            if email not in used:
                used.add(email)
                return _hex_id(rng), email

    pool = max(sections * students_per_section // sections_per_student, students_per_section * 2)
    students = [person() for _ in range(pool)]
    no_google = students[:without_google]
    no_google_ids = {cid for cid, _ in no_google}
    no_email = {cid for cid, _ in students[without_google : without_google + without_email]}
    subjects = list(COURSES.values())
    links: list[SectionCourseLink] = []
    problems: list[Problem] = []
    for i in range(sections):
        teacher_id, teacher_email = person()
        course = rng.choice(rng.choice(subjects))
        last = teacher_email.split("@")[0].split(".")[1].rstrip("0123456789").title()
        name = f"{course} - {last} - Period {i % 8 + 1}"
        sid = _hex_id(rng)
        broken_owner = i < owner_problems
        state = (
            LinkState.OWNER_PROBLEM
            if broken_owner
            else LinkState.DECLINED
            if i % 97 == 7
            else LinkState.ARCHIVED
            if i % 131 == 11
            else LinkState.ACTIVE
        )
        members = {teacher_id: MemberRecord(teacher_id, teacher_email, "teacher", MemberStatus.ACTIVE, "e1")}
        roster = rng.sample(students, students_per_section)
        if without_google and i < len(no_google) * sections_per_student // 2:
            # Each student without a Google account in about sections_per_student sections.
            roster = list(
                dict.fromkeys([no_google[(2 * i) % len(no_google)], no_google[(2 * i + 1) % len(no_google)], *roster])
            )
        for cid, email in roster:
            bad = cid in no_google_ids or cid in no_email
            members[cid] = MemberRecord(
                cid,
                None if cid in no_email else email,
                "student",
                MemberStatus.PROBLEM if bad and state == LinkState.ACTIVE else MemberStatus.ACTIVE,
                "e1",
                "@CannotDirectAddUser" if bad and cid not in no_email else "",
            )
            if state != LinkState.ACTIVE or not bad:
                continue
            if cid in no_email:
                problems.append(
                    Problem(
                        kind="user_without_email",
                        section_id=sid,
                        clever_id=cid,
                        role="student",
                        message=f"student {cid} has no email in Clever, so they cannot be matched to a Google account",
                        hint="Add the user's Google email in the SIS (or Clever) and it syncs on the next change",
                    )
                )
            else:
                problems.append(
                    Problem(
                        kind="user_not_in_google",
                        section_id=sid,
                        clever_id=cid,
                        email=email,
                        role="student",
                        reason="@CannotDirectAddUser",
                        event_id="e1",
                        message=f"Could not add student {email} to the course: @CannotDirectAddUser The user is "
                        "not in the domain",
                        hint=NO_GOOGLE_HINT,
                    )
                )
        if broken_owner:
            problems.append(
                Problem(
                    kind="owner_not_in_google",
                    section_id=sid,
                    clever_id=teacher_id,
                    email=teacher_email,
                    role="teacher",
                    reason="NOT_FOUND",
                    message=f"No course created for section {name!r}: Classroom refused owner {teacher_email}: "
                    "Requested entity was not found.",
                    hint="The primary teacher has no Google account with this email; create it or fix the email "
                    "in the SIS",
                )
            )
        links.append(
            SectionCourseLink(
                section_id=sid,
                state=state,
                alias=course_alias(sid),
                course_id=None if broken_owner else str(700_000_000_000 + i),
                section_name=name,
                name_set=None if broken_owner else name,
                owner=None if broken_owner else Person(teacher_id, teacher_email),
                failed_owner_email=teacher_email if broken_owner else None,
                school=school_ids[i % schools],
                members=members,
            )
        )

    now = dt.datetime.now(dt.UTC)
    writes: list = [("link", lk) for lk in links] + [("problem", p) for p in problems]
    for start in range(0, len(writes), BATCH):
        batch = client.batch()
        for what, item in writes[start : start + BATCH]:
            if what == "link":
                batch.set(client.collection("sections").document(item.section_id), {**item.to_doc(), "updated_at": now})
            else:
                store._add_problems(batch, [item])  # the sync's own problem writer
        batch.commit()

    # The audit trail: what the days before looked like (a bootstrap three weeks ago, then changes).
    records = []
    for days_ago in range(audit_days, -1, -1):
        day = now - dt.timedelta(days=days_ago)
        applied = len(links) * 3 if days_ago == audit_days else rng.randint(5, 60) * (1 if day.weekday() < 5 else 0)
        opened = rng.randint(0, 12) if day.weekday() < 5 else 0
        for n in range(applied + opened):
            link = links[(n * 7 + days_ago) % len(links)]
            outcome = APPLIED if n < applied else PROBLEM
            cid, email = rng.choice(students)
            what = f"add student {email}" if outcome == APPLIED else f"Could not add student {email}: no such user"
            entry = AuditEntry(link.section_id, outcome, what, f"e{days_ago}", "members.added", cid, email)
            at = day.replace(hour=7 + n % 10, minute=n % 60, second=0, microsecond=0)
            records.append({**entry.to_doc(), "seq": 0, "at": min(at, now), "expire_at": at + dt.timedelta(days=90)})
    first = links[len(links) // 2 if sections > 1 else 0]
    story = [
        (12, APPLIED, f"create course {first.section_name!r} owned by {first.owner.email if first.owner else '?'}"),
        (12, APPLIED, "add 24 students"),
        (5, APPLIED, "rename the course to the section's new name"),
        (3, PROBLEM, "Could not add student maya.chen@district.example.org to the course: no such user"),
        (1, "skipped_override", "a teacher renamed the course: Clever's rename is not applied"),
        (0, APPLIED, "remove student noah.kim@district.example.org"),
    ]
    for n, (days_ago, outcome, what) in enumerate(story):
        at = now - dt.timedelta(days=days_ago, hours=2, minutes=n)
        entry = AuditEntry(first.section_id, outcome, what, "reconcile" if days_ago == 1 else f"ev{n}")
        records.append({**entry.to_doc(), "seq": n, "at": at, "expire_at": at + dt.timedelta(days=90)})
    for start in range(0, len(records), BATCH):
        batch = client.batch()
        for r in records[start : start + BATCH]:
            batch.set(client.collection("audit").document(), r)
        batch.commit()

    # Polls every five minutes, a few slower ones; the push-notification registration.
    polls = []
    for n in range(47, -1, -1):
        polls.append(
            {
                "outcome": "ok",
                "seconds": round(rng.uniform(1.5, 4.0) + (9 if n % 12 == 0 else 0), 3),
                "events_read": rng.randint(0, 40),
                "changes": rng.randint(0, 15),
                "held": 0,
                "at": now - dt.timedelta(minutes=5 * n + 1),
            }
        )
    client.collection("sync_state").document("clever").set(
        {
            "last_event_id": _hex_id(rng),
            "bootstrapped_at": (now - dt.timedelta(days=audit_days)).isoformat(),
            "last_poll": polls[-1] | {"published": 3, "problems": []},
            "recent_polls": polls,
        },
        merge=True,
    )
    client.collection("sync_state").document("classroom_notifications").set(
        {
            "registration_id": "reg-" + _hex_id(rng)[:8],
            "expiry_time": (now + dt.timedelta(days=6)).isoformat(),
            "renewed_at": now - dt.timedelta(days=1),
            "last_error": None,
        },
        merge=True,
    )
    kinds: dict[str, int] = {}
    for p in problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    bad_people = {p.clever_id for p in problems if p.kind == "user_not_in_google"}
    return SeededDistrict([lk.section_id for lk in links], school_ids, kinds, len(bad_people))
