"""Dead letters: roster changes Pub/Sub gave up on, recorded in Firestore and replayed on request.

The push subscription that feeds the applier forwards a message it could not deliver in
`max_delivery_attempts` to the dead-letter topic; a push subscription there feeds
`record_dead_letter`, which keeps it in `dead_letters/{message id}` (that of the dead-letter copy):

  data_text        the message as text (UTF-8, invalid bytes replaced), cut at DATA_TEXT_LIMIT
  data_base64      the exact bytes, when at most DATA_KEEP_LIMIT (replay needs it)
  data_parts       when larger: how many documents `dead_letters/{id}/data/{nnnnn}` hold the exact
                   bytes (DATA_PART_BYTES each), written before the dead letter itself, so a
                   message of any size is kept whole and replayed byte for byte
  data_bytes       the size; data_truncated whether data_text is cut
  attributes       the attributes our publisher set (section_id, event_id, kind), for the replay
  dead_letter_attributes  what Pub/Sub added (CloudPubSubDeadLetterSource*: subscription, count)
  section_id, event_id, kind   copied out of the attributes, to filter on in the console
  delivery_attempts  Pub/Sub's count of failed deliveries, if it gave one
  reason           why it is here; the applier's own last error is in its log, not in the message
  received_at, replayed (false), replayed_at, replay_message_id

Recording is idempotent: a redelivered dead letter leaves the document as it is (also `replayed`).
Replaying publishes the exact bytes again to the roster-events topic with the section id as ordering
key and the original attributes, then marks the document; the applier ignores a change it already
applied, so replaying twice is harmless.

Plain Python over two ports, so unit tests drive it with fakes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DATA_TEXT_LIMIT = 64_000  # characters of data_text (Firestore documents are at most 1 MiB)
DATA_KEEP_LIMIT = 256_000  # bytes of data kept exactly (as base64, a third larger)
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"
DELIVERY_COUNT_ATTRIBUTE = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_SUBSCRIPTION_ATTRIBUTE = "CloudPubSubDeadLetterSourceSubscription"
REASON = (
    "delivery attempts exhausted: the applier did not acknowledge this change within the push "
    "subscription's max_delivery_attempts. The applier's last error is not part of the message; "
    "see its log for this section_id and event_id around received_at."
)
TOO_LARGE_REASON = (
    "too large to publish: this one change is larger than the applier takes in a message "
    "(changes.MAX_MESSAGE_BYTES); kept here instead of being dropped"
)
# Bytes of a message per part document (as a Firestore bytes field; documents are at most 1 MiB).
DATA_PART_BYTES = 900_000
HELD_REASON = "held while the sync was paused (rostersync pause): not applied; rostersync resume publishes it again"


class DeadLetterStore(Protocol):
    def create_dead_letter(self, message_id: str, doc: dict, parts: Sequence[bytes] = ()) -> bool:
        """Stores the document (and the parts of a large message's bytes, first) unless one with
        that id exists; True if it was created."""

    def dead_letter_data(self, message_id: str, parts: int) -> bytes | None:
        """The exact bytes kept in `parts` part documents; None if any is missing."""

    def get_dead_letter(self, message_id: str) -> dict | None: ...

    def unreplayed_dead_letters(self, limit: int) -> list[tuple[str, dict]]:
        """(id, document) of dead letters with replayed == false, at most `limit`."""

    def mark_replayed(self, message_id: str, replayed_at: dt.datetime, replay_message_id: str) -> None: ...


class MessagePublisher(Protocol):
    def publish_message(self, data: bytes, ordering_key: str, attributes: Mapping[str, str]) -> str:
        """Publishes one message and returns its id once Pub/Sub has confirmed it."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RecordOutcome:
    message_id: str
    created: bool  # False: already recorded (a redelivery), left as it was
    section_id: str
    event_id: str
    kind: str


def dead_letter_doc(
    data: bytes,
    attributes: Mapping[str, str],
    delivery_attempt: int | None = None,
    received_at: dt.datetime | None = None,
    publish_time: str = "",
    held_while_paused: bool = False,
    reason: str | None = None,
) -> dict:
    """The Firestore document for one dead-lettered message (or one held while paused)."""
    attributes = {str(k): str(v) for k, v in (attributes or {}).items()}
    original = {k: v for k, v in attributes.items() if not k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)}
    added = {k: v for k, v in attributes.items() if k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)}
    attempts = delivery_attempt
    if attempts is None:
        try:
            attempts = int(added.get(DELIVERY_COUNT_ATTRIBUTE, ""))
        except ValueError:
            attempts = None
    text = data.decode("utf-8", errors="replace")
    return {
        "data_text": text[:DATA_TEXT_LIMIT],
        "data_truncated": len(text) > DATA_TEXT_LIMIT,
        "data_bytes": len(data),
        "data_base64": base64.b64encode(data).decode("ascii") if len(data) <= DATA_KEEP_LIMIT else None,
        "data_parts": 0 if len(data) <= DATA_KEEP_LIMIT else len(data_parts(data)),
        "attributes": original,
        "dead_letter_attributes": added,
        "section_id": original.get("section_id", ""),
        "event_id": original.get("event_id", ""),
        "kind": original.get("kind", ""),
        "source_subscription": added.get(SOURCE_SUBSCRIPTION_ATTRIBUTE, ""),
        "publish_time": publish_time,
        "delivery_attempts": attempts,
        "reason": reason or (HELD_REASON if held_while_paused else REASON),
        "held_while_paused": held_while_paused,
        "received_at": received_at or _now(),
        "replayed": False,
        "replayed_at": None,
        "replay_message_id": None,
    }


