"""How long student data is kept (docs/privacy.md), as the Firestore adapters apply it.

Firestore deletes a document once its `expire_at` has passed (a TTL policy per collection in
infra/firestore.tf; deletion happens within about a day of that time). The code sets `expire_at`
at the moment a document stops being needed: a problem when it closes, a dead letter when it is
replayed, a held batch when an administrator decides it, a OneRoster class state when the class is
deleted, an audit entry when it is written. A re-opened problem has its `expire_at` removed again.

Members of a link are entries of the section's document, not documents of their own, so a TTL
policy cannot reach them: the applier prunes a removed member whose deciding event is older than
`removed_member_days` (`prune_removed_members`). That is safe because no change that old can still
arrive: Clever keeps events 30 days and Pub/Sub messages 7, so the default is longer than both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from rostersync.domain.links import MemberStatus, SectionCourseLink


@dataclass(frozen=True)
class Retention:
    closed_problem_days: int = 30
    replayed_dead_letter_days: int = 30
    decided_held_batch_days: int = 30
    removed_member_days: int = 60
    deleted_class_days: int = 30
    audit_days: int = 90

    @staticmethod
    def expire_at(days: int, now: dt.datetime | None = None) -> dt.datetime:
        return (now or dt.datetime.now(dt.UTC)) + dt.timedelta(days=days)


def event_time(event_id: str) -> dt.datetime | None:
    """When a Clever event (an ObjectId: its first 8 hex digits are Unix seconds) or one of our
    OneRoster event ids (the same shape) happened; None for any other id."""
    try:
        return dt.datetime.fromtimestamp(int(str(event_id)[:8], 16), dt.UTC) if len(str(event_id)) >= 8 else None
    except ValueError:
        return None


def prune_removed_members(link: SectionCourseLink, days: int, now: dt.datetime | None = None) -> SectionCourseLink:
    """The link without members that were removed (by Clever) more than `days` ago."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    keep = {}
    for clever_id, member in link.members.items():
        when = event_time(member.event_id)
        if member.status == MemberStatus.REMOVED and when is not None and when < cutoff:
            continue
        keep[clever_id] = member
    return link if len(keep) == len(link.members) else replace(link, members=keep)


# Firestore keeps a document to 1 MiB (1,048,576 bytes). A link holds every member of its section,
# removed ones too until they are pruned: some 180 bytes a member, so a 5,000-student section's link
# is about 950 KB once its removed students are counted (measured: tests/e2e/test_scale.py). Past
# LINK_BYTES_BUDGET the removed members older than MIN_REMOVED_MEMBER_DAYS leave first; what still
# does not fit is a problem the administrator sees before a save fails.
FIRESTORE_DOCUMENT_BYTES = 1_048_576
LINK_BYTES_BUDGET = 900_000
# Pub/Sub keeps an unacknowledged message at most 7 days: an add older than a removal cannot arrive
# after that, which is all a removed member's record guards against once Clever's replay is over.
MIN_REMOVED_MEMBER_DAYS = 7


def _value_bytes(value: object) -> int:
    # Firestore's storage size arithmetic (firebase.google.com/docs/firestore/storage-size).
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, dict):
        return sum(len(str(k).encode()) + 1 + _value_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_value_bytes(v) for v in value)
    return 8


def member_bytes(clever_id: str, member) -> int:
    """One member's share of the link document: its entry in `members` and its id in `member_ids`."""
    return len(clever_id.encode()) + 1 + _value_bytes(member.to_doc()) + len(clever_id.encode()) + 1


def link_bytes(link: SectionCourseLink) -> int:
    """The link document's size as Firestore counts it (its name, fields, member_ids, updated_at)."""
    doc = link.to_doc()
    members = doc.pop("members")
    size = 32 + len("sections") + 1 + len(link.section_id.encode()) + 1 + 16 + _value_bytes(doc)
    size += len("members") + 1 + len("member_ids") + 1 + len("updated_at") + 1 + 8
    return size + sum(member_bytes(cid, link.members[cid]) for cid in members)


def prune_to_fit(
    link: SectionCourseLink, budget: int = LINK_BYTES_BUDGET, now: dt.datetime | None = None
) -> tuple[SectionCourseLink, int]:
    """The link, under `budget` bytes if removed members older than MIN_REMOVED_MEMBER_DAYS can
    take it there (the oldest leave first; unchanged when it fits already), and its size."""
    size = link_bytes(link)
    if size <= budget:
        return link, size
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=MIN_REMOVED_MEMBER_DAYS)
    old = sorted(
        (m.event_id, cid)
        for cid, m in link.members.items()
        if m.status == MemberStatus.REMOVED and (when := event_time(m.event_id)) is not None and when < cutoff
    )
    keep = dict(link.members)
    for _, cid in old:
        if size <= budget:
            break
        size -= member_bytes(cid, keep.pop(cid))
    return (link if len(keep) == len(link.members) else replace(link, members=keep)), size
