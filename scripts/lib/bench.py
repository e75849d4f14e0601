"""The benchmark of issue 7 ("Speed and scale"): latency, API economy, bootstrap, throughput under quota.

Run by scripts/bench. Everything runs on this machine: the Pub/Sub and Firestore emulators, both Cloud
Functions under functions-framework, and the Clever and Classroom simulators. The synthetic district is
generated from a seed, so two runs with the same flags measure the same district and the same changes.

Measurements (each phase runs on the state the previous one left):

1. Bootstrap: the first poll of an empty Firestore reads every section; Clever requests, Classroom calls
   and batch requests, the time to the last change applied, and peak memory (VmHWM) of both functions.
2. Latency: single changes (one poll each) and a burst of changes (one poll), from the start of the
   poll that sees them to the push relay's finish time of the message's acknowledged delivery.
3. API economy: Classroom calls per applied change for the burst; an idle poll through the stack;
   Firestore operations per applied change and per idle poll, counted in-process (the emulator does not
   count them) by running the real Poller and Applier on the emulator through a counting proxy.
4. Throughput under quota: the Classroom simulator's per-minute quota scaled down, more single-write
   changes than the quota allows, successful writes per whole quota window as a share of the quota,
   429s seen, and whether every change arrived.

5. Guardians (issue 17, bench_guardians.py): every student of a smaller district with two parents,
   GUARDIANS=invite, on the same emulators (reset) with stacks of their own: Classroom calls for the
   bootstrap and per guardian change, the nightly pass's, and peak memory of both functions.

6. With --full, also the real-shaped district of issue 12 (run_scale_tests): the `full` tests of
   tests/e2e/test_scale.py, with the largest section and single poll shown to arrive whole and the
   peak memory of the poller and the applier.

Timings are reported, never asserted: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.district import make_district
from tests.sims.emulators import ToolMissing, check_tools, start_emulators
from tests.sims.stack import FunctionServer, LocalStack

PROJECT = "rostersync-bench"
DOMAIN = "district.example.org"
ADMIN = f"admin@{DOMAIN}"
MIB = 1024 * 1024
QUOTA_WINDOW = 60.0  # the Classroom simulator's moving window, as Classroom's per-minute quotas


@dataclass(frozen=True)
class Mode:
    name: str
    schools: int
    sections: int
    students: int
    teachers: int | None
    students_per_section: tuple[int, int]
    singles: int  # single changes, one poll each
    burst: int  # changes in the burst, one poll
    sample: int  # changes applied in-process for the Firestore count
    quota_per_minute: int
    quota_windows: int  # whole 60-s windows the throughput is measured over (0: too short to say)
    quota_changes: int  # single-write changes pushed under the quota
    quota_probe_seconds: float  # with quota_windows 0: how long to run under the quota
    timeout_scale: float = 1.0


MODES = {
    "quick": Mode(
        "quick", schools=2, sections=16, students=240, teachers=None, students_per_section=(12, 20),
        singles=3, burst=100, sample=30, quota_per_minute=30, quota_windows=0, quota_changes=45,
        quota_probe_seconds=8.0,
    ),
    "default": Mode(
        "default", schools=3, sections=300, students=6000, teachers=None, students_per_section=(18, 32),
        singles=10, burst=1000, sample=200, quota_per_minute=300, quota_windows=2, quota_changes=750,
        quota_probe_seconds=0.0, timeout_scale=3.0,
    ),
    "full": Mode(
        "full", schools=25, sections=2000, students=50000, teachers=2500, students_per_section=(60, 90),
        singles=10, burst=1000, sample=300, quota_per_minute=1200, quota_windows=2, quota_changes=3000,
        quota_probe_seconds=0.0, timeout_scale=20.0,
    ),
}  # fmt: skip


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "p95": round(percentile(values, 95), 3),
        "max": round(max(values), 3),
    }


def total(counter: Counter | dict) -> int:
    return int(sum(counter.values()))


def memory_of(pids: Iterable[int]) -> dict[str, Any]:
    """VmHWM (peak resident) and VmRSS of each live process, in MiB; `peak_mib` is the largest."""
    per_pid = {}
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        fields = {}
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = round(int(value.split()[0]) * 1024 / MIB, 1)
        if fields:
            per_pid[str(pid)] = fields
    peak = max((f.get("VmHWM", 0.0) for f in per_pid.values()), default=None)
    return {"peak_mib": peak, "processes": per_pid}


# --------------------------------------------------------------------------------------------------
# Simulator access, tolerant of the small differences between the simulators' result shapes


def email_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item.lower()
    if isinstance(item, dict):
        for key in ("email", "emailAddress", "userId"):
            if isinstance(item.get(key), str):
                return item[key].lower()
        profile = item.get("profile")
        if isinstance(profile, dict) and isinstance(profile.get("emailAddress"), str):
            return profile["emailAddress"].lower()
    return None


def emails_of(items: Iterable[Any]) -> set[str]:
    return {e for e in (email_of(i) for i in items or ()) if e}


def section_alias(section_id: str) -> str:
    return f"d:clever-{section_id}"


def classroom_roster(classroom: ClassroomSimulator, section_id: str) -> dict | None:
    try:
        return classroom.roster(section_alias(section_id))
    except (KeyError, LookupError, ValueError):
        return None


def classroom_write_calls(calls: Counter | dict) -> int:
    return sum(n for method, n in calls.items() if not method.endswith((".get", ".list")))


class QuotaLog:
    """Wraps the Classroom simulator's quota check to record every charged call: when, and whether
    the quota let it through (the simulator counts calls, 429s included, but not the 429s alone)."""

    def __init__(self, classroom: ClassroomSimulator):
        self.events: list[tuple[float, bool]] = []
        self._lock = threading.Lock()
        charge = classroom._charge

        def counted_charge():
            error = charge()
            if classroom._quota is not None:
                with self._lock:
                    self.events.append((time.monotonic(), error is None))
            return error

        classroom._charge = counted_charge

    def clear(self) -> None:
        with self._lock:
            self.events.clear()

    def rejected(self) -> int:
        with self._lock:
            return sum(1 for _, ok in self.events if not ok)

    def accepted_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t, ok in self.events if ok and start <= t < end)

    def first(self) -> float | None:
        with self._lock:
            return self.events[0][0] if self.events else None


# --------------------------------------------------------------------------------------------------
# Seeded roster changes in Clever


@dataclass
class ChangeMaker:
    """Makes roster changes in the Clever simulator, each one a single Classroom write when applied:
    a student or co-teacher added or removed, or a section renamed. Only users with a Google account
    and an email, and only sections that have a course, are touched; within one batch no (section,
    user) pair is touched twice, so every change stands on its own."""

    clever: CleverSimulator
    sections: list[str]
    good_students: list[str]
    good_teachers: list[str]
    rng: random.Random
    renames: Counter = field(default_factory=Counter)
    touched_sections: set[str] = field(default_factory=set)
    _cursor: int = 0

    def _next_section(self) -> str:
        section = self.sections[self._cursor % len(self.sections)]
        self._cursor += 1
        return section

    def make(self, n: int, mix: bool = True, kinds: tuple[str, ...] = ()) -> Counter:
        done: Counter = Counter()
        touched: set[tuple[str, str]] = set()
        good_students = set(self.good_students)
        good_teachers = set(self.good_teachers)
        attempts = 0
        while sum(done.values()) < n:
            attempts += 1
            if attempts > n * 20:
                raise RuntimeError(f"could only make {sum(done.values())} of {n} changes: {dict(done)}")
            sid = self._next_section()
            section = self.clever.section(sid)
            roll = self.rng.random() if mix else 1.0
            if kinds:
                kind = kinds[sum(done.values()) % len(kinds)]
            elif roll < 0.05:
                kind = "rename"
            elif roll < 0.15:
                kind = "teacher"
            else:
                kind = "student"
            if kind == "rename":
                if (sid, "name") in touched:
                    continue
                self.renames[sid] += 1
                base = section["name"].split(" ~", 1)[0]
                self.clever.rename_section(sid, f"{base} ~{self.renames[sid]}")
                touched.add((sid, "name"))
                done["rename"] += 1
            elif kind == "teacher":
                primary = section.get("teacher")
                current = [t for t in section.get("teachers") or [] if t != primary]
                removable = [t for t in current if t in good_teachers and (sid, t) not in touched]
                if removable and self.rng.random() < 0.5:
                    teacher = self.rng.choice(removable)
                    self.clever.remove_teacher(sid, teacher)
                    done["teacher_removed"] += 1
                else:
                    teacher = self._pick(
                        self.good_teachers, set(section.get("teachers") or []) | {primary}, sid, touched
                    )
                    if teacher is None:
                        continue
                    self.clever.add_teacher(sid, teacher)
                    done["teacher_added"] += 1
                touched.add((sid, teacher))
            else:
                enrolled = list(section.get("students") or [])
                removable = [s for s in enrolled if s in good_students and (sid, s) not in touched]
                if kind == "student_removed" or (
                    kind == "student" and removable and len(enrolled) > 5 and self.rng.random() < 0.5
                ):
                    if not removable:
                        continue
                    student = self.rng.choice(removable)
                    self.clever.remove_student(sid, student)
                    done["student_removed"] += 1
                else:
                    student = self._pick(self.good_students, set(enrolled), sid, touched)
                    if student is None:
                        continue
                    self.clever.add_student(sid, student)
                    done["student_added"] += 1
                touched.add((sid, student))
            self.touched_sections.add(sid)
        return done

    def _pick(self, pool: list[str], exclude: set[str], sid: str, touched: set) -> str | None:
        for _ in range(50):
            candidate = self.rng.choice(pool)
            if candidate not in exclude and (sid, candidate) not in touched:
                return candidate
        return None


# --------------------------------------------------------------------------------------------------
# Counting Firestore operations in-process


class CountingFirestoreApi:
    """Stands in for a firestore.Client's GAPIC client and counts what goes over the wire: RPCs by
    method, documents read (each document asked for or returned by a query: what Firestore bills) and
    documents written (each write in a commit)."""

    def __init__(self, api: Any):
        self._api = api
        self.rpcs: Counter = Counter()
        self.reads = 0
        self.writes = 0
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[int, int, int]:
        return self.reads, self.writes, total(self.rpcs)

    def _count(self, method: str, reads: int = 0, writes: int = 0) -> None:
        with self._lock:
            self.rpcs[method] += 1
            self.reads += reads
            self.writes += writes

    @staticmethod
    def _field(request: Any, name: str) -> Any:
        if isinstance(request, dict):
            return request.get(name)
        return getattr(request, name, None)

    def commit(self, *args, request=None, **kwargs):
        self._count("commit", writes=len(self._field(request, "writes") or []))
        return self._api.commit(*args, request=request, **kwargs)

    def batch_get_documents(self, *args, request=None, **kwargs):
        self._count("batch_get_documents", reads=len(self._field(request, "documents") or []))
        return self._api.batch_get_documents(*args, request=request, **kwargs)

    def run_query(self, *args, **kwargs):
        self._count("run_query")
        counter = self

        def results():
            returned = 0
            for response in self._api.run_query(*args, **kwargs):
                if getattr(response, "document", None) is not None and response.document.name:
                    returned += 1
                yield response
            with counter._lock:
                counter.reads += max(1, returned)  # an empty query is billed one read

        return results()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if callable(attr) and not name.startswith("_"):

            def counted(*args, **kwargs):
                self._count(name)
                return attr(*args, **kwargs)

            return counted
        return attr


def counting_firestore_client(project: str):
    from google.cloud import firestore

    client = firestore.Client(project=project)
    counter = CountingFirestoreApi(client._firestore_api)
    client._firestore_api_internal = counter  # the attribute behind the lazily built _firestore_api
    return client, counter


class CapturingPublisher:
    """The poller's publisher in-process: keeps the changes instead of sending them to Pub/Sub."""

    def __init__(self) -> None:
        self.changes: list = []

    def publish(self, changes) -> int:
        changes = list(changes)
        self.changes += changes
        return len(changes)


