"""Firestore's own arithmetic for a document's size and its index entries, as documented
(https://firebase.google.com/docs/firestore/storage-size and .../query-data/index-overview):
a string is its UTF-8 bytes + 1, a number or timestamp 8, a boolean or null 1, bytes their length,
a map the sum of its field names (+1) and values, an array the sum of its values; a document adds
its name's size and 32 bytes. Automatic single-field indexes: an ascending and a descending entry
for every non-array, non-map value (map subfields included), an array-contains entry per distinct
array element; a field exempt from indexing (with all its subfields) costs none."""

from __future__ import annotations

import datetime as dt

MAX_DOCUMENT_BYTES = 1_048_576
MAX_INDEX_ENTRIES = 40_000


def value_size(value) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | dt.datetime):
        return 8
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list):
        return sum(value_size(v) for v in value)
    if isinstance(value, dict):
        return sum(len(k.encode()) + 1 + value_size(v) for k, v in value.items())
    raise TypeError(type(value))


def document_size(collection: str, document_id: str, doc: dict) -> int:
    name = sum(len(part.encode()) + 1 for part in (collection, document_id)) + 16
    return name + value_size(doc) + 32


def index_entries(doc: dict, exempt: set[str] = frozenset(), prefix: str = "") -> int:
    count = 0
    for key, value in doc.items():
        path = prefix + key
        if path in exempt:
            continue
        if isinstance(value, dict):
            count += index_entries(value, exempt, path + ".")
        elif isinstance(value, list):
            count += len({repr(v) for v in value})
        else:
            count += 2
    return count
