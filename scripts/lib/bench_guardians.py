"""The guardian scenario of scripts/bench (issue 17): a district whose every student has two parents
in Clever, through the real stack (the emulators, poll_clever, apply_roster_event and
reconcile_courses under functions-framework, the Clever and Classroom simulators), GUARDIANS=invite.

Phases, each on the state the previous one left:
1. bootstrap: the first poll invites every (student, parent) pair;
2. a repeated poll (nothing new);
3. a round of contact changes, one poll per kind, `per_kind` changes of each: a new contact, a
   relationship ended with its invitation pending, a relationship ended after an acceptance the
   nightly pass has recorded, a contact's email changed;
4. the nightly pass (reconcile_courses {"guardians": true}) that records the acceptances of 3's
   third kind, measured on its own.
Classroom's guardian calls are counted at the simulator (reads included) and divided by the number
of guardian changes; the peak memory (VmHWM) of the poller and the applier is read as the bench's
other phases read it. At the end every pair is compared with Clever: each student's pending
invitations and guardians are exactly the parents Clever lists (0 differences expected).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.district import make_district
from tests.sims.stack import FunctionServer, LocalStack

PARENT = ("Parent", "Parent/Guardian")
FAMILY = "family.example.com"


@dataclass(frozen=True)
class GuardianMode:
    students: int  # every one with two parents
    sections: int
    per_kind: int  # changes of each kind in phase 3


GUARDIAN_MODES = {
    "quick": GuardianMode(students=60, sections=3, per_kind=5),
    "default": GuardianMode(students=600, sections=24, per_kind=20),
    "full": GuardianMode(students=3000, sections=100, per_kind=50),
}


def guardian_calls(classroom: ClassroomSimulator) -> Counter:
    return Counter({k.split("userProfiles.")[1]: v for k, v in classroom.calls.items() if ".guardian" in k})


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def measure(emulators, project: str, domain: str, admin: str, mode: GuardianMode, seed: int, memory_of, say) -> dict:
    """Runs the scenario on the given (already running) emulators, which it resets first."""
    pubsub, firestore = emulators
    firestore.reset(project)
    started = time.monotonic()
    out: dict[str, Any] = {"students": mode.students, "contacts_per_student": 2, "per_kind": mode.per_kind}
    with CleverSimulator() as clever, ClassroomSimulator(domain=domain, admin_email=admin) as classroom:
        classroom.add_user(admin, "District", "Admin")
        district = make_district(
            clever,
            seed=seed,
            schools=1,
            sections=mode.sections,
            students=mode.students,
            students_per_section=(mode.students // mode.sections, mode.students // mode.sections + 5),
            domain=domain,
            broken_users=False,
        )
        for email, first, last in district.google_accounts:
            classroom.add_user(email, first, last)
        students = [s for s in district.students if (clever.user(s) or {}).get("email")]
        email = {s: clever.user(s)["email"].lower() for s in students}
        parents: dict[str, list[str]] = {}
        for n, s in enumerate(students):
            parents[s] = [
                clever.add_contact(f"mom{n}@{FAMILY}", "Mom", str(n), [(s, *PARENT)], emit=False),
                clever.add_contact(f"dad{n}@{FAMILY}", "Dad", str(n), [(s, *PARENT)], emit=False),
            ]
        out["students"] = len(students)
        env = {
            "CLEVER_API_BASE": clever.base_url,
            "CLEVER_TOKEN": clever.token,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": admin,
            "POLL_TIME_BUDGET_SECONDS": "900",
            "LOG_LEVEL": "warning",
            "CLASSROOM_CALLS_PER_MINUTE": "0",
            "GUARDIANS": "invite",
            # The changes of phase 3 would trip the mass-change brake of a small district (tested
            # elsewhere); here every change must flow.
            "BRAKE_SECTION_PERCENT": "100",
            "BRAKE_TOTAL_PERCENT": "100",
            "BRAKE_MAX_ARCHIVES": "1000000",
        }
        with LocalStack(project=project, extra_env=env, emulators=(pubsub, firestore)) as stack:
            timeout = 60 + mode.students / 5

            def poll() -> tuple[dict, Counter, float]:
                classroom.reset_counters()
                t0 = time.monotonic()
                result = stack.poll_and_wait(timeout=timeout)
                return result, guardian_calls(classroom), round(time.monotonic() - t0, 2)

            say(f"guardians: bootstrap of {len(students)} students with 2 parents each")
            result, calls, seconds = poll()
            out["bootstrap"] = {
                "guardian_changes": result.get("guardian_changes"),
                "pairs": 2 * len(students),
                "calls": dict(calls),
                "calls_total": sum(calls.values()),
                "calls_per_pair": round(sum(calls.values()) / (2 * len(students)), 3),
                "seconds": seconds,
            }
            _, calls, _ = poll()
            out["repeated_poll_calls"] = sum(calls.values())

            k = mode.per_kind
            rounds: dict[str, dict] = {}

            def round_of(kind: str, make) -> None:
                for i in range(k):
                    make(i)
                result, calls, seconds = poll()
                rounds[kind] = {
                    "changes": k,
                    "guardian_changes_published": result.get("guardian_changes"),
                    "calls": dict(calls),
                    "calls_per_change": round(sum(calls.values()) / k, 3),
                    "seconds": seconds,
                }

            new_contacts: dict[str, str] = {}

            def new_contact(i: int) -> None:
                s = students[i]
                new_contacts[s] = clever.add_contact(f"aunt{i}@{FAMILY}", "Aunt", str(i), [(s, *PARENT)])

            def end_pending(i: int) -> None:
                clever.set_relationships(parents[students[k + i]][0], [])

            # Phase 3's third kind: guardians who accepted, and the nightly pass saw it.
            accepted = students[2 * k : 3 * k]
            for s in accepted:
                classroom.guardian_accepts(email[s], f"dad{students.index(s)}@{FAMILY}")
            reconciler = FunctionServer("reconcile_courses", "http", env=stack.env).start()
            try:
                say("guardians: the nightly pass (reconcile_courses {guardians: true})")
                classroom.reset_counters()
                t0 = time.monotonic()
                nightly = _post(reconciler.url, {"guardians": True}, timeout)
                calls = guardian_calls(classroom)
                out["nightly_pass"] = {
                    "students": nightly.get("students"),
                    "calls": dict(calls),
                    "calls_total": sum(calls.values()),
                    "calls_per_student": round(sum(calls.values()) / max(1, len(students)), 3),
                    "seconds": round(time.monotonic() - t0, 2),
                }
            finally:
                reconciler.stop()

            def end_accepted(i: int) -> None:
                clever.set_relationships(parents[accepted[i]][1], [])

            def email_changed(i: int) -> None:
                s = students[3 * k + i]
                clever.update_user(parents[s][0], email=f"mom{students.index(s)}.new@{FAMILY}")

            say(f"guardians: {k} changes of each kind, one poll per kind")
            round_of("new contact", new_contact)
            round_of("relationship ended, invitation pending", end_pending)
            round_of("relationship ended, guardian accepted (known)", end_accepted)
            round_of("contact's email changed", email_changed)
            out["changes"] = rounds
            out["poller_memory"] = memory_of(stack.poller.pids())
            out["applier_memory"] = memory_of(stack.applier.pids())

            # Every student's live invitations and guardians against Clever's parents.
            differences = 0
            for s in students:
                wanted = {
                    (clever.user(c) or {}).get("email", "").lower()
                    for c in parents[s] + ([new_contacts[s]] if s in new_contacts else [])
                    if any(r.get("student") == s for r in _relationships(clever, c))
                }
                live = {i["invitedEmailAddress"].lower() for i in classroom.invitations_of(email[s], "PENDING")}
                live |= {g.lower() for g in classroom.guardians_of(email[s])}
                differences += wanted != live
            out["students_out_of_sync"] = differences
            out["in_process"] = firestore_writes(stack, clever, classroom, students[-mode.per_kind :], email, admin)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def firestore_writes(stack, clever, classroom, students, email, admin) -> dict:
    """Firestore writes and commits per new invitation, counted in-process (the emulator does not
    count them) by running the real GuardianApplier and FirestoreStore through the bench's counting
    proxy: one new contact for each of `students`, then the same changes delivered again."""
    import os

    from bench import counting_firestore_client
    from rostersync.adapters.classroom import ClassroomAdapter, build_classroom_service
    from rostersync.adapters.store import FirestoreStore
    from rostersync.app.guardian_applier import GuardianApplier
    from rostersync.config import load_settings
    from rostersync.domain.changes import Person
    from rostersync.domain.guardians import GuardianChange
    from rostersync.retry import Deadline

    os.environ.update(
        {
            "GOOGLE_CLOUD_PROJECT": stack.project,
            "FIRESTORE_EMULATOR_HOST": stack.firestore.host,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "CLEVER_API_BASE": clever.base_url,
            "CLEVER_TOKEN": clever.token,
            "ADMIN_SUBJECT": admin,
        }
    )
    settings = load_settings()
    client, counter = counting_firestore_client(stack.project)
    adapter = ClassroomAdapter(
        build_classroom_service(settings),
        settings.classroom_api_endpoint,
        deadline_factory=lambda: Deadline(settings.apply_time_budget_seconds),
    )
    guardians = GuardianApplier(FirestoreStore(client), adapter, settings.guardian_reinvite_days)
    changes = [
        GuardianChange(Person(s, email[s]), "f" * 24, "", (Person(f"uncle-{s}", f"uncle.{s}@{FAMILY}"),))
        for s in students
    ]

    def apply_all() -> dict:
        classroom.reset_counters()
        reads, writes, _ = counter.snapshot()
        commits = counter.rpcs["commit"]
        outcomes = Counter(guardians.apply_all([c]).status for c in changes)
        after = counter.snapshot()
        return {
            "outcomes": dict(outcomes),
            "firestore_writes": after[1] - writes,
            "firestore_reads": after[0] - reads,
            "commits": counter.rpcs["commit"] - commits,
            "classroom_calls": sum(guardian_calls(classroom).values()),
        }

    first, again = apply_all(), apply_all()
    n = len(changes)
    return {
        "new_invitations": n,
        "first": first,
        "again": again,
        "writes_per_new_invitation": round(first["firestore_writes"] / n, 2),
        "commits_per_new_invitation": round(first["commits"] / n, 2),
    }


def _relationships(clever: CleverSimulator, contact_id: str) -> list[dict]:
    user = clever.user(contact_id) or {}
    return ((user.get("roles") or {}).get("contact") or {}).get("student_relationships") or []


def rows(g: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The scenario's lines of the bench's table."""
    if not g:
        return []
    b = g.get("bootstrap", {})
    out = [
        (
            f"guardians: bootstrap Classroom calls ({g.get('students')} students x 2 parents)",
            f"{b.get('calls_total')} ({b.get('calls_per_pair')} a pair)",
            "1 a pair",
            "yes" if b.get("calls_per_pair") == 1 else "NO",
        ),
        (
            "guardians: Classroom calls, repeated poll",
            str(g.get("repeated_poll_calls")),
            "0",
            "yes" if g.get("repeated_poll_calls") == 0 else "NO",
        ),
    ]
    for kind, r in (g.get("changes") or {}).items():
        out.append((f"guardians: calls per change, {kind} (n={r['changes']})", str(r["calls_per_change"]), "—", "—"))
    n = g.get("nightly_pass", {})
    if n:
        out.append(
            (
                f"guardians: nightly pass calls ({n.get('students')} students)",
                f"{n.get('calls_total')} ({n.get('calls_per_student')} a student)",
                "—",
                "—",
            )
        )
    for who in ("poller", "applier"):
        peak = (g.get(f"{who}_memory") or {}).get("peak_mib")
        out.append(
            (
                f"guardians: peak memory (VmHWM), {who}",
                "n/a" if peak is None else f"{peak:.0f} MiB",
                "< 256 MiB",
                "—" if peak is None else ("yes" if peak < 256 else "NO"),
            )
        )
    inproc = g.get("in_process") or {}
    if inproc:
        again = inproc.get("again", {})
        out.append(
            (
                f"guardians: Firestore writes (commits) per new invitation (n={inproc.get('new_invitations')})",
                f"{inproc.get('writes_per_new_invitation')} ({inproc.get('commits_per_new_invitation')})",
                "—",
                "—",
            )
        )
        out.append(
            (
                "guardians: the same changes again: Firestore writes, Classroom calls",
                f"{again.get('firestore_writes')}, {again.get('classroom_calls')}",
                "0, 0",
                "yes" if again.get("firestore_writes") == 0 and again.get("classroom_calls") == 0 else "NO",
            )
        )
    lost = g.get("students_out_of_sync")
    out.append(("guardians: students out of sync with Clever's parents", str(lost), "0", "yes" if lost == 0 else "NO"))
    out.append(("guardians: scenario time", f"{g.get('seconds')} s", "—", "—"))
    return out


def main() -> int:
    """The scenario alone (scripts/bench runs it after its other phases): python
    scripts/lib/bench_guardians.py [quick|default|full]."""
    import sys

    from bench import ADMIN, DOMAIN, PROJECT, memory_of, say

    from tests.sims.emulators import start_emulators

    mode = sys.argv[1] if len(sys.argv) > 1 else "quick"
    pubsub, firestore = start_emulators(PROJECT)
    try:
        figures = measure((pubsub, firestore), PROJECT, DOMAIN, ADMIN, GUARDIAN_MODES[mode], 7, memory_of, say)
    finally:
        pubsub.stop()
        firestore.stop()
    for row in rows(figures):
        print(" | ".join(row))
    print(json.dumps(figures, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
