"""Crash consistency (issue 4, item 2): the work dies at each step between a side effect and the
record of it, the message is redelivered (or the poll runs again), and the end state is the same.

In process, with the real adapters: the Firestore emulator behind `FirestoreStore`, the Classroom
simulator over HTTP behind `ClassroomAdapter`, the Clever simulator behind `CleverClient`. A fault
hook wraps the adapters and raises `Killed` (a BaseException, like the process dying: no
`except Exception` in the product code may swallow it) once, at the chosen step:

- a: after Classroom's `courses.create` succeeded, before `FirestoreStore.save_link`;
- b: after member adds succeeded, before the save (one message, or every message of the run once);
- c: after the poller's publishes were confirmed, before `save_cursor` (bootstrap or events);
- d: in the middle of a batch of member adds: the simulator fails the `/batch` (or some calls in it)
  with 500 and the process dies while backing off to retry;
- e: between publishing two pages (of a bootstrap, or of events).

Pub/Sub stands in as a publisher that keeps the messages (the same JSON and packing as the real
one); every message published is delivered through `Applier.handle_message`, and one that did not
finish (killed, or "retry") is delivered again. A killed poll is run again from what Firestore holds.

Each run makes the same district and the same Clever changes (bootstrap, then two polls of changes:
adds, removes, a re-add, co-teachers, primary teacher changes, two renames of one section, a new
section, a deleted section, a student without a Google account) and must end with: the Classroom
state of the run without faults, which is also what Clever says now; exactly one course per alias
`d:clever-<section id>`; no member lost (Firestore's active members equal the Classroom roster);
every Clever event after the bootstrap carried by some applied change; the same open problems.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from rostersync.adapters.bus import pack_by_section
from rostersync.adapters.classroom import ClassroomAdapter, build_classroom_service
from rostersync.adapters.clever import CleverClient, CleverUserDirectory
from rostersync.app.applier import Applier
from rostersync.app.poller import Poller
from rostersync.config import load_settings
from rostersync.domain.brake import BrakeSettings
from rostersync.domain.changes import decode_message, encode_message, message_attributes
from rostersync.domain.links import course_alias
from rostersync.domain.ports import ADDED
from rostersync.domain.sources.clever_events import changes_from_event
from rostersync.retry import Deadline, RetryPolicy

from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.district import SampleDistrict, make_district
from tests.sims.emulators import FirestoreEmulator, ToolMissing, check_tools
from tests.unit.clever_payloads import EMAILS, SECTION, event, section
from tests.unit.fakes import FakeClassroom, FakeStore

PROJECT = "rostersync-crash"
DOMAIN = "district.example.org"
ADMIN = f"admin@{DOMAIN}"
SEED = 424242
PAGE_SIZE = 3  # Clever pages of 3: a bootstrap and a poll publish several pages


class Killed(BaseException):
    """The function instance died here (not an Exception: nothing may catch and carry on)."""


# -- the fault hook -----------------------------------------------------------------------------


@dataclass
class Fault:
    """Where to die: `step` (see STEPS), in which poll (0 the bootstrap, 1 and 2 the changes)."""

    step: str | None
    poll: int = 0
    sim: ClassroomSimulator | None = None
    current_poll: int = -1
    current_message: str = ""
    fired: int = 0
    # per unit of work (one message)
    created: bool = False
    added: bool = False
    armed_save: bool = False
    die_on_backoff: bool = False
    publishes: int = 0
    killed_messages: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    batch_before_kill: Counter = field(default_factory=Counter)  # HTTP statuses of the batch that died

    def here(self, step: str) -> bool:
        return self.step == step and self.current_poll == self.poll and not self.fired

    def kill(self, where: str) -> None:
        self.fired += 1
        self.notes.append(f"killed {where} (poll {self.current_poll}, message {self.current_message})")
        raise Killed(where)

    def new_unit(self) -> None:
        self.created = self.added = self.armed_save = False

    def backoff(self, seconds: float) -> None:
        """The adapters' retry sleep: the process dies while waiting to retry."""
        if self.die_on_backoff:
            self.die_on_backoff = False
            self.kill("while backing off after a failed batch of member adds")