def data_parts(data: bytes) -> list[bytes]:
    """A large message's bytes in the parts kept beside its dead letter."""
    return [data[n : n + DATA_PART_BYTES] for n in range(0, len(data), DATA_PART_BYTES)]


def decode_push_data(encoded: str | None) -> bytes:
    """The message bytes of a push envelope's base64 `data`; undecodable data is kept as its text."""
    try:
        return base64.b64decode(encoded or "", validate=True)
    except (binascii.Error, ValueError):
        return str(encoded).encode("utf-8", errors="replace")


class DeadLetterRecorder:
    def __init__(self, store: DeadLetterStore, clock: Callable[[], dt.datetime] = _now):
        self._store = store
        self._clock = clock

    def record(
        self,
        message_id: str,
        data: bytes,
        attributes: Mapping[str, str] | None,
        delivery_attempt: int | None = None,
        publish_time: str = "",
        held_while_paused: bool = False,
        reason: str | None = None,
    ) -> RecordOutcome:
        if not message_id:
            raise ValueError("a dead letter without a Pub/Sub message id cannot be recorded idempotently")
        doc = dead_letter_doc(
            data, attributes or {}, delivery_attempt, self._clock(), publish_time, held_while_paused, reason
        )
        parts = data_parts(data) if doc["data_parts"] else []
        created = self._store.create_dead_letter(message_id, doc, parts)
        return RecordOutcome(message_id, created, doc["section_id"], doc["event_id"], doc["kind"])


# -- replay -------------------------------------------------------------------------------------

REPLAYED = "replayed"
WOULD_REPLAY = "would replay"
NOT_FOUND = "not found"
NOT_REPLAYABLE = "not replayable"
FAILED = "failed"


@dataclass(frozen=True)
class ReplayItem:
    message_id: str
    outcome: str
    section_id: str = ""
    event_id: str = ""
    kind: str = ""
    detail: str = ""

    def line(self) -> str:
        what = " ".join(f"{k}={v}" for k, v in (("section", self.section_id), ("event", self.event_id)) if v)
        text = f"{self.message_id}: {self.outcome}"
        if self.kind:
            text += f" ({self.kind}{', ' + what if what else ''})"
        return text + (f": {self.detail}" if self.detail else "")