# --------------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, mode: Mode, seed: int, page_size: int | None):
        self.mode = mode
        self.seed = seed
        self.page_size = page_size
        self.rng = random.Random(seed)
        self.results: dict[str, Any] = {"mode": mode.name, "seed": seed}
        self.clever: CleverSimulator | None = None
        self.classroom: ClassroomSimulator | None = None
        self.stack: LocalStack | None = None
        self.district = None
        self.maker: ChangeMaker | None = None

    # -- helpers -------------------------------------------------------------------------------

    def timeout(self, seconds: float) -> float:
        return seconds * self.mode.timeout_scale

    def fresh_relay(self) -> None:
        self.stack.relay.reset()
        self.stack.published_total = 0

    def poll_and_time(self, timeout: float) -> tuple[dict, float, list[float], float]:
        """One poll through the stack and the wait for everything it published: the poll's answer,
        the poll's start (monotonic), each message's latency from that start to its acknowledged
        delivery, and how long the poll request itself took."""
        self.fresh_relay()
        started = time.monotonic()
        result = self.stack.poll(timeout=timeout)
        poll_seconds = time.monotonic() - started
        self.stack.published_total = result["published"]
        self.stack.relay.wait_for(result["published"], timeout=timeout)
        return result, started, self.acked_latencies(started), poll_seconds

    def acked_latencies(self, started: float) -> list[float]:
        finished: dict[str, float] = {}
        for attempt in list(self.stack.relay.attempts):
            if 200 <= attempt.status < 300:
                finished.setdefault(attempt.message_id, attempt.finished)
        return [t - started for t in finished.values()]

    def expected_roster(self, section_id: str) -> dict[str, set[str]]:
        """What Classroom should hold for a section: its Clever members with an email and a Google
        account (the owner counted among the teachers)."""
        section = self.clever.section(section_id)
        google = self.google_emails

        def good(ids) -> set[str]:
            out = set()
            for uid in ids or ():
                email = (self.clever.user(uid) or {}).get("email")
                if email and email.lower() in google:
                    out.add(email.lower())
            return out

        teachers = set(section.get("teachers") or [])
        if section.get("teacher"):
            teachers.add(section["teacher"])
        return {"students": good(section.get("students")), "teachers": good(teachers)}

    def out_of_sync(self, section_ids: Iterable[str]) -> list[dict]:
        differences = []
        for sid in section_ids:
            roster = classroom_roster(self.classroom, sid)
            if roster is None:
                differences.append({"section": sid, "problem": "no course"})
                continue
            want = self.expected_roster(sid)
            have = {
                "students": emails_of(roster.get("students")),
                "teachers": emails_of(roster.get("teachers")) | emails_of([roster.get("owner")]),
            }
            for role in ("students", "teachers"):
                if want[role] != have[role]:
                    differences.append(
                        {
                            "section": sid,
                            "role": role,
                            "missing": sorted(want[role] - have[role])[:5],
                            "extra": sorted(have[role] - want[role])[:5],
                        }
                    )
        return differences

    # -- set-up --------------------------------------------------------------------------------

    def make_district(self) -> None:
        m = self.mode
        say(f"generating the {m.name} district (seed {self.seed}): {m.sections} sections, {m.students} students")
        started = time.monotonic()
        kwargs: dict[str, Any] = dict(
            seed=self.seed,
            schools=m.schools,
            sections=m.sections,
            students=m.students,
            students_per_section=m.students_per_section,
            domain=DOMAIN,
        )
        if m.teachers is not None:
            kwargs["teachers"] = m.teachers
        d = self.district = make_district(self.clever, **kwargs)
        for email, first, last in d.google_accounts:
            self.classroom.add_user(email, first, last)
        self.google_emails = {email.lower() for email, _, _ in d.google_accounts}
        enrollments = sum(len(self.clever.section(s).get("students") or []) for s in d.sections)
        self.results["district"] = {
            "schools": len(d.schools),
            "sections": len(d.sections),
            "teachers": len(d.teachers),
            "students": len(d.students),
            "enrollments": enrollments,
            "google_accounts": len(d.google_accounts),
            "generated_seconds": round(time.monotonic() - started, 1),
        }
        say(f"district: {self.results['district']}")

    def make_change_maker(self) -> None:
        d = self.district
        no_google = set(getattr(d, "students_without_google", ())) | set(getattr(d, "teachers_without_google", ()))
        no_email = set(getattr(d, "users_without_email", ()))

        def good(uid: str) -> bool:
            email = (self.clever.user(uid) or {}).get("email")
            return uid not in no_google and uid not in no_email and bool(email) and email.lower() in self.google_emails

        with_course = [s for s in d.sections if classroom_roster(self.classroom, s) is not None]
        self.rng.shuffle(with_course)
        self.maker = ChangeMaker(
            clever=self.clever,
            sections=with_course,
            good_students=sorted(s for s in d.students if good(s)),
            good_teachers=sorted(t for t in d.teachers if good(t)),
            rng=self.rng,
        )
        self.results["district"]["sections_with_course"] = len(with_course)

    # -- 1. bootstrap --------------------------------------------------------------------------

    def bootstrap(self) -> None:
        say("bootstrap: the first poll reads the whole district")
        self.classroom.reset_counters()
        clever_before = Counter(self.clever.requests)
        result, _started, latencies, poll_seconds = self.poll_and_time(self.timeout(300))
        total_seconds = max(latencies, default=poll_seconds)
        calls = Counter(self.classroom.calls)
        clever_requests = Counter(self.clever.requests) - clever_before
        d = self.results["district"]
        courses = len([c for c in self.classroom.courses()])
        self.results["bootstrap"] = {
            "published": result["published"],
            "sections_read": result.get("sections_read"),
            "clever_requests": total(clever_requests),
            "clever_requests_by_kind": dict(clever_requests),
            "clever_page_size": self.page_size or 1000,
            "classroom_calls": total(calls),
            "classroom_calls_by_method": dict(calls),
            "classroom_batch_requests": int(self.classroom.batch_requests),
            "courses_created": courses,
            "poll_seconds": round(poll_seconds, 2),
            "total_seconds": round(total_seconds, 2),
            "redeliveries": self.stack.relay.counters()["failed"],
            "poller_memory": memory_of(self.stack.poller.pids()),
            "applier_memory": memory_of(self.stack.applier.pids()),
            # through one admin at Classroom's 1,200 calls a minute
            "minutes_at_one_admin_quota": round(total(calls) / 1200, 1),
        }
        say(
            f"bootstrap: {result['published']} changes, {total(calls)} Classroom calls "
            f"({self.classroom.batch_requests} batch requests), {total_seconds:.1f} s; enrollments {d['enrollments']}"
        )

    # -- 2. latency and API economy through the stack -----------------------------------------

    def latency(self) -> None:
        say(f"latency: {self.mode.singles} single changes, one poll each")
        singles: list[float] = []
        single_polls: list[float] = []
        for _ in range(self.mode.singles):
            self.maker.make(1, mix=False, kinds=("student_added",))
            _result, _started, latencies, poll_seconds = self.poll_and_time(self.timeout(60))
            singles += latencies
            single_polls.append(poll_seconds)
        say(f"latency: a burst of {self.mode.burst} changes in one poll")
        made = self.maker.make(self.mode.burst)
        self.classroom.reset_counters()
        result, _started, latencies, poll_seconds = self.poll_and_time(self.timeout(300))
        calls = Counter(self.classroom.calls)
        relay = self.stack.relay.counters()
        self.results["latency"] = {
            "single": summary(singles) | {"poll_seconds": summary(single_polls)},
            "burst": summary(latencies)
            | {
                "changes_made": dict(made),
                "published": result["published"],
                "changes": result.get("changes", result["published"]),
                "events_read": result.get("events_read"),
                "poll_seconds": round(poll_seconds, 2),
                "redeliveries": relay["failed"],
                "max_in_flight": self.stack.relay.max_in_flight,
            },
        }
        self.results["economy"] = {
            "burst_classroom_calls": total(calls),
            "burst_classroom_calls_by_method": dict(calls),
            "burst_changes": result.get("changes", result["published"]),
            "burst_messages": result["published"],
            "classroom_calls_per_change": round(total(calls) / max(1, result.get("changes", result["published"])), 3),
        }
        say("idle poll through the stack")
        self.classroom.reset_counters()
        idle, _, _, idle_seconds = self.poll_and_time(self.timeout(60))
        self.results["economy"]["idle_poll_stack"] = {
            "published": idle["published"],
            "classroom_calls": total(Counter(self.classroom.calls)),
            "seconds": round(idle_seconds, 2),
        }

    # -- 3. Firestore operations, in-process ---------------------------------------------------

    def firestore_ops(self) -> None:
        from rostersync.adapters.classroom import ClassroomAdapter, build_classroom_service
        from rostersync.adapters.clever import CleverClient, CleverUserDirectory
        from rostersync.adapters.store import FirestoreStore
        from rostersync.app.applier import Applier
        from rostersync.app.poller import Poller
        from rostersync.config import load_settings
        from rostersync.retry import Deadline

        say(f"Firestore operations, in-process: {self.mode.sample} changes, then an idle poll")
        os.environ.update(
            {
                "GOOGLE_CLOUD_PROJECT": PROJECT,
                "FIRESTORE_EMULATOR_HOST": self.stack.firestore.host,
                "CLEVER_API_BASE": self.clever.base_url,
                "CLEVER_TOKEN": self.clever.token,
                "CLASSROOM_API_ENDPOINT": self.classroom.base_url,
                "ADMIN_SUBJECT": ADMIN,
            }
        )
        settings = load_settings()
        client, counter = counting_firestore_client(PROJECT)
        store = FirestoreStore(client)

        def poller() -> tuple[Poller, CapturingPublisher]:
            deadline = Deadline(settings.poll_time_budget_seconds)
            clever = CleverClient(
                settings.clever_api_base, settings.clever_token, self.page_size or 1000, deadline=deadline
            )
            publisher = CapturingPublisher()
            return Poller(clever, CleverUserDirectory(clever), store, publisher, deadline), publisher

        made = self.maker.make(self.mode.sample)
        before = counter.snapshot()
        p, publisher = poller()
        poll_result = p.poll()
        after = counter.snapshot()
        busy_poll = {"reads": after[0] - before[0], "writes": after[1] - before[1], "rpcs": after[2] - before[2]}

        adapter = ClassroomAdapter(
            build_classroom_service(settings),
            settings.classroom_api_endpoint,
            deadline_factory=lambda: Deadline(settings.apply_time_budget_seconds),
        )
        applier = Applier(store, adapter, settings.section_deleted_action)
        self.classroom.reset_counters()
        per_change_ops: list[int] = []
        per_change_rpcs: list[int] = []
        per_change_calls: list[int] = []
        statuses: Counter = Counter()
        for change in publisher.changes:
            before = counter.snapshot()
            calls_before = total(Counter(self.classroom.calls))
            outcome = applier.handle_message(change.to_json(), change.attributes())
            after = counter.snapshot()
            statuses[outcome.status] += 1
            per_change_ops.append((after[0] - before[0]) + (after[1] - before[1]))
            per_change_rpcs.append(after[2] - before[2])
            per_change_calls.append(total(Counter(self.classroom.calls)) - calls_before)

        self.classroom.reset_counters()
        before = counter.snapshot()
        p, _ = poller()
        idle_result = p.poll()
        after = counter.snapshot()
        n = max(1, len(per_change_ops))
        self.results["economy"]["in_process"] = {
            "changes_made": dict(made),
            "changes_applied": len(per_change_ops),
            "outcomes": dict(statuses),
            "firestore_ops_per_change": round(sum(per_change_ops) / n, 3),
            "firestore_ops_per_change_max": max(per_change_ops, default=0),
            "firestore_rpcs_per_change": round(sum(per_change_rpcs) / n, 3),
            "classroom_calls_per_change": round(sum(per_change_calls) / n, 3),
            "classroom_calls_per_change_max": max(per_change_calls, default=0),
            "busy_poll": busy_poll | {"events_read": poll_result.events_read, "published": poll_result.published},
            "idle_poll": {
                "firestore_reads": after[0] - before[0],
                "firestore_writes": after[1] - before[1],
                "firestore_ops": (after[0] - before[0]) + (after[1] - before[1]),
                "firestore_rpcs": after[2] - before[2],
                "classroom_calls": total(Counter(self.classroom.calls)),
                "published": idle_result.published,
            },
            "firestore_rpcs_by_method": dict(counter.rpcs),
        }

    # -- 4. throughput under quota -------------------------------------------------------------

    def throughput(self) -> None:
        m = self.mode
        q = m.quota_per_minute
        say(f"throughput under quota: {m.quota_changes} single-write changes at {q} calls a minute")
        out: dict[str, Any] = {"quota_per_minute": q, "changes": m.quota_changes, "windows_measured": m.quota_windows}
        self.results["throughput"] = out
        self.maker.touched_sections.clear()
        made = self.maker.make(m.quota_changes, mix=False, kinds=("student_added", "student_removed"))
        touched = set(self.maker.touched_sections)
        out["changes_made"] = dict(made)
        self.classroom.reset_counters()
        self.quota_log.clear()
        # The applier as deployed: its own rate limit set to its share of the ceiling (here one
        # instance, so all of it), swapped in behind the relay for this phase.
        limited = FunctionServer(
            "apply_roster_event",
            "cloudevent",
            env={**self.stack.env, "CLASSROOM_CALLS_PER_MINUTE": str(q)},
            source_dir=self.stack.source_dir,
        ).start()
        unlimited_url = self.stack.relay.target_url
        self.stack.relay.target_url = limited.url.rstrip("/")
        out["client_rate_limit_per_minute"] = q
        self.classroom.set_quota(q)  # also empties the simulator's window
        self.fresh_relay()
        started = time.monotonic()
        try:
            result = self.stack.poll(timeout=self.timeout(120))
            published = result["published"]
            self.stack.published_total = published
            out["published"] = published
            out["poll_seconds"] = round(time.monotonic() - started, 2)
            # The quota window opens with the first call the simulator charges.
            first = self.wait_until(self.quota_log.first, 60) or time.monotonic()
            if m.quota_windows:
                measure_until = first + m.quota_windows * QUOTA_WINDOW
                # then as long as the rest should take at the quota, plus a window of slack
                rest = max(0, published - m.quota_windows * q)
                drain_until = measure_until + math.ceil(rest / q) * QUOTA_WINDOW + QUOTA_WINDOW
            else:
                measure_until = drain_until = first + m.quota_probe_seconds
            self.wait_acked(published, measure_until)
            accepted = self.quota_log.accepted_between(first, measure_until)
            out["calls_accepted_in_window"] = accepted
            out["changes_acked_in_window"] = self.acked_before(measure_until)
            drained = self.wait_acked(published, drain_until)
            out["drained_under_quota"] = drained
            out["seconds_under_quota"] = round(time.monotonic() - first, 1)
            out["classroom_calls_under_quota"] = total(Counter(self.classroom.calls))
            out["classroom_calls_under_quota_by_method"] = dict(self.classroom.calls)
            out["classroom_429s"] = self.quota_log.rejected()
            out["nacked_deliveries"] = self.stack.relay.counters()["failed"]
            if m.quota_windows:
                seconds = m.quota_windows * QUOTA_WINDOW
                out["writes_per_second"] = round(accepted / seconds, 2)
                out["ceiling_per_second"] = round(q / QUOTA_WINDOW, 2)
                out["share_of_ceiling"] = round(accepted / (m.quota_windows * q), 3)
            else:
                out["share_of_ceiling"] = None  # shorter than one quota window: a burst, not a rate
        finally:
            self.classroom.set_quota(None)
            self.stack.relay.target_url = unlimited_url
            limited.stop()
        if not out.get("drained_under_quota"):
            say("quota lifted: letting the rest through")
        self.stack.relay.wait_for(out.get("published", 0), timeout=self.timeout(240))
        out["total_seconds"] = round(time.monotonic() - started, 1)
        out["deliveries"] = self.stack.relay.counters()["delivered"]
        differences = self.out_of_sync(sorted(touched))
        out["sections_checked"] = len(touched)
        out["sections_out_of_sync"] = len({d["section"] for d in differences})
        out["differences"] = differences[:10]

    @staticmethod
    def wait_until(probe, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.02)
        return None

    def wait_acked(self, wanted: int, until: float) -> bool:
        while time.monotonic() < until:
            counters = self.stack.relay.counters()
            if counters["acked"] >= wanted and counters["in_flight"] == 0:
                return True
            time.sleep(min(0.25, max(0.0, until - time.monotonic())))
        counters = self.stack.relay.counters()
        return counters["acked"] >= wanted

    def acked_before(self, until: float) -> int:
        first_ack: dict[str, float] = {}
        for attempt in list(self.stack.relay.attempts):
            if 200 <= attempt.status < 300:
                first_ack.setdefault(attempt.message_id, attempt.finished)
        return sum(1 for t in first_ack.values() if t <= until)

    # -- the whole run -------------------------------------------------------------------------

    def final_check(self) -> None:
        say("checking every section against Clever")
        with_course = [s for s in self.district.sections if classroom_roster(self.classroom, s) is not None]
        differences = self.out_of_sync(with_course)
        self.results["final"] = {
            "sections_with_course": len(with_course),
            "sections_out_of_sync": len({d["section"] for d in differences}),
            "differences": differences[:10],
            "poller_memory": memory_of(self.stack.poller.pids()),
            "applier_memory": memory_of(self.stack.applier.pids()),
        }

    def guardians(self, pubsub, firestore) -> None:
        from bench_guardians import GUARDIAN_MODES, measure

        self.results["guardians"] = measure(
            (pubsub, firestore), PROJECT, DOMAIN, ADMIN, GUARDIAN_MODES[self.mode.name], self.seed, memory_of, say
        )

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        say("starting the Pub/Sub and Firestore emulators")
        pubsub, firestore = start_emulators(PROJECT)
        try:
            with (
                CleverSimulator() as clever,
                ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom,
            ):
                self.clever, self.classroom = clever, classroom
                self.quota_log = QuotaLog(classroom)
                classroom.add_user(ADMIN, "District", "Admin")
                self.make_district()
                env = {
                    "CLEVER_API_BASE": clever.base_url,
                    "CLEVER_TOKEN": clever.token,
                    "CLASSROOM_API_ENDPOINT": classroom.base_url,
                    "ADMIN_SUBJECT": ADMIN,
                    "POLL_TIME_BUDGET_SECONDS": "900",
                    "LOG_LEVEL": "warning",
                    # One local process plays every instance: no client-side limit outside phase 4.
                    "CLASSROOM_CALLS_PER_MINUTE": "0",
                    # The bench's random bursts would trip the mass-change brake (tested elsewhere)
                    # and hold their removals; here every change must flow.
                    "BRAKE_SECTION_PERCENT": "100",
                    "BRAKE_TOTAL_PERCENT": "100",
                    "BRAKE_MAX_ARCHIVES": "1000000",
                }
                if self.page_size:
                    env["CLEVER_PAGE_SIZE"] = str(self.page_size)
                say("starting poll_clever and apply_roster_event under functions-framework")
                with LocalStack(project=PROJECT, extra_env=env, emulators=(pubsub, firestore)) as stack:
                    self.stack = stack
                    self.bootstrap()
                    self.make_change_maker()
                    self.latency()
                    self.firestore_ops()
                    self.throughput()
                    self.final_check()
            self.guardians(pubsub, firestore)
        finally:
            pubsub.stop()
            firestore.stop()
        self.results["bench_seconds"] = round(time.monotonic() - started, 1)
        return self.results


