"""The brake on mass changes. Pure: the poller gives it one poll's removals and archives.

A SIS export gone wrong can empty every class in a night. When one poll would remove more than a
set share of a section's members, or of all the memberships we manage, or archive more than a set
number of courses, those changes are held instead of applied: the poller records them as a held
batch that an administrator approves or discards. Additions keep flowing meanwhile.

The defaults (docs/clever-feed.md says why) let a small district's normal day flow and hold what
SIS accidents look like: a section losing more than half its members (5 removals at least: a
school's or a course's sections emptied, whatever the district's size), more than 5 % of the
district's memberships gone from 500 removals up (Microsoft Entra ID Connect's default threshold
is 500 deleted objects), more than 20 sections deleted.

Holding a removal and applying it later is safe: the applier orders changes by their Clever event
ids, so a removal approved after a newer re-enrollment is recognised as stale and skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from rostersync.domain.changes import ChangeKind, RosterChange

log = logging.getLogger(__name__)

REMOVALS = (ChangeKind.STUDENT_REMOVED, ChangeKind.TEACHER_REMOVED)


@dataclass(frozen=True)
class BrakeSettings:
    section_share: float = 0.5  # of one section's members
    total_share: float = 0.05  # of every membership we manage
    max_archives: int = 20  # sections deleted in one poll
    min_removals: int = 5  # fewer removals from a section than this never trip its share
    total_min_removals: int = 500  # fewer removals in a poll than this never trip the district share


@dataclass
class HeldBatch:
    reasons: list[str]
    changes: list[RosterChange]
    sections: list[str] = field(default_factory=list)

    @property
    def removals(self) -> int:
        return sum(1 for c in self.changes if c.kind in REMOVALS)

    @property
    def archives(self) -> int:
        return sum(1 for c in self.changes if c.kind == ChangeKind.SECTION_DELETED)

    def sample(self, n: int = 20) -> list[str]:
        return [c.describe() for c in self.changes[:n]]


class PollBrake:
    """The brake for one poll, fed page by page so that a page's changes go out at once (one
    message per section) while the counts add up over the whole poll. Once a limit is crossed,
    the removals (or archives) from then on are held; those of earlier pages, under the limit
    then, have gone."""

    def __init__(self, settings: BrakeSettings, managed_memberships: int):
        self._settings = settings
        self._managed = managed_memberships
        self._removed: Counter = Counter()
        self._added: Counter = Counter()
        self._size_after: dict[str, int] = {}
        self._deletions = 0
        self._held_sections: set[str] = set()
        self._hold_all_removals = False
        self._hold_deletions = False
        self.reasons: list[str] = []
        self.held: list[RosterChange] = []
        self.stored = 0  # how many of `held` the poller has written to its held batch

    def filter(self, changes: list[RosterChange], added: Counter | None = None) -> list[RosterChange]:
        """The changes that may go now; the rest are kept in `held`. `added` overrides the count of
        additions (the changes' own adds are counted otherwise)."""
        settings = self._settings
        if added is not None:
            self._added.update(added)
        for c in changes:
            self._size_after[c.section_id] = len(c.section.teachers) + len(c.section.students)
            if c.kind in REMOVALS:
                self._removed[c.section_id] += 1
            elif c.kind == ChangeKind.SECTION_DELETED:
                self._deletions += 1
            elif added is None and c.kind in (ChangeKind.STUDENT_ADDED, ChangeKind.TEACHER_ADDED):
                self._added[c.section_id] += 1
        for section_id in {c.section_id for c in changes if c.kind in REMOVALS} - self._held_sections:
            count = self._removed[section_id]
            before = self._size_after.get(section_id, 0) + count - self._added.get(section_id, 0)
            if count >= settings.min_removals and before > 0 and count / before > settings.section_share:
                self._held_sections.add(section_id)
                self.reasons.append(
                    f"section {section_id}: {count} of about {before} members removed "
                    f"(over {settings.section_share:.0%})"
                )
        total = sum(self._removed.values())
        if (
            not self._hold_all_removals
            and self._managed > 0
            and total >= settings.total_min_removals
            and total / self._managed > settings.total_share
        ):
            self._hold_all_removals = True
            self.reasons.append(
                f"{total} removals of {self._managed} managed memberships (over {settings.total_share:.0%})"
            )
        if not self._hold_deletions and self._deletions > settings.max_archives:
            self._hold_deletions = True
            self.reasons.append(f"{self._deletions} sections deleted (over {settings.max_archives})")

        def held(c: RosterChange) -> bool:
            if c.kind == ChangeKind.SECTION_DELETED:
                return self._hold_deletions
            return c.kind in REMOVALS and (self._hold_all_removals or c.section_id in self._held_sections)

        self.held += [c for c in changes if held(c)]
        return [c for c in changes if not held(c)]

    def batch(self) -> HeldBatch | None:
        if not self.held:
            return None
        return HeldBatch(self.reasons, self.held, sorted({c.section_id for c in self.held}))


def apply_brake(
    changes: list[RosterChange],
    additions_by_section: Counter,
    managed_memberships: int,
    settings: BrakeSettings,
) -> tuple[list[RosterChange], HeldBatch | None]:
    """One batch of changes through a fresh brake: those that may go now, and the held batch."""
    brake = PollBrake(settings, managed_memberships)
    keep = brake.filter(changes, additions_by_section)
    return keep, brake.batch()


class BrakedPublisher:
    """A publisher whose every publish call (one OneRoster poll, one CSV bundle) goes through a
    fresh brake first: what a limit holds is kept in held_batches (approve / discard), the rest is
    published. Without a district-wide membership count only the per-section share and the
    archive count apply, which are what an emptied export trips: every class loses its members,
    or every class is gone."""

    def __init__(self, inner, settings: BrakeSettings, holder, managed_memberships: int = 0):
        self._inner = inner
        self._settings = settings
        self._holder = holder  # hold_changes(reasons, changes) -> batch id
        self._managed = managed_memberships
        # Guardian links known (0: only BRAKE_MIN_REMOVALS applies to guardian removals).
        self._managed_guardians = 0
        self.held_batches: list[str] = []

    def publish(self, changes) -> int:
        from rostersync.domain.guardians import GuardianChange

        changes = list(changes)
        guardians = [c for c in changes if isinstance(c, GuardianChange)]
        changes = [c for c in changes if not isinstance(c, GuardianChange)]
        if guardians:
            guardian_brake = GuardianBrake(self._settings, self._managed_guardians)
            guardians = guardian_brake.filter(guardians)
            if guardian_brake.held:
                batch_id = self._holder.hold_changes(guardian_brake.reasons, guardian_brake.held)
                self.held_batches.append(batch_id)
                log.error("MASS GUARDIAN REMOVAL HELD: %d students (batch %s)", len(guardian_brake.held), batch_id)
        keep, batch = apply_brake(changes, Counter(), self._managed, self._settings)
        if batch is not None:
            batch_id = self._holder.hold_changes(batch.reasons, batch.changes)
            self.held_batches.append(batch_id)
            log.error(
                "MASS CHANGE HELD: %d removals/archives in %d sections (batch %s): %s",
                len(batch.changes),
                len(batch.sections),
                batch_id,
                "; ".join(batch.reasons)[:500],
            )
        return self._inner.publish(keep + guardians)


class GuardianBrake:
    """One poll's guardian removals (relationships ended, contacts deleted): once they pass
    max(BRAKE_MIN_REMOVALS, BRAKE_TOTAL_PERCENT of the guardian links known at the bootstrap), every
    further guardian removal of the poll is held for an administrator, like members' removals."""

    def __init__(self, settings: BrakeSettings, guardians_known: int):
        self.limit = max(settings.min_removals, int(settings.total_share * guardians_known))
        self.removals = 0
        self.held: list = []
        self.reasons: list[str] = []

    def filter(self, changes: list) -> list:
        from rostersync.domain.guardians import GuardianKind

        removals = [c for c in changes if c.kind == GuardianKind.GUARDIAN_REMOVED]
        self.removals += len(removals)
        if not self.held and self.removals <= self.limit:
            return changes
        if not self.reasons:
            self.reasons.append(f"{self.removals} guardian removals in one poll (limit {self.limit})")
        self.held += removals
        return [c for c in changes if c.kind != GuardianKind.GUARDIAN_REMOVED]

    def admit(self, change) -> bool:
        """One change already known to end guardians (the reconcile pass plans each student before
        it calls Classroom, so it counts exactly the changes that end a live guardian of the
        sync's): True while within the limit, else False and the change is held."""
        self.removals += 1
        if not self.held and self.removals <= self.limit:
            return True
        if not self.reasons:
            self.reasons.append(f"{self.removals} guardian removals in one reconcile pass (limit {self.limit})")
        self.held.append(change)
        return False