class FaultyClassroom:
    """The Classroom adapter, noting what succeeded for the fault hook."""

    def __init__(self, inner: ClassroomAdapter, fault: Fault):
        self._inner = inner
        self._fault = fault

    def start_unit_of_work(self) -> None:
        self._fault.new_unit()
        self._inner.start_unit_of_work()

    def create_course(self, alias, name, owner_email):
        course = self._inner.create_course(alias, name, owner_email)
        self._fault.created = True
        if self._fault.here("a_after_create"):
            self._fault.armed_save = True
        return course

    def add_members(self, course_id, members):
        f = self._fault
        if len(members) > 1 and f.here("d_batch_500") and not f.die_on_backoff:
            f.sim.inject_errors("batch", 500, 1)  # the whole /batch request answers 500
            f.die_on_backoff = True
        if len(members) > 5 and f.here("d_batch_partial_500") and not f.die_on_backoff:
            students = sum(1 for role, _ in members if role == "student")
            if students > 3:
                # the first three student adds in the batch answer 500, the others succeed
                f.sim.inject_errors("classroom.courses.students.create", 500, 3)
                f.die_on_backoff = True
        before = Counter(f.sim.statuses)
        try:
            results = self._inner.add_members(course_id, members)
        except Killed:
            f.batch_before_kill = Counter(f.sim.statuses) - before
            raise
        if any(r == ADDED for r in results):
            f.added = True
            if f.here("b_after_adds") and not f.created:
                f.armed_save = True
        return results

    def __getattr__(self, name):
        return getattr(self._inner, name)


class FaultyStore:
    """The Firestore adapter, dying before a write when the hook says so."""

    def __init__(self, inner, fault: Fault):
        self._inner = inner
        self._fault = fault

    def save_link(self, before, after, problems=(), resolved=(), overrides=(), audit=(), withdrawn=(), touched=False):
        f = self._fault
        if f.armed_save:
            f.armed_save = False
            f.kill("after the Classroom calls, before save_link")
        if f.step == "b_every_message" and f.current_message not in f.killed_messages:
            f.killed_messages.add(f.current_message)
            f.notes.append(f"killed before save_link of {f.current_message}")
            raise Killed("before save_link")
        self._inner.save_link(
            before, after, problems, resolved, overrides, audit=audit, withdrawn=withdrawn, touched=touched
        )

    def save_cursor(self, cursor):
        if self._fault.here("c_before_cursor"):
            self._fault.kill("after the publishes were confirmed, before save_cursor")
        self._inner.save_cursor(cursor)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@dataclass
class Message:
    data: bytes
    attributes: dict[str, str]

    @property
    def key(self) -> str:
        return f"{self.attributes.get('section_id')}@{self.attributes.get('event_id')}:{len(self.data)}"


class CollectingPublisher:
    """Pub/Sub: keeps every message as the real publisher packs and encodes it; a publish returns
    once its messages are kept (confirmed). Dies between two publishes when the hook says so."""

    def __init__(self, fault: Fault):
        self.fault = fault
        self.messages: list[Message] = []

    def publish(self, changes) -> int:
        changes = list(changes)
        f = self.fault
        if changes and f.here("e_between_pages"):
            f.publishes += 1
            if f.publishes == 2:
                f.kill("between publishing two pages")
        groups = pack_by_section(changes)
        self.messages += [Message(encode_message(g), message_attributes(g)) for g in groups]
        return len(groups)


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    state: dict[str, dict]
    courses: int
    link_members: dict[str, set[str]]  # alias -> emails Firestore holds as active members
    event_ids: set[str]  # the Clever event ids the applied changes carried
    clever_event_ids: set[str]  # the sections.* events Clever made after the bootstrap
    expected: dict[str, dict]  # what Clever says now, as Classroom should hold it
    open_problems: set[str]
    overrides: set[str]
    kills: int
    notes: list[str]
    deliveries: Counter
    batch_before_kill: Counter


