"""In-memory fakes of the ports, for driving the handlers in unit tests."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

from rostersync.adapters.store import link_changes
from rostersync.domain.links import SectionCourseLink
from rostersync.domain.ports import ADDED, ALREADY_MEMBER, NOT_MEMBER, REMOVED, ClassroomError, Cursor, PollState
from rostersync.optimistic import StaleWrite


class FakeClassroom:
    """Enough of Classroom's rules to exercise the applier: accounts, aliases, owners, members."""

    def __init__(self, accounts=()):
        self.accounts = set(accounts)
        self.courses: dict[str, dict] = {}
        self.aliases: dict[str, str] = {}
        self.members: dict[str, dict[str, str]] = {}  # course id -> email -> role
        self.calls = Counter()
        self.fail_next: list[ClassroomError] = []
        self._ids = itertools.count(100)

    def _maybe_fail(self):
        if self.fail_next:
            raise self.fail_next.pop(0)

    def _course(self, course_id):
        real = self.aliases.get(course_id, course_id)
        if real not in self.courses:
            raise ClassroomError(404, "NOT_FOUND", "Requested entity was not found.")
        return self.courses[real]

    def create_course(self, alias, name, owner_email):
        self.calls["courses.create"] += 1
        self._maybe_fail()
        if alias in self.aliases:
            raise ClassroomError(409, "ALREADY_EXISTS", "Requested entity already exists")
        if owner_email not in self.accounts:
            raise ClassroomError(404, "NOT_FOUND", "Requested entity was not found.")
        course_id = str(next(self._ids))
        self.courses[course_id] = {"id": course_id, "name": name, "ownerId": owner_email, "courseState": "PROVISIONED"}
        self.aliases[alias] = course_id
        self.members[course_id] = {owner_email: "teacher"}
        return dict(self.courses[course_id])

    def get_course(self, course_id):
        self.calls["courses.get"] += 1
        try:
            return dict(self._course(course_id))
        except ClassroomError:
            return None

    def patch_course(self, course_id, fields):
        self.calls["courses.patch"] += 1
        self._maybe_fail()
        course = self._course(course_id)
        if "ownerId" in fields and self.members[course["id"]].get(fields["ownerId"]) != "teacher":
            raise ClassroomError(400, "FAILED_PRECONDITION", "@IneligibleOwner The new owner is not a teacher.")
        course.update(fields)
        return dict(course)

    def delete_course(self, course_id):
        self.calls["courses.delete"] += 1
        course = self._course(course_id)
        del self.courses[course["id"]]

    def add_members(self, course_id, members):
        out = []
        for role, email in members:
            self.calls[f"{role}s.create"] += 1
            try:
                self._maybe_fail()
                course = self._course(course_id)
                if email not in self.accounts:
                    raise ClassroomError(403, "PERMISSION_DENIED", "@CannotDirectAddUser The user cannot be added.")
                roster = self.members[course["id"]]
                if email in roster:
                    out.append(ALREADY_MEMBER)
                    continue
                roster[email] = role
                out.append(ADDED)
            except ClassroomError as err:
                out.append(err)
        return out

    def remove_member(self, course_id, role, email):
        self.calls[f"{role}s.delete"] += 1
        self._maybe_fail()
        course = self._course(course_id)
        if course["ownerId"] == email:
            raise ClassroomError(400, "FAILED_PRECONDITION", "@CannotRemoveCourseOwner The owner cannot be removed.")
        roster = self.members[course["id"]]
        if roster.get(email) != role:
            return NOT_MEMBER
        del roster[email]
        return REMOVED

    def roster(self, alias):
        course = self._course(alias)
        roster = self.members[course["id"]]
        return {
            "name": course["name"],
            "owner": course["ownerId"],
            "state": course["courseState"],
            "teachers": {e for e, r in roster.items() if r == "teacher"},
            "students": {e for e, r in roster.items() if r == "student"},
        }

    @property
    def writes(self):
        return sum(n for k, n in self.calls.items() if not k.endswith(".get"))


