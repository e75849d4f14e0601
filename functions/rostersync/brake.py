"""The brake on mass changes. Pure: the poller gives it one poll's removals and archives.

A SIS export gone wrong can empty every class in a night. When one poll would remove more than a
set share of a section's members, or of all the memberships we manage, or archive more than a set
number of courses, those changes are held instead of applied: the poller records them as a held
batch that an administrator approves or discards. Additions keep flowing meanwhile.

Holding a removal and applying it later is safe: the applier orders changes by their Clever event
ids, so a removal approved after a newer re-enrollment is recognised as stale and skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rostersync.changes import ChangeKind, RosterChange

REMOVALS = (ChangeKind.STUDENT_REMOVED, ChangeKind.TEACHER_REMOVED)


@dataclass(frozen=True)
class BrakeSettings:
    section_share: float = 0.25  # of one section's members
    total_share: float = 0.05  # of every membership we manage
    max_archives: int = 20  # sections deleted in one poll
    min_removals: int = 5  # fewer removals than this never trip the share limits


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


def apply_brake(
    changes: list[RosterChange],
    additions_by_section: Counter,
    managed_memberships: int,
    settings: BrakeSettings,
) -> tuple[list[RosterChange], HeldBatch | None]:
    """Splits one poll's removals and deletions into those that may go now and a held batch.

    `additions_by_section` counts the members the same poll added, to estimate each section's size
    before the poll (the size after is in the changes' section snapshots)."""
    removed = Counter(c.section_id for c in changes if c.kind in REMOVALS)
    deletions = [c for c in changes if c.kind == ChangeKind.SECTION_DELETED]
    size_after: dict[str, int] = {}
    for c in changes:
        size_after[c.section_id] = len(c.section.teachers) + len(c.section.students)
    reasons: list[str] = []
    held_sections: set[str] = set()
    for section_id, count in removed.items():
        before = size_after.get(section_id, 0) + count - additions_by_section.get(section_id, 0)
        if count >= settings.min_removals and before > 0 and count / before > settings.section_share:
            held_sections.add(section_id)
            reasons.append(
                f"section {section_id}: {count} of about {before} members removed (over {settings.section_share:.0%})"
            )
    total = sum(removed.values())
    hold_all_removals = (
        managed_memberships > 0
        and total >= settings.min_removals
        and total / managed_memberships > settings.total_share
    )
    if hold_all_removals:
        reasons.append(
            f"{total} removals of {managed_memberships} managed memberships (over {settings.total_share:.0%})"
        )
    hold_deletions = len(deletions) > settings.max_archives
    if hold_deletions:
        reasons.append(f"{len(deletions)} sections deleted (over {settings.max_archives})")
    if not reasons:
        return changes, None

    def held(c: RosterChange) -> bool:
        if c.kind == ChangeKind.SECTION_DELETED:
            return hold_deletions
        return c.kind in REMOVALS and (hold_all_removals or c.section_id in held_sections)

    keep = [c for c in changes if not held(c)]
    hold = [c for c in changes if held(c)]
    return keep, HeldBatch(reasons, hold, sorted({c.section_id for c in hold}))