def _fast_retry(sleep: Callable[[float], None]) -> RetryPolicy:
    return RetryPolicy(base_delay=0.01, max_delay=0.05, sleep=sleep)


def _expected(clever: CleverSimulator, district: SampleDistrict, deleted: dict[str, dict]) -> dict[str, dict]:
    google = {email.lower() for email, _, _ in district.google_accounts}

    def emails(ids):
        found = {(clever.user(u).get("email") or "").lower() for u in ids}
        return {e for e in found if e in google}

    sections = {sid: (clever.section(sid), "PROVISIONED") for sid in clever.section_ids}
    sections |= {sid: (sec, "ARCHIVED") for sid, sec in deleted.items()}
    out = {}
    for sid, (sec, state) in sections.items():
        owner = (clever.user(sec["teacher"]).get("email") or "").lower()
        if owner not in google:
            continue  # Classroom refuses the owner: no course, a problem instead
        out[course_alias(sid)] = {
            "name": sec["name"],
            "owner": owner,
            "state": state,
            "teachers": emails(sec["teachers"]),
            "students": emails(sec["students"]),
        }
    return out


def _classroom_state(sim: ClassroomSimulator) -> tuple[dict[str, dict], int]:
    out: dict[str, dict] = {}
    courses = sim.courses()
    for course in courses:
        aliases = [a for a in sim.aliases(course["id"]) if a.startswith("d:clever-")]
        assert len(aliases) == 1, f"course {course['id']} has aliases {aliases}"
        assert aliases[0] not in out, f"two courses for {aliases[0]}"
        out[aliases[0]] = sim.roster(course["id"])
    return out, len(courses)


def _make_changes(clever: CleverSimulator, district: SampleDistrict, n: int, memo: dict) -> dict:
    """The Clever changes before poll `n` (1 or 2); returns the sections deleted {id: last object}."""
    broken = set(district.teachers_without_google)
    good_teachers = [t for t in district.teachers if t not in broken]
    good = [s for s in district.sections if clever.section(s)["teacher"] not in broken]
    no_google = district.students_without_google[0]

    def outside(sid, k):
        sec = clever.section(sid)
        return [s for s in district.students if s not in sec["students"] and s not in district.users_without_email][:k]

    def other_teacher(sid):
        sec = clever.section(sid)
        return next(t for t in good_teachers if t not in sec["teachers"])

    if n == 1:
        s0 = clever.section(good[0])
        for student in outside(good[0], 2):
            clever.add_student(good[0], student)
        memo["removed"] = s0["students"][:2]
        for student in memo["removed"]:
            clever.remove_student(good[0], student)
        clever.add_teacher(good[1], other_teacher(good[1]))
        clever.rename_section(good[1], clever.section(good[1])["name"] + " (A)")
        clever.set_primary_teacher(good[2], other_teacher(good[2]), keep_old_as_coteacher=True)
        clever.set_primary_teacher(good[3], other_teacher(good[3]), keep_old_as_coteacher=False)
        new = clever.add_section(
            "Robotics - Late - Period 8",
            good_teachers[0],
            students=outside(good[0], 8)[2:8],
            teachers=[good_teachers[0], good_teachers[1]],
            period="8",
        )
        memo["created"] = new
        clever.remove_student(good[4], clever.section(good[4])["students"][0])
        if no_google not in clever.section(good[4])["students"]:
            clever.add_student(good[4], no_google)
        return {}
    s0 = clever.section(good[0])
    clever.add_student(good[0], memo["removed"][0])  # back again
    clever.remove_student(good[0], s0["students"][-1])
    clever.rename_section(good[1], clever.section(good[1])["name"].replace(" (A)", " (B)"))
    doomed = clever.section(good[5])
    clever.delete_section(good[5])
    for student in outside(memo["created"], 2):
        clever.add_student(memo["created"], student)
    clever.set_primary_teacher(good[2], clever.section(good[2])["teachers"][1], keep_old_as_coteacher=True)
    return {good[5]: doomed}


