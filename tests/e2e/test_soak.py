"""Soak (issue 4, item 7): a few thousand changes through the real stack while Classroom fails.

The whole path of the other end-to-end tests (Clever simulator → poll_clever → Pub/Sub emulator,
ordered push → apply_roster_event → Classroom simulator, Firestore emulator): a district of 30
sections and 600 students is bootstrapped, then about 2,000 enrollment changes are made in Clever
and read by several polls. Throughout, the Classroom simulator answers about 10% of its calls 429
and 5% 500 (a seeded draw in its fault hook, so the run is reproducible up to the order in which
concurrent calls reach it).

Every change must be applied exactly once in effect: the final Classroom rosters equal Clever's
sections (minus users without a Google account), one course per section, and Firestore remembers,
for every (section, user) a change touched, the last Clever event about it. The figures (changes,
deliveries, redeliveries, faults, changes lost, differences) are printed and written to
/tmp/rostersync-soak.json.

The stack is the `world` of conftest.py with one setting more: the mass-change brake's minimum is
raised out of reach, since a soak's hundreds of removals a poll would (rightly) be held for an
administrator.
Once, the poll cursor in Firestore is put back two polls, so about 500 changes already applied
are published and delivered again, late and after newer ones.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import pytest

from tests.e2e.conftest import ADMIN, DOMAIN, PROJECT, World
from tests.sims.classroom_sim import ApiError, ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.district import make_district
from tests.sims.stack import LocalStack

pytestmark = pytest.mark.e2e

SEED = 20261207
SECTIONS, STUDENTS = 30, 600
ROUNDS, CHANGES_PER_ROUND = 8, 250  # 2,000 enrollment changes, one poll after each round
REPLAY_AT = 5  # before this round's poll the cursor is put back two polls: duplicates, delivered late
RATE_429, RATE_500 = 0.10, 0.05
TIME_BOX = 170.0  # seconds for the whole test; every wait is bounded by what is left of it
FIGURES = "/tmp/rostersync-soak.json"


@pytest.fixture
def soak_world(emulators):
    """conftest's `world`, with the brake out of reach (BRAKE_MIN_REMOVALS)."""
    with CleverSimulator() as clever, ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom:
        classroom.add_user(ADMIN, "District", "Admin")
        env = {
            "CLEVER_API_BASE": clever.base_url,
            "CLEVER_TOKEN": clever.token,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "POLL_TIME_BUDGET_SECONDS": "120",
            "CLASSROOM_CALLS_PER_MINUTE": "0",
            "BRAKE_MIN_REMOVALS": "1000000",
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            yield World(clever, classroom, stack)


class RandomFaults:
    """Wraps the simulator's fault hook: explicit injections first, then a seeded draw per call
    (not for the /batch envelope: its calls are drawn one by one)."""

    def __init__(self, sim: ClassroomSimulator, seed: int):
        self._inner = sim._take_fault
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: Counter = Counter()
        sim._take_fault = self  # the simulator calls it under its lock for every API call

    def __call__(self, method_id: str) -> ApiError | None:
        fault = self._inner(method_id)
        if fault is not None or method_id == "batch":
            return fault
        with self._lock:
            draw = self._rng.random()
            if draw < RATE_429:
                self.injected[429] += 1
                return ApiError(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
            if draw < RATE_429 + RATE_500:
                self.injected[500] += 1
                return ApiError(500, "INTERNAL", "Internal error encountered.")
        return None


def _alias(section_id: str) -> str:
    return f"d:clever-{section_id}"


def _make_changes(world: World, district, rng: random.Random, n: int, touched: dict) -> Counter:
    """n enrollment changes in Clever; `touched[(section, user)]` keeps the last event for each."""
    clever = world.clever
    broken = set(district.teachers_without_google)
    teachers = [t for t in district.teachers if t not in broken]
    kinds: Counter = Counter()
    made = 0
    while made < n:
        sid = rng.choice(district.sections)
        sec = clever.section(sid)
        roll = rng.random()
        if roll < 0.45:
            outside = [s for s in rng.sample(district.students, 20) if s not in sec["students"]]
            if not outside:
                continue
            user, event, kind = outside[0], None, "student_added"
            event = clever.add_student(sid, user)
        elif roll < 0.85:
            if len(sec["students"]) < 5:
                continue
            user, kind = rng.choice(sec["students"]), "student_removed"
            event = clever.remove_student(sid, user)
        elif roll < 0.93:
            others = [t for t in teachers if t not in sec["teachers"]]
            if not others or len(sec["teachers"]) >= 4:
                continue
            user, kind = rng.choice(others), "coteacher_added"
            event = clever.add_teacher(sid, user)
        else:
            if len(sec["teachers"]) < 2:
                continue
            user, kind = rng.choice(sec["teachers"][1:]), "coteacher_removed"
            event = clever.remove_teacher(sid, user)
        touched[(sid, user)] = event
        kinds[kind] += 1
        made += 1
    return kinds


def _expected(world: World, google: set[str]) -> dict[str, dict]:
    clever = world.clever

    def emails(ids):
        found = {(clever.user(u).get("email") or "").lower() for u in ids}
        return {e for e in found if e in google}

    out = {}
    for sid in clever.section_ids:
        sec = clever.section(sid)
        owner = (clever.user(sec["teacher"]).get("email") or "").lower()
        if owner in google:
            out[_alias(sid)] = {
                "name": sec["name"],
                "owner": owner,
                "state": "PROVISIONED",
                "teachers": emails(sec["teachers"]),
                "students": emails(sec["students"]),
            }
    return out


def _classroom_state(sim: ClassroomSimulator) -> tuple[dict[str, dict], list[str]]:
    out: dict[str, dict] = {}
    duplicates = []
    for course in sim.courses():
        aliases = [a for a in sim.aliases(course["id"]) if a.startswith("d:clever-")]
        if len(aliases) != 1 or aliases[0] in out:
            duplicates.append(f"course {course['id']} aliases {aliases}")
            continue
        out[aliases[0]] = sim.roster(course["id"])
    return out, duplicates


def _differences(expected: dict[str, dict], actual: dict[str, dict]) -> list[str]:
    out = []
    for alias in sorted(expected.keys() | actual.keys()):
        if alias not in actual:
            out.append(f"{alias}: missing")
        elif alias not in expected:
            out.append(f"{alias}: unexpected course")
        else:
            for key in ("name", "owner", "state"):
                if expected[alias][key] != actual[alias][key]:
                    out.append(f"{alias} {key}: {expected[alias][key]!r} != {actual[alias][key]!r}")
            for key in ("teachers", "students"):
                want, got = expected[alias][key], actual[alias][key]
                out += [f"{alias} {key}: missing {e}" for e in sorted(want - got)]
                out += [f"{alias} {key}: extra {e}" for e in sorted(got - want)]
    return out


def test_soak_thousands_of_changes_with_classroom_429s_and_500s(soak_world: World):
    world = soak_world
    started = time.monotonic()

    def left() -> float:
        remaining = TIME_BOX - (time.monotonic() - started)
        if remaining <= 5:
            raise TimeoutError(f"soak over its time box of {TIME_BOX:.0f} s")
        return remaining

    district = make_district(world.clever, seed=SEED, schools=3, sections=SECTIONS, students=STUDENTS)
    for email, first, last in district.google_accounts:
        world.classroom.add_user(email, first, last)
    google = {email.lower() for email, _, _ in district.google_accounts}
    faults = RandomFaults(world.classroom, SEED)
    rng = random.Random(SEED)

    polls = [world.stack.poll_and_wait(timeout=min(90.0, left()))]
    assert polls[0]["bootstrapped"]
    bootstrap_seconds = time.monotonic() - started
    touched: dict[tuple[str, str], str] = {}
    kinds: Counter = Counter()
    replayed = 0
    for n in range(ROUNDS):
        made = _make_changes(world, district, rng, CHANGES_PER_ROUND, touched)
        kinds += made
        if n == REPLAY_AT:
            # Duplicates, late: the cursor goes back two polls, so this poll publishes the changes of
            # those two polls again (already applied) along with its own.
            world.db().collection("sync_state").document("clever").update({"last_event_id": polls[-3]["cursor"]})
            replayed = polls[-1]["changes"] + polls[-2]["changes"]
        polls.append(world.stack.poll_and_wait(timeout=min(90.0, left())))
    polls.append(world.stack.poll_and_wait(timeout=min(30.0, left())))  # nothing new
    seconds = time.monotonic() - started

    # -- the end state ------------------------------------------------------------------------
    state, duplicates = _classroom_state(world.classroom)
    diffs = _differences(_expected(world, google), state)
    links = {d.id: d.to_dict() for d in world.db().collection("sections").stream()}
    lost, stale = [], []
    teacher_ids = set(district.teachers)
    for (sid, uid), event in touched.items():
        user = world.clever.user(uid)
        email = (user.get("email") or "").lower()
        sec = world.clever.section(sid)
        record = links.get(sid, {}).get("members", {}).get(uid)
        if _alias(sid) in state and email in google:
            role_key = "teachers" if uid in teacher_ids else "students"
            wanted = uid in sec[role_key]
            present = email in state[_alias(sid)][role_key]
            if wanted != present:
                lost.append(f"{sid} {uid}: Clever {'has' if wanted else 'dropped'} them, Classroom does not agree")
        if _alias(sid) in state and (record is None or record.get("event_id") != event):
            stale.append(f"{sid} {uid}: Firestore remembers {record and record.get('event_id')}, last event {event}")

    relay = world.stack.relay.counters()
    attempts = Counter(a.status for a in world.stack.relay.attempts)
    figures = {
        "seconds": round(seconds, 1),
        "bootstrap_seconds": round(bootstrap_seconds, 1),
        "sections": SECTIONS,
        "students": STUDENTS,
        "clever_changes": sum(kinds.values()),
        "clever_changes_by_kind": dict(kinds),
        "polls": len(polls),
        "roster_changes_published": sum(p["changes"] for p in polls),
        "duplicate_changes_injected": replayed,
        "messages_published": sum(p["published"] for p in polls),
        "pushes_delivered": relay["delivered"],
        "messages_acked": relay["acked"],
        "redeliveries": relay["delivered"] - relay["messages"],
        "pushes_failed": relay["failed"],
        "push_statuses": {str(k): v for k, v in sorted(attempts.items())},
        "classroom_calls": sum(world.classroom.calls.values()),
        "classroom_statuses": {str(k): v for k, v in sorted(world.classroom.statuses.items())},
        "faults_injected": {"429": faults.injected[429], "500": faults.injected[500]},
        "courses": len(state),
        "duplicate_courses": len(duplicates),
        "changes_lost": len(lost),
        "stale_member_records": len(stale),
        "final_state_differences": len(diffs),
    }
    with open(FIGURES, "w") as out:
        json.dump(figures, out, indent=2)
    print("\nsoak figures:", json.dumps(figures, indent=2))

    assert duplicates == []
    assert len(state) == SECTIONS - len(district.teachers_without_google)
    assert diffs == [], diffs[:20]
    assert lost == [], lost[:20]
    assert stale == [], stale[:20]
    assert figures["clever_changes"] == ROUNDS * CHANGES_PER_ROUND
    assert relay["acked"] == relay["messages"] == figures["messages_published"]
    total = sum(world.classroom.calls.values())
    assert faults.injected[429] > 0.05 * total and faults.injected[500] > 0.02 * total, figures
    assert polls[-1]["changes"] == 0
    assert replayed > 200 and figures["roster_changes_published"] >= figures["clever_changes"] + replayed
    assert seconds < TIME_BOX
