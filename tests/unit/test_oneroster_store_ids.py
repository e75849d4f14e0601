"""OneRoster sourcedIds and bundle names as Firestore document ids: any value works, none collide."""

import re

from rostersync.domain.docids import doc_id as _doc_id

HOSTILE = [
    "exports/roster.zip",
    "a/b/c",
    "/",
    ".",
    "..",
    "__name__",
    "__x",
    "~",
    "~a",
    "%2F",
    "a%2Fb",
    "a/b",
    "class 1 (period 2)",
    "Ünïcødé-Klasse",
    "x" * 2000,
    "x" * 2000 + "/",
    "é" * 900,
    "",
    "\n",
    "bundle:exports/2026-09/roster.zip",
]


def valid(doc_id: str) -> bool:
    return (
        0 < len(doc_id.encode()) <= 1500
        and "/" not in doc_id
        and doc_id not in (".", "..")
        and not re.fullmatch(r"__.*__", doc_id)
    )


def test_every_value_gives_a_valid_document_id_and_no_two_collide():
    plain = [
        "c1",
        "CLASS-0001_a.b",
        "oneroster:provider",
        "bundle:export-1.zip",
        "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ]
    ids = [_doc_id(v) for v in HOSTILE + plain]
    assert all(valid(i) for i in ids), [i for i in ids if not valid(i)]
    assert len(set(ids)) == len(ids)
    assert [_doc_id(v) for v in plain] == plain  # documents written before the encoding keep their ids