def run_scenario(firestore_client, emulator: FirestoreEmulator, fault: Fault) -> Run:
    from rostersync.adapters.store import FirestoreStore

    emulator.reset(PROJECT)
    with CleverSimulator() as clever, ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as sim:
        district = make_district(clever, seed=SEED, schools=2, sections=8, students=120, teachers=6)
        sim.add_user(ADMIN, "District", "Admin")
        for email, first, last in district.google_accounts:
            sim.add_user(email, first, last)
        fault.sim = sim
        settings = dataclasses.replace(
            load_settings(),
            project=PROJECT,
            classroom_api_endpoint=sim.base_url,
            admin_subject=ADMIN,
            apply_time_budget_seconds=30.0,
            section_deleted_action="archive",
        )
        adapter = ClassroomAdapter(
            build_classroom_service(settings),
            settings.classroom_api_endpoint,
            retry=_fast_retry(fault.backoff),
            deadline_factory=lambda: Deadline(settings.apply_time_budget_seconds),
        )
        store = FaultyStore(FirestoreStore(firestore_client), fault)
        applier = Applier(store, FaultyClassroom(adapter, fault), settings.section_deleted_action)
        publisher = CollectingPublisher(fault)
        brake = BrakeSettings(  # as wiring.poller() builds it
            section_share=settings.brake_section_percent / 100,
            total_share=settings.brake_total_percent / 100,
            max_archives=settings.brake_max_archives,
            min_removals=settings.brake_min_removals,
        )
        deliveries: Counter = Counter()
        event_ids: set[str] = set()
        delivered = 0

        def deliver_new() -> None:
            nonlocal delivered
            while delivered < len(publisher.messages):
                message = publisher.messages[delivered]
                delivered += 1
                fault.current_message = message.key
                for _attempt in range(5):
                    deliveries["attempts"] += 1
                    try:
                        outcome = applier.handle_message(message.data, message.attributes)
                    except Killed:
                        deliveries["killed"] += 1
                        continue  # not acknowledged: Pub/Sub delivers it again
                    if outcome.status == "retry":
                        deliveries["retry"] += 1
                        continue
                    deliveries[outcome.status] += 1
                    event_ids.update(c.event_id for c in decode_message(message.data))
                    break
                else:
                    raise AssertionError(f"message {message.key} never applied: {fault.notes}")

        def poll(n: int) -> None:
            fault.current_poll = n
            fault.publishes = 0
            for _attempt in range(3):
                deadline = Deadline(60)
                client = CleverClient(
                    clever.base_url, clever.token, PAGE_SIZE, retry=_fast_retry(lambda s: None), deadline=deadline
                )
                poller = Poller(client, CleverUserDirectory(client), store, publisher, deadline, brake)
                try:
                    result = poller.poll()
                except Killed:
                    deliver_new()  # what was confirmed before the kill is delivered all the same
                    continue
                assert result.outcome == "ok" and result.bad_events == 0, result
                deliver_new()
                return
            raise AssertionError(f"poll {n} never finished: {fault.notes}")

        poll(0)  # the bootstrap
        events_before = len(clever.events)
        memo: dict = {}
        deleted: dict[str, dict] = {}
        for n in (1, 2):
            deleted |= _make_changes(clever, district, n, memo)
            poll(n)
        poll(3)  # nothing new
        clever_events = {e["id"] for e in clever.events[events_before:] if e["type"].startswith("sections.")}

        state, courses = _classroom_state(sim)
        links = {d.id: d.to_dict() for d in firestore_client.collection("sections").stream()}
        link_members = {
            course_alias(sid): {m["email"] for m in link.get("members", {}).values() if m.get("status") == "active"}
            for sid, link in links.items()
            if link.get("course_id")
        }
        problems = {d.id for d in firestore_client.collection("problems").stream() if d.to_dict().get("open")}
        overrides = {d.id for d in firestore_client.collection("overrides").stream()}
        return Run(
            state=state,
            courses=courses,
            link_members=link_members,
            event_ids=event_ids,
            clever_event_ids=clever_events,
            expected=_expected(clever, district, deleted),
            open_problems=problems,
            overrides=overrides,
            kills=fault.fired + len(fault.killed_messages),
            notes=fault.notes,
            deliveries=deliveries,
            batch_before_kill=fault.batch_before_kill,
        )


