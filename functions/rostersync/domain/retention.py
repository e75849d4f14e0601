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
