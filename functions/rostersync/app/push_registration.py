"""Keeps Classroom's push-notification registration alive.

A registration lasts a week and is extended by making the same registrations.create request again
(Classroom answers with the same registrationId and a new expiryTime). Classroom refuses it under
domain-wide delegation (@MissingGrant), so it is made with an administrator's own OAuth grant,
given once with `rostersync consent-notifications` and kept in Secret Manager. The scheduled
function renew_classroom_registration runs daily: well inside the week, so one failed day (a
revoked grant, an outage) leaves six more to notice it in sync_state/classroom_notifications.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

PUSH_SCOPES = [
    "https://www.googleapis.com/auth/classroom.push-notifications",
    "https://www.googleapis.com/auth/classroom.rosters.readonly",
]
DOMAIN_ROSTER_FEED = {"feedType": "DOMAIN_ROSTER_CHANGES"}


class RegistrationPort(Protocol):
    def create_registration(self, feed: dict, topic_name: str) -> dict: ...


class RegistrationStatePort(Protocol):
    def save_registration(self, state: dict) -> None: ...


@dataclass(frozen=True)
class RenewalResult:
    registration_id: str
    expiry_time: str
    topic: str
    outcome: str = "renewed"

    def to_json(self) -> dict:
        return {
            "outcome": self.outcome,
            "registration_id": self.registration_id,
            "expiry_time": self.expiry_time,
            "topic": self.topic,
        }


class RegistrationRenewer:
    def __init__(self, registrations: RegistrationPort, state: RegistrationStatePort, topic_name: str):
        self._registrations = registrations
        self._state = state
        self._topic = topic_name

    def renew(self) -> RenewalResult:
        """Creates or extends the domain roster registration; the same request is idempotent."""
        try:
            answer = self._registrations.create_registration(DOMAIN_ROSTER_FEED, self._topic)
        except Exception as exc:
            # Recorded for the administrator (rostersync status, the status page) before failing.
            self._state.save_registration(
                {"last_error": f"{type(exc).__name__}: {exc}"[:500], "failed_at": _now(), "topic": self._topic}
            )
            raise
        result = RenewalResult(
            str(answer.get("registrationId") or ""), str(answer.get("expiryTime") or ""), self._topic
        )
        self._state.save_registration(
            {
                "registration_id": result.registration_id,
                "expiry_time": result.expiry_time,
                "topic": self._topic,
                "feed": DOMAIN_ROSTER_FEED["feedType"],
                "renewed_at": _now(),
                "last_error": None,
            }
        )
        return result


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