def differences(expected: dict[str, dict], actual: dict[str, dict]) -> list[str]:
    out = []
    for alias in sorted(expected.keys() | actual.keys()):
        if alias not in actual:
            out.append(f"{alias}: missing")
        elif alias not in expected:
            out.append(f"{alias}: unexpected course {actual[alias]}")
        else:
            for key in ("name", "owner", "state", "teachers", "students"):
                want, got = expected[alias][key], actual[alias][key]
                if want != got:
                    if isinstance(want, set):
                        out.append(f"{alias} {key}: missing {sorted(want - got)}, extra {sorted(got - want)}")
                    else:
                        out.append(f"{alias} {key}: {want!r} != {got!r}")
    return out


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def firestore():
    try:
        check_tools()
    except ToolMissing as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))
    from google.cloud import firestore as gfirestore

    with FirestoreEmulator() as emulator:
        saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host  # the client reads it when it is made
        try:
            client = gfirestore.Client(project=PROJECT)
        finally:
            if saved is None:
                del os.environ["FIRESTORE_EMULATOR_HOST"]
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = saved
        yield client, emulator


@pytest.fixture(scope="module")
def reference(firestore):
    client, emulator = firestore
    return run_scenario(client, emulator, Fault(None))


# -- the tests ----------------------------------------------------------------------------------


def test_the_run_without_faults_is_what_clever_says(reference):
    assert reference.kills == 0
    assert differences(reference.expected, reference.state) == []
    assert reference.courses == len(reference.expected)
    assert reference.clever_event_ids and reference.clever_event_ids <= reference.event_ids
    assert reference.open_problems, "the district's users without Google are recorded"
    assert reference.overrides == set()
    assert any(r["state"] == "ARCHIVED" for r in reference.state.values())
    for alias, members in reference.link_members.items():
        roster = reference.state[alias]
        assert members == roster["teachers"] | roster["students"], alias


# (step, poll) pairs; poll 0 is the bootstrap, 1 and 2 the polls after Clever changes.
STEPS = [
    pytest.param("a_after_create", 0, id="a-create-then-die-bootstrap"),
    pytest.param("a_after_create", 1, id="a-create-then-die-new-section"),
    pytest.param("b_after_adds", 1, id="b-adds-then-die"),
    pytest.param("b_after_adds", 2, id="b-adds-then-die-second-poll"),
    pytest.param("b_every_message", 0, id="b-every-message-dies-once-before-its-save"),
    pytest.param("c_before_cursor", 0, id="c-publish-then-die-before-cursor-bootstrap"),
    pytest.param("c_before_cursor", 1, id="c-publish-then-die-before-cursor-events"),
    pytest.param("c_before_cursor", 2, id="c-publish-then-die-before-cursor-removals-and-deletion"),
    pytest.param("d_batch_500", 0, id="d-batch-500-then-die-bootstrap"),
    pytest.param("d_batch_500", 1, id="d-batch-500-then-die-new-section"),
    pytest.param("d_batch_partial_500", 0, id="d-part-of-batch-500-then-die"),
    pytest.param("e_between_pages", 0, id="e-die-between-bootstrap-pages"),
    pytest.param("e_between_pages", 1, id="e-die-between-event-pages"),
]


