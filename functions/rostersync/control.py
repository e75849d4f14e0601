"""The pause switch: Firestore `sync_state/control` {paused, paused_at, paused_by, reason}.

`python -m rostersync pause` sets it; `poll_clever` (functions/main.py) answers 200 with outcome
"paused" without polling while it is set. Changes already published still get applied.
"""

from __future__ import annotations

import getpass

from google.cloud import firestore

from rostersync.admin_store import CALL_TIMEOUT, SHORT_RETRY

SYNC_STATE = "sync_state"
CONTROL_DOC = "control"


def _doc(client: firestore.Client):
    return client.collection(SYNC_STATE).document(CONTROL_DOC)


def is_paused(client: firestore.Client) -> bool:
    snap = _doc(client).get(retry=SHORT_RETRY, timeout=CALL_TIMEOUT)
    return bool(snap.exists and (snap.to_dict() or {}).get("paused"))


def set_paused(client: firestore.Client, paused: bool, reason: str = "") -> None:
    try:
        who = getpass.getuser()
    except Exception:
        who = "?"
    field = "paused_at" if paused else "resumed_at"
    _doc(client).set(
        {"paused": paused, field: firestore.SERVER_TIMESTAMP, "by": who, "reason": reason},
        merge=True,
        retry=SHORT_RETRY,
        timeout=CALL_TIMEOUT,
    )
