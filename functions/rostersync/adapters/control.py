"""The pause switch: `paused`, `paused_at`/`resumed_at`, `by` and `reason` in Firestore `sync_state/clever`.

It sits in the cursor's document so that a poll learns it with the one read it makes anyway.
While it is set, `poll_clever` reads nothing from Clever, `reconcile_courses` does nothing, and
`apply_roster_event` holds each message in `dead_letters` (held_while_paused) instead of applying
it; `rostersync resume` clears it and republishes what was held. The appliers cache the flag for
PAUSE_CHECK_SECONDS, so `resume` waits that long before it republishes.
"""

from __future__ import annotations

import getpass

from google.cloud import firestore

from rostersync.adapters.admin_store import CALL_TIMEOUT, SHORT_RETRY

SYNC_STATE = "sync_state"
PAUSE_DOC = "clever"  # the poller's cursor document


def _doc(client: firestore.Client):
    return client.collection(SYNC_STATE).document(PAUSE_DOC)


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