# --------------------------------------------------------------------------------------------------
# The table


def fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "NO")


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    d = r.get("district", {})
    lat = r.get("latency", {})
    single, burst = lat.get("single", {}), lat.get("burst", {})

    def latency_rows(label: str, s: dict) -> None:
        out.append((f"{label}: median", fmt(s.get("median"), " s"), "—", "—"))
        p95 = s.get("p95")
        out.append((f"{label}: p95", fmt(p95, " s"), "< 10 s", verdict(None if p95 is None else p95 < 10)))

    latency_rows(f"latency, single change (n={single.get('n', 0)})", single)
    latency_rows(
        f"latency, burst of {burst.get('changes', burst.get('published', 0))} changes "
        f"({burst.get('published', 0)} messages)",
        burst,
    )
    if burst:
        out.append(
            (
                "burst: pushes in flight at once (Pub/Sub emulator -> applier)",
                fmt(burst.get("max_in_flight")),
                "—",
                "—",
            )
        )

    eco = r.get("economy", {})
    per_change = eco.get("classroom_calls_per_change")
    out.append(
        (
            "Classroom calls per applied change (burst)",
            fmt(per_change, digits=3),
            "<= 1.05",
            verdict(None if per_change is None else per_change <= 1.05),
        )
    )
    by_method = eco.get("burst_classroom_calls_by_method") or {}
    made = burst.get("changes_made") or {}
    member_changes = sum(n for kind, n in made.items() if kind != "rename")
    if member_changes:
        member_calls = sum(n for m, n in by_method.items() if ".students." in m or ".teachers." in m)
        ratio = round(member_calls / member_changes, 3)
        out.append(
            (
                f"  of which enrollment changes ({member_changes}; renames: {made.get('rename', 0)})",
                fmt(ratio, digits=3),
                "<= 1.05",
                verdict(ratio <= 1.05),
            )
        )
    inproc = eco.get("in_process", {})
    if inproc:
        ops = inproc.get("firestore_ops_per_change")
        out.append(
            (
                f"Firestore ops per applied change (n={inproc.get('changes_applied')}, max "
                f"{inproc.get('firestore_ops_per_change_max')})",
                fmt(ops, digits=2),
                "<= 3",
                verdict(None if ops is None else ops <= 3),
            )
        )
    idle_stack = eco.get("idle_poll_stack", {})
    idle = inproc.get("idle_poll", {})
    idle_calls = max(idle_stack.get("classroom_calls", 0), idle.get("classroom_calls", 0)) if eco else None
    out.append(
        ("Classroom calls, idle poll", fmt(idle_calls), "0", verdict(None if idle_calls is None else idle_calls == 0))
    )
    idle_ops = idle.get("firestore_ops")
    out.append(
        (
            f"Firestore ops, idle poll ({idle.get('firestore_reads', '?')} reads, "
            f"{idle.get('firestore_writes', '?')} writes)",
            fmt(idle_ops),
            "<= 2",
            verdict(None if idle_ops is None else idle_ops <= 2),
        )
    )

    b = r.get("bootstrap", {})
    if b:
        out.append(
            (
                f"bootstrap: Clever requests (page size {b.get('clever_page_size')})",
                fmt(b.get("clever_requests")),
                "—",
                "—",
            )
        )
        out.append(
            (
                f"bootstrap: Classroom calls ({d.get('sections')} sections, {d.get('enrollments')} enrollments)",
                fmt(b.get("classroom_calls")),
                "—",
                "—",
            )
        )
        out.append(
            (
                "bootstrap: Classroom batch requests",
                fmt(b.get("classroom_batch_requests")),
                "batched",
                verdict((b.get("classroom_batch_requests") or 0) > 0),
            )
        )
        out.append(("bootstrap: total time (poll to last change applied)", fmt(b.get("total_seconds"), " s"), "—", "—"))
        for who in ("poller", "applier"):
            peak = max(
                v
                for v in (
                    (b.get(f"{who}_memory") or {}).get("peak_mib"),
                    (r.get("final", {}).get(f"{who}_memory") or {}).get("peak_mib"),
                    0.0,
                )
                if v is not None
            )
            out.append((f"peak memory (VmHWM), {who}", fmt(peak, " MiB", 0), "< 256 MiB", verdict(peak < 256)))

    t = r.get("throughput", {})
    if t:
        share = t.get("share_of_ceiling")
        label = (
            f"throughput at {t.get('quota_per_minute')}/min quota: writes/s as share of ceiling"
            f" ({t.get('windows_measured')} x 60 s)"
        )
        out.append(
            (
                label,
                "n/a (run < 1 quota window)"
                if share is None
                else f"{share * 100:.0f}% ({t.get('writes_per_second')}/s)",
                ">= 90%",
                verdict(None if share is None else share >= 0.9),
            )
        )
        out.append(
            (
                f"throughput: Classroom 429s seen ({t.get('classroom_calls_under_quota')} calls made)",
                fmt(t.get("classroom_429s")),
                "few",
                "—",
            )
        )
        out.append(("throughput: nacked deliveries (redelivered)", fmt(t.get("nacked_deliveries")), "few", "—"))
        lost = t.get("sections_out_of_sync")
        out.append(
            (
                f"throughput: changes lost ({t.get('sections_checked')} sections checked)",
                fmt(lost) + " sections differ",
                "0",
                verdict(None if lost is None else lost == 0),
            )
        )
    f = r.get("final", {})
    if f:
        n = f.get("sections_out_of_sync")
        out.append(
            (
                f"end: sections out of sync with Clever (of {f.get('sections_with_course')})",
                fmt(n),
                "0",
                verdict(None if n is None else n == 0),
            )
        )
    return out


