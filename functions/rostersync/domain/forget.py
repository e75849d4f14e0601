"""`rostersync forget USER`: a person's data out of every collection (a district's deletion request).

USER is a Clever id, a OneRoster sourcedId or an email. The person is first resolved to every id
and email rostersync knows them by (a link's member entry, a problem, a OneRoster enrollment name
both), then each document is judged on its own (pure: `plan_document`, no I/O):

- documents that are *about* the person (problems, overrides, audit entries) are deleted;
- documents that hold the person among others (a section's link: its member entry, owner email,
  teacher_added; a OneRoster class's enrollment; a held batch's changes; a dead letter's message)
  lose the parts that name them, and are rewritten;
- anything else that still names them (a sentence with their email) has that text replaced.

One audit entry records that an administrator did it, naming the person by id only (never the
email). Running it again finds nothing and writes nothing: idempotent. The Firestore side
(forget_store.py) writes each document with a precondition on the version it read.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from rostersync.domain.docids import raw_id

# Documents about one person: deleted whole.
ABOUT_ONE_PERSON = {"problems", "overrides", "audit"}
# Collections whose document ids name people (a guardian record `{student}__{email}`, a OneRoster
# student's saved guardian links `{student}`): a document whose id names the person is deleted,
# since a scrubbed copy would keep their id or email in its name.
NAMED_BY_PERSON = {"guardians", "oneroster_guardian_links"}
FORGOTTEN = "[forgotten]"
# The audit entry `forget` leaves; never itself forgotten (so a second run finds nothing).
FORGET_KIND = "forget"


@dataclass
class Identity:
    ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)

    def matches_text(self, text: str) -> bool:
        low = text.lower()
        if text in self.ids or low in self.emails:
            return True
        if any(e in low for e in self.emails):
            return True
        # A long id (Clever's 24 hex digits) inside a sentence or a JSON string; a short sourcedId
        # only as the whole value, so "s1" does not match "s10".
        return any(len(i) >= 12 and i in text for i in self.ids)

    def mentioned_in(self, value) -> bool:
        if isinstance(value, str):
            if self.matches_text(value):
                return True
            parsed = _json(value)
            return parsed is not None and self.mentioned_in(parsed)
        if isinstance(value, dict):
            return any(self.matches_text(str(k)) or self.mentioned_in(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return any(self.mentioned_in(v) for v in value)
        return False


def _json(text: str):
    if not text or text[0] not in "[{":
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def resolve(user: str, documents) -> Identity:
    """Every id and email the person is known by, from `documents` ((collection, path, data) triples)."""
    user = user.strip()
    identity = Identity(emails={user.lower()}) if "@" in user else Identity(ids={user})
    for _collection, _doc_id, data in documents:
        for entry in _person_entries(data):
            cid = str(entry.get("clever_id") or entry.get("user_id") or entry.get("owner_clever_id") or "")
            email = str(entry.get("email") or entry.get("owner_email") or "").lower()
            if cid and (cid in identity.ids or (email and email in identity.emails)):
                identity.ids.add(cid)
                if email:
                    identity.emails.add(email)
            elif email and email in identity.emails and cid:
                identity.ids.add(cid)
    identity.emails.discard("")
    identity.ids.discard("")
    return identity


def _person_entries(value):
    """Every dict (at any depth) that names a person by id and email."""
    if isinstance(value, dict):
        if ("clever_id" in value or "user_id" in value or "owner_clever_id" in value) and (
            "email" in value or "owner_email" in value
        ):
            yield value
        for v in value.values():
            yield from _person_entries(v)
    elif isinstance(value, list):
        for v in value:
            yield from _person_entries(v)


@dataclass
class Action:
    collection: str
    path: str  # collection/doc[/subcollection/doc]
    kind: str  # "delete" | "update"
    data: dict | None = None  # the whole new document, for "update"


def plan_document(collection: str, path: str, data: dict, who: Identity) -> Action | None:
    """What to do with one document so it no longer names the person (None: it does not)."""
    doc_id = path.rsplit("/", 1)[-1]
    if collection == "audit" and data.get("kind") == FORGET_KIND:
        return None
    if not (who.mentioned_in(data) or who.matches_text(doc_id) or _dead_letter_mentions(data, who)):
        return None
    if collection in ABOUT_ONE_PERSON or (collection in NAMED_BY_PERSON and _names(doc_id, who)):
        return Action(collection, path, "delete")
    new = _scrub_dead_letter(data, who) if "data_text" in data or "data_base64" in data else dict(data)
    if new is None:
        return Action(collection, path, "delete")  # a message of only their changes
    new = {k: _scrub_top(k, v, who) for k, v in new.items()}
    if who.mentioned_in(new):
        return Action(collection, path, "delete")  # nothing else can be done: better gone than kept
    return Action(collection, path, "update", new)


def _names(doc_id: str, who: Identity) -> bool:
    """Whether a document id made of encoded parts joined by `__` names the person (a short
    sourcedId counts as a whole part only)."""
    parts = [p for p in (raw_id(part) for part in doc_id.split("__")) if p]  # a hashed part: None
    return who.matches_text(doc_id) or any(p in who.ids or p.lower() in who.emails for p in parts)


def _scrub_top(key: str, value, who: Identity):
    if isinstance(value, str) and who.matches_text(value):
        # A field naming them (owner_email, owner_clever_id, failed_owner_email) is emptied; a
        # sentence naming them is replaced.
        return None if key.endswith(("email", "_id", "clever_id")) else FORGOTTEN
    return _scrub(value, who)


def _scrub(value, who: Identity):
    """Nested containers without the entries that name the person; sentences naming them replaced."""
    if isinstance(value, dict):
        return {
            k: _scrub(v, who)
            for k, v in value.items()
            if not who.matches_text(str(k)) and not (isinstance(v, dict) and who.mentioned_in(v))
        }
    if isinstance(value, list):
        kept = []
        for v in value:
            if isinstance(v, str) and isinstance(_json(v), dict) and who.mentioned_in(v):
                # A roster message kept as text (a held batch's part): without their changes, so
                # that everyone else's held changes stay.
                message = _scrub_message_text(v, who)
                if message is not None:
                    kept.append(message)
            elif not who.mentioned_in(v):
                kept.append(_scrub(v, who))
        return kept
    if isinstance(value, str) and who.matches_text(value):
        return FORGOTTEN
    return value


def _scrub_message_text(text: str, who: Identity) -> str | None:
    """A message (changes.encode_message) without the person: a change about them goes whole, a
    snapshot loses their entry; None when nothing of the message is left."""
    message = _json(text)
    if "changes" in message:
        scrubbed = _scrub(message, who)
        if not scrubbed.get("changes"):
            return None
    elif who.mentioned_in(message.get("person")):
        return None  # one change, about them
    else:
        scrubbed = _scrub(message, who)
    if who.mentioned_in(scrubbed):
        return None
    return json.dumps(scrubbed, separators=(",", ":"), sort_keys=True)


def _message_text(data: dict) -> str:
    if data.get("data_base64"):
        try:
            return base64.b64decode(data["data_base64"]).decode("utf-8", "replace")
        except ValueError:
            return ""
    return str(data.get("data_text") or "")


def _dead_letter_mentions(data: dict, who: Identity) -> bool:
    return ("data_base64" in data or "data_text" in data) and who.mentioned_in(_message_text(data))


def _scrub_dead_letter(data: dict, who: Identity) -> dict | None:
    """A dead letter's message without the person's changes; None when nothing else is left."""
    text = _message_text(data)
    parsed = _json(text)
    if parsed is None:
        return None if who.mentioned_in(text) else dict(data)
    kept = _scrub(parsed, who)
    changes = kept.get("changes") if isinstance(kept, dict) else kept
    if isinstance(changes, list) and not changes:
        return None
    raw = json.dumps(kept, separators=(",", ":"), sort_keys=True).encode()
    return {
        **data,
        "data_text": raw.decode(),
        "data_base64": base64.b64encode(raw).decode("ascii"),
        "data_bytes": len(raw),
        "data_truncated": False,
    }


def plan(documents, who: Identity) -> list[Action]:
    return [a for c, i, d in documents if (a := plan_document(c, i, d, who)) is not None]


def audit_entry(who: Identity, actions: list[Action]) -> dict:
    """The audit trail's record of the deletion: by id only, never the email."""
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.collection] = counts.get(a.collection, 0) + 1
    return {
        "section_id": "",
        "outcome": "applied",
        "what": "an administrator removed this person's data (rostersync forget): "
        + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())),
        "event_id": "",
        "kind": FORGET_KIND,
        "clever_id": ",".join(sorted(who.ids)) or None,
        "email": None,
        "course_id": None,
    }
