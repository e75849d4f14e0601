"""End-to-end fixtures: the real emulators (once per session), both functions under
functions-framework, and fresh Clever and Classroom simulators for every test."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.emulators import start_emulators
from tests.sims.stack import LocalStack

PROJECT = "rostersync-e2e"
DOMAIN = "district.example.org"
ADMIN = f"admin@{DOMAIN}"


@pytest.fixture(scope="session")
def emulators():
    pubsub, firestore = start_emulators(PROJECT)
    try:
        yield pubsub, firestore
    finally:
        pubsub.stop()
        firestore.stop()


@dataclass
class World:
    clever: CleverSimulator
    classroom: ClassroomSimulator
    stack: LocalStack

    def person(self, role: str, first: str, last: str, google: bool = True, email: str | None = "") -> str:
        """A Clever user; with google=True also a Google account with the same email."""
        if email == "":
            email = f"{first}.{last}@{DOMAIN}".lower()
        user_id = self.clever.add_user(role, email, first, last, emit=False)
        if google and email:
            self.classroom.add_user(email, first, last)
        return user_id

    def email(self, clever_id: str) -> str:
        return self.clever.user(clever_id)["email"]

    def emails(self, *clever_ids: str) -> set[str]:
        return {self.email(c) for c in clever_ids}

    def db(self):
        return self.stack.firestore_client()

    def link(self, section_id: str) -> dict | None:
        snap = self.db().collection("sections").document(section_id).get()
        return snap.to_dict() if snap.exists else None

    def open_problems(self) -> list[dict]:
        query = self.db().collection("problems").where(filter=FieldFilter("open", "==", True))
        return [d.to_dict() for d in query.stream()]


@pytest.fixture
def world(emulators):
    with CleverSimulator() as clever, ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom:
        classroom.add_user(ADMIN, "District", "Admin")
        env = {
            "CLEVER_API_BASE": clever.base_url,
            "CLEVER_TOKEN": clever.token,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "POLL_TIME_BUDGET_SECONDS": "120",
            # One local process plays every applier instance: the cloud's per-instance limit is off.
            "CLASSROOM_CALLS_PER_MINUTE": "0",
            # The appliers look at the pause flag on every message (the cloud caches it 30 s).
            "PAUSE_CHECK_SECONDS": "0",
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            yield World(clever, classroom, stack)
