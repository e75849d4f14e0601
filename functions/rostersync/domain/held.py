"""How a held batch is laid out in Firestore, by bytes: pure, so it is tested without Firestore.

A held batch (the mass-change brake's removals and archives, store.hold_changes) can be a whole
district's: 20,000 removals and more. Firestore takes 1 MiB a document and, a commit, 500 writes
and 10 MiB. So the changes are packed as messages (changes.pack_changes: one section each, its
snapshot once), the messages into part documents of at most HELD_PART_BYTES, and the part
documents into commits of at most HELD_COMMIT_WRITES writes and HELD_COMMIT_BYTES bytes. Each
poll page appends its own parts: nothing written before is written again.
"""

from __future__ import annotations

from collections.abc import Sequence

from rostersync.domain.changes import RosterChange, decode_message, pack_changes

# A part document: its messages plus field names stay well under Firestore's 1 MiB a document.
HELD_PART_BYTES = 900_000
# A commit: Firestore takes 500 writes and 10 MiB a request; its emulator takes 4 MiB a gRPC
# message, so we stay under that too (found by the 20,000-removal end-to-end run).
HELD_COMMIT_WRITES = 400
HELD_COMMIT_BYTES = 3_600_000


class HeldChangeTooLarge(ValueError):
    """One held change whose message alone does not fit in a part document."""


def held_parts(changes: Sequence[RosterChange], part_bytes: int = HELD_PART_BYTES) -> list[list[str]]:
    """The part documents' contents for `changes`: lists of encoded messages (text), in order
    within each section, each list's total at most `part_bytes`."""
    messages, too_large = pack_changes(list(changes), target_bytes=part_bytes, max_bytes=part_bytes)
    if too_large:
        raise HeldChangeTooLarge(str(too_large[0]))
    parts: list[list[str]] = []
    size = part_bytes + 1
    for message in messages:
        text = message.data.decode()
        if size + len(message.data) > part_bytes:
            parts.append([])
            size = 0
        parts[-1].append(text)
        size += len(message.data) + 8
    return parts


def commit_groups(sizes: Sequence[int], max_writes: int = HELD_COMMIT_WRITES, max_bytes: int = HELD_COMMIT_BYTES):
    """Indexes of the documents to write, grouped into commits within Firestore's limits."""
    groups: list[list[int]] = []
    total = max_bytes + 1
    for i, size in enumerate(sizes):
        if not groups or len(groups[-1]) >= max_writes or total + size > max_bytes:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def changes_of_parts(parts: Sequence[Sequence[str]]) -> list[RosterChange]:
    """The held changes back, in the order they were held within each section (guardian changes,
    which the guardian brake holds, as guardian changes)."""
    from rostersync.domain.guardians import decode_guardian_message

    return [
        change
        for part in parts
        for message in part
        for change in (decode_guardian_message(message) or decode_message(message.encode()))
    ]
