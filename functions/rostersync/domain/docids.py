"""Firestore document ids from external strings (Clever and OneRoster ids, problem keys, bundle
names, Pub/Sub message ids): one encoding, used by every store.

Firestore refuses an id that contains '/' (it names a subcollection instead), is '.' or '..',
matches __.*__, or is longer than 1,500 bytes. `doc_id` leaves an ordinary id as it is (a Clever
ObjectId, 24 hex characters, reads the same in the console as before) and percent-encodes the
rest: every character outside [A-Za-z0-9_.:@-] (UTF-8 bytes, '%' itself included), and a '.' or '_'
that would make the id '.', '..' or __x__. That is reversible (`raw_id`). An id still longer than
MAX_ENCODED_BYTES becomes '~' + its SHA-256: not reversible, so every document whose id may be
external also stores the raw value in a field (section_id, sourcedId, ...). '~' is itself encoded
by the reversible form, so the two cannot collide.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

# Firestore takes 1,500 bytes; below that, ids stay short enough to read.
MAX_ENCODED_BYTES = 1_000
# ':' and '@' are valid in ids and common in ours (problem keys, OneRoster sourcedIds): kept, so
# documents written before this encoding keep their ids.
_SAFE = "_.-:@"
EMPTY = "%"  # the id of "": quote() never makes a lone '%'
_DUNDER = re.compile(r"^__.*__$", re.DOTALL)


def doc_id(raw: str) -> str:
    """The Firestore document id for `raw` (any string; an empty one too)."""
    if not isinstance(raw, str):
        raise TypeError(f"a document id is made from a string, not {type(raw).__name__}")
    # quote() leaves '~' alone; we encode it, so that only a hashed id starts with one.
    encoded = quote(raw, safe=_SAFE, errors="surrogatepass").replace("~", "%7E")
    if encoded in ("", ".", ".."):
        encoded = encoded.replace(".", "%2E") or EMPTY
    elif _DUNDER.match(encoded):
        encoded = "%5F" + encoded[1:]
    if len(encoded) > MAX_ENCODED_BYTES:
        return "~" + hashlib.sha256(raw.encode("utf-8", errors="surrogatepass")).hexdigest()
    return encoded


def raw_id(document_id: str) -> str | None:
    """The string `doc_id` made `document_id` from; None for a hashed one (read the document's
    raw field instead)."""
    if document_id.startswith("~"):
        return None
    if document_id == EMPTY:
        return ""
    return unquote(document_id, errors="surrogatepass")