def assert_converged(run: Run, reference: Run, names_too: bool = True) -> None:
    diffs = differences(reference.state, run.state)
    if not names_too:
        diffs = [d for d in diffs if " name: " not in d]
    # the same end state as without faults, which is what Clever says
    assert diffs == []
    if names_too:
        assert differences(run.expected, run.state) == []
    # no duplicate course: one per alias, and no other course
    assert run.courses == len(run.state) == len(reference.state)
    # no member lost: Firestore's record of each course matches Classroom
    for alias, members in run.link_members.items():
        roster = run.state[alias]
        assert members == roster["teachers"] | roster["students"], alias
    assert run.link_members == reference.link_members
    # no event skipped: every Clever section event after the bootstrap reached the applier
    assert run.clever_event_ids == reference.clever_event_ids
    assert run.clever_event_ids <= run.event_ids, sorted(run.clever_event_ids - run.event_ids)
    # nothing extra recorded: the same open problems, no teacher override invented
    assert run.open_problems == reference.open_problems
    if names_too:
        assert run.overrides == set()


@pytest.mark.parametrize(("step", "poll"), STEPS)
def test_redelivery_after_a_kill_converges(firestore, reference, step, poll):
    client, emulator = firestore
    run = run_scenario(client, emulator, Fault(step, poll))
    print(f"{step} poll {poll}: {run.kills} kills, deliveries {dict(run.deliveries)}; {run.notes[:3]}")
    assert run.kills >= 1, f"the fault {step} in poll {poll} never fired"
    if step == "d_batch_partial_500":
        # the kill came in the middle: part of the batch was added, part failed
        assert run.batch_before_kill[200] > 0 and run.batch_before_kill[500] == 3, run.batch_before_kill
    assert_converged(run, reference)


def test_every_message_killed_once_before_its_save_converges_apart_from_the_renamed_name(firestore, reference):
    """The xfail case above, checked for everything but the course name the bug leaves behind."""
    client, emulator = firestore
    run = run_scenario(client, emulator, Fault("b_every_message"))
    assert run.kills == run.deliveries["applied"] >= 15
    assert_converged(run, reference, names_too=False)
    # what the bug leaves: the second rename is not applied, and a "teacher renamed" override
    renamed = [d for d in differences(reference.state, run.state) if " name: " in d]
    assert len(renamed) <= 1, renamed
    assert {key.split("__")[1] for key in run.overrides} <= {"name"}


# -- the rename bug on its own (in-memory fakes) ------------------------------------------------


class _DieBeforeSave(FakeStore):
    def __init__(self):
        super().__init__()
        self.die_once = False

    def save_link(self, before, after, problems=(), resolved=(), overrides=(), audit=(), withdrawn=(), touched=False):
        if self.die_once:
            self.die_once = False
            raise Killed("before save_link")
        super().save_link(
            before, after, problems, resolved, overrides, audit=audit, withdrawn=withdrawn, touched=touched
        )


def _ev(n: int) -> str:
    return f"6553a0f27d0c8a0001c{n:05d}"


def _deliver_until_acked(applier: Applier, change) -> None:
    for _ in range(3):
        try:
            outcome = applier.handle_message(change.to_json(), change.attributes())
        except Killed:
            continue
        assert outcome.status == "applied", outcome
        return
    raise AssertionError("never applied")


def test_a_rename_redelivered_after_a_crash_before_its_save_is_not_taken_for_a_teachers_rename():
    classroom = FakeClassroom(accounts=EMAILS.values())
    store = _DieBeforeSave()
    applier = Applier(store, classroom)
    alias = course_alias(SECTION)
    [wanted] = changes_from_event(event(_ev(1), "sections.created", section(name="Algebra I")), EMAILS)
    _deliver_until_acked(applier, wanted)
    [first] = changes_from_event(
        event(_ev(2), "sections.updated", section(name="Algebra I (A)"), {"name": "Algebra I"}), EMAILS
    )
    store.die_once = True
    _deliver_until_acked(applier, first)  # renamed in Classroom, killed before the save, redelivered
    assert classroom.roster(alias)["name"] == "Algebra I (A)"
    [second] = changes_from_event(
        event(_ev(3), "sections.updated", section(name="Algebra I (B)"), {"name": "Algebra I (A)"}), EMAILS
    )
    _deliver_until_acked(applier, second)
    assert store.overrides == {}, "no teacher renamed anything"
    assert classroom.roster(alias)["name"] == "Algebra I (B)"