@dataclass
class ReplayReport:
    items: list[ReplayItem] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for i in self.items if i.outcome == outcome)

    @property
    def ok(self) -> bool:
        return not any(i.outcome in (NOT_FOUND, NOT_REPLAYABLE, FAILED) for i in self.items)


def _order(entry: tuple[str, dict]) -> tuple:
    """Replays go out in the order the changes happened: Clever event ids sort by time."""
    message_id, doc = entry
    return (str(doc.get("event_id") or ""), str(doc.get("received_at") or ""), message_id)


def replay_dead_letters(
    store: DeadLetterStore,
    publisher: MessagePublisher | None,
    ids: Sequence[str] = (),
    dry_run: bool = False,
    limit: int = 1000,
    clock: Callable[[], dt.datetime] = _now,
    on_item: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Republishes the dead letters `ids` (replayed or not), or with no ids every unreplayed one (up
    to `limit`), and marks each replayed once Pub/Sub confirmed the publish. dry_run only reports."""
    report = ReplayReport()
    chosen: list[tuple[str, dict]] = []
    if ids:
        for message_id in dict.fromkeys(ids):
            doc = store.get_dead_letter(message_id)
            if doc is None:
                report.items.append(ReplayItem(message_id, NOT_FOUND))
            else:
                chosen.append((message_id, doc))
    else:
        chosen = store.unreplayed_dead_letters(limit)
    for n, (message_id, doc) in enumerate(sorted(chosen, key=_order), 1):
        report.items.append(_replay_one(store, publisher, message_id, doc, dry_run, clock))
        if on_item:
            on_item(n, len(chosen))  # the CLI's progress bar
    return report


def _replay_one(store, publisher, message_id: str, doc: dict, dry_run: bool, clock) -> ReplayItem:
    attributes = {str(k): str(v) for k, v in (doc.get("attributes") or {}).items()}
    section_id = attributes.get("section_id") or str(doc.get("section_id") or "")

    def item(outcome: str, detail: str = "") -> ReplayItem:
        event_id, kind = str(doc.get("event_id") or ""), str(doc.get("kind") or "")
        return ReplayItem(message_id, outcome, section_id, event_id, kind, detail)

    encoded = doc.get("data_base64")
    if doc.get("data_parts"):
        data = store.dead_letter_data(message_id, int(doc["data_parts"]))
        if data is None or len(data) != doc.get("data_bytes"):
            return item(NOT_REPLAYABLE, f"the {doc.get('data_parts')} parts of its bytes are not all there")
    elif not encoded:
        return item(NOT_REPLAYABLE, f"its {doc.get('data_bytes')} bytes were too large to keep; only data_text is")
    else:
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return item(NOT_REPLAYABLE, "data_base64 is not valid base64")
    if not section_id:
        return item(NOT_REPLAYABLE, "no section_id attribute to use as the ordering key")
    note = f"already replayed at {doc.get('replayed_at')}, again" if doc.get("replayed") else ""
    if dry_run:
        return item(WOULD_REPLAY, note)
    try:
        new_id = publisher.publish_message(data, section_id, attributes)
    except Exception as exc:  # reported per dead letter; the others still go
        return item(FAILED, f"publish failed: {type(exc).__name__}: {exc}")
    store.mark_replayed(message_id, clock(), new_id)
    return item(REPLAYED, "; ".join(x for x in (note, f"as message {new_id}") if x))


def summary(report: ReplayReport, dry_run: bool) -> str:
    counts = {o: report.count(o) for o in (REPLAYED, WOULD_REPLAY, NOT_FOUND, NOT_REPLAYABLE, FAILED)}
    parts = [f"{n} {o}" for o, n in counts.items() if n]
    head = "dry run: " if dry_run else ""
    return head + (", ".join(parts) if parts else "no dead letters to replay")


def describe_all(items: Iterable[ReplayItem]) -> list[str]:
    return [i.line() for i in items]