# Poll intervals compared for freshness (issue 15): infra's default poll_schedule is every 5 minutes.
FRESHNESS_INTERVALS_MINUTES = (1, 2, 5, 10, 15)
DEFAULT_POLL_MINUTES = 5


def freshness(r: dict[str, Any]) -> dict[str, Any]:
    """From a Clever event's creation to its Classroom write at each poll interval: the event waits
    for the next scheduled poll (half an interval on average, a whole one at worst: Clever's events
    are read only when a poll runs), then the measured poll -> applied latency of a single change.
    With the idle poll's measured cost per day at that interval (polls find nothing most of the day).
    Derived from the figures measured above, not timed separately."""
    single = r.get("latency", {}).get("single", {})
    idle_stack = r.get("economy", {}).get("idle_poll_stack", {})
    idle = r.get("economy", {}).get("in_process", {}).get("idle_poll", {})
    median, p95 = single.get("median"), single.get("p95")
    out: dict[str, Any] = {}
    for minutes in FRESHNESS_INTERVALS_MINUTES:
        polls = 24 * 60 // minutes
        ops = idle.get("firestore_ops")
        out[str(minutes)] = {
            "median_seconds": None if median is None else round(minutes * 30 + median, 1),
            "worst_seconds": None if p95 is None else round(minutes * 60 + p95, 1),
            "idle_polls_per_day": polls,
            # +1: the held-batches query main.py makes after each poll (an empty query bills one read)
            "idle_firestore_ops_per_day": None if ops is None else polls * (ops + 1),
            "idle_function_seconds_per_day": None
            if idle_stack.get("seconds") is None
            else round(polls * idle_stack["seconds"]),
        }
    return out