class FakeStore:
    def __init__(self):
        self.links: dict[str, dict] = {}
        self.problems: dict[str, dict] = {}
        self.overrides: dict = {}
        self.held: dict = {}
        self.cursor: Cursor | None = None
        self.paused = False
        self.bootstrap = None  # a bootstrap under way (BootstrapProgress)
        self.poll_status: dict | None = None
        self.rebootstraps: list[tuple[str, str]] = []
        self.audit: list = []
        self.ops = Counter()
        # Like Firestore's update time: each committed link write moves its section's version, and
        # a save whose `before` was read at another version is refused (optimistic.StaleWrite).
        self.versions: dict[str, int] = {}
        self.conflicts = 0

    def load_link(self, section_id):
        self.ops["read"] += 1
        doc = self.links.get(section_id)
        return SectionCourseLink.from_doc(doc, self.versions.get(section_id)) if doc else None

    def link_for_course(self, course_id):
        self.ops["read"] += 1
        doc = next((d for d in self.links.values() if d.get("course_id") == course_id), None)
        return SectionCourseLink.from_doc(doc, self.versions.get(doc["section_id"])) if doc else None

    def save_link(self, before, after, problems=(), resolved=(), overrides=(), audit=(), withdrawn=(), touched=False):
        changes = link_changes(before, after)
        if not (changes or problems or resolved or overrides or audit or withdrawn or touched):
            return
        sid = after.section_id
        if changes or problems or resolved or overrides or withdrawn or touched:
            stale = (
                sid in self.links
                if before is None
                else (before.version is not None and before.version != self.versions.get(sid))
            )
            if stale:
                self.conflicts += 1
                raise StaleWrite(f"section {sid}")
            self.versions[sid] = self.versions.get(sid, 0) + 1
        self.audit += list(audit)
        for o in overrides:
            self.overrides[o.key] = o
        for key in withdrawn:
            self.overrides.pop(key, None)
        self.ops["commit"] += 1
        if before is None or before.version is None or sid not in self.links:
            self.links[sid] = after.to_doc()
        else:
            doc = dict(self.links[sid])
            doc.update({k: v for k, v in changes.items() if k != "members"})
            merged = {**doc.get("members", {}), **changes.get("members", {})}
            # A member pruned from the link is written as DELETE_FIELD: gone from the document.
            doc["members"] = {cid: m for cid, m in merged.items() if isinstance(m, dict)}
            self.links[sid] = doc
        self.record_problems(problems, count=False)
        for key in resolved:
            if key in self.problems and key not in {p.key for p in problems}:
                self.problems[key]["open"] = False

    def record_problems(self, problems, count=True):
        if problems and count:
            self.ops["commit"] += 1
        for p in problems:
            self.problems[p.key] = {**p.__dict__, "open": True}

    def open_problems(self):
        return {k: v for k, v in self.problems.items() if v["open"]}

    def load_poll_state(self):
        self.ops["read"] += 1
        return PollState(self.cursor, self.paused, self.bootstrap)

    def save_bootstrap_progress(self, progress):
        self.ops["write"] += 1
        self.bootstrap = progress

    def load_cursor(self):
        self.ops["read"] += 1
        return self.cursor

    def save_cursor(self, cursor):
        self.ops["write"] += 1
        self.cursor = cursor

    def sections_with_member(self, clever_user_id):
        return [sid for sid, doc in self.links.items() if clever_user_id in doc.get("members", {})]

    def hold_changes(self, reasons, changes, batch_id=None):
        # Like the Firestore store: a known batch id gets the changes appended.
        batch_id = batch_id or f"held-{len(self.held) + 1}"
        known_reasons, known = self.held.get(batch_id, ([], []))
        self.held[batch_id] = (list(dict.fromkeys([*known_reasons, *reasons])), known + list(changes))
        return batch_id

    def save_poll_status(self, status):
        self.ops["write"] += 1
        self.poll_status = status
        if status.get("caught_up_at") and self.cursor:
            self.cursor = replace(self.cursor, caught_up_at=status["caught_up_at"])

    def record_rebootstrap(self, reason, old_cursor):
        self.ops["write"] += 1
        self.rebootstraps.append((reason, old_cursor))


class FakePublisher:
    def __init__(self):
        self.messages: list[bytes] = []
        self.fail = False

    def publish(self, changes):
        changes = list(changes)
        if self.fail:
            raise RuntimeError("publish failed")
        self.messages += [c.to_json() for c in changes]
        return len(changes)