def freshness_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for minutes, f in freshness(r).items():
        default = " (default)" if int(minutes) == DEFAULT_POLL_MINUTES else ""
        out.append(
            (
                f"freshness, poll every {minutes} min{default}: event -> Classroom median / worst",
                f"{fmt(f['median_seconds'], ' s')} / {fmt(f['worst_seconds'], ' s')}",
                "—",
                "—",
            )
        )
        out.append(
            (
                f"  idle cost per day at {minutes} min: {f['idle_polls_per_day']} polls",
                f"{fmt(f['idle_firestore_ops_per_day'])} Firestore ops, "
                f"{fmt(f['idle_function_seconds_per_day'], ' s')} function time",
                "—",
                "—",
            )
        )
    return out


def print_table(r: dict[str, Any]) -> None:
    from bench_guardians import rows as guardian_rows

    table = [("measurement", "figure", "target", "met?"), *rows(r), *freshness_rows(r)]
    table += guardian_rows(r.get("guardians", {}))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    line = "+".join("-" * (w + 2) for w in widths)
    d = r.get("district", {})
    print(
        f"\nrostersync bench, {r['mode']} mode, seed {r['seed']}: {d.get('sections')} sections, "
        f"{d.get('teachers')} teachers, {d.get('students')} students, {d.get('enrollments')} enrollments "
        f"({r.get('bench_seconds', '?')} s)"
    )
    for i, row in enumerate(table):
        print(" | ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)))
        if i == 0:
            print(line)


# -- issue 12: the real-shaped district's heaviest runs (tests/e2e/test_scale.py, marker `full`) -----

SCALE_FIGURES = Path("/tmp/rostersync-scale.json")


def run_scale_tests() -> int:
    """Runs the `full` tests of tests/e2e/test_scale.py (each compares every section with Clever,
    0 differences, or fails) and prints the figures they wrote: the largest section and the largest
    single poll shown to arrive whole, and the peak memory of the poller and the applier."""
    import subprocess

    SCALE_FIGURES.unlink(missing_ok=True)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ROSTERSYNC_SCALE_FIGURES": str(SCALE_FIGURES)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "full", "tests/e2e/test_scale.py"]
    print("\n==> real-shaped district (issue 12): " + " ".join(argv[2:]), flush=True)
    code = subprocess.run(argv, cwd=root, env=env).returncode
    found = json.loads(SCALE_FIGURES.read_text()) if SCALE_FIGURES.exists() else {}
    rows = [("run", "figures")]
    rows += [(name, ", ".join(f"{k} {v}" for k, v in sorted(values.items()))) for name, values in sorted(found.items())]
    largest = max((v.get("largest_section", 0) for v in found.values()), default=0)
    poll = max((v.get("poll_changes", 0) or v.get("held", 0) for v in found.values()), default=0)
    rows.append(("shown whole", f"largest section {largest} members; largest single poll {poll} changes"))
    for name, text in rows:
        print(f"{name:<36} {text}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small district and short measurements (smoke run)")
    size.add_argument("--full", action="store_true", help="the issue's 50,000-student, 2,000-section district")
    parser.add_argument("--seed", type=int, default=7, help="the district's and the changes' seed")
    parser.add_argument("--page-size", type=int, default=None, help="CLEVER_PAGE_SIZE (default: the product's)")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args(argv)
    mode = MODES["quick" if args.quick else "full" if args.full else "default"]
    try:
        check_tools()
    except ToolMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bench = Bench(mode, args.seed, args.page_size)
    failed: BaseException | None = None
    try:
        bench.run()
    except BaseException as exc:  # report what was measured before it broke
        failed = exc
        if isinstance(exc, KeyboardInterrupt):
            raise
    with contextlib.suppress(Exception):
        bench.results["freshness"] = freshness(bench.results)
    with contextlib.suppress(Exception):
        print_table(bench.results)
    if args.json:
        print(json.dumps(bench.results, indent=2, sort_keys=True, default=str))
    if mode.name == "full" and failed is None:
        # OneRoster CSV bundles at district size: the importer's peak memory (issue 12, item 11).
        from bench_oneroster import measure, print_report

        say("importing a 50,000-student, 300,000-enrollment OneRoster bundle")
        print_report(measure(50_000, 300_000, args.seed))
    if failed is not None:
        print(f"\nerror: the bench stopped early: {type(failed).__name__}: {failed}", file=sys.stderr)
        raise failed
    if args.full and run_scale_tests() != 0:
        print("error: a real-shaped district run failed (see the pytest output above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
