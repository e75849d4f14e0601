"""End-to-end fixtures: the real emulators (once per session), both functions under
functions-framework, and fresh Clever and Classroom simulators for every test."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.emulators import start_emulators
from tests.sims.stack import FunctionServer, LocalStack

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


# --------------------------------------------------------------------------------------------------
# No student data in the logs (issue 14): every function server an e2e test starts logs at DEBUG,
# and after the test each line of its output is checked for full emails, people's names and tokens.

EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.")


def pii_in_lines(lines, names=(), secrets=()) -> list[str]:
    """The lines that show a full email (a masked one, `j***@...`, is fine), one of the names, one
    of the secrets, or a JWT."""
    found = []
    for line in lines:
        emails = [e for e in EMAIL.findall(line) if "***" not in e]
        named = [n for n in names if n and n.lower() in line.lower()]
        leaked = [s for s in secrets if s and s in line]
        if emails or named or leaked or JWT.search(line):
            found.append(line.strip()[:300])
    return found


def people_names(world: World | None) -> list[str]:
    """The full names ("First Last") of the district's Clever users."""
    if world is None:
        return []
    names = []
    for user_id in list(world.clever._users):
        name = world.clever.user(user_id).get("name") or {}
        names.append(f"{name.get('first', '')} {name.get('last', '')}".strip())
    return [n for n in names if " " in n]


@pytest.fixture(autouse=True)
def logs_name_no_one(request, monkeypatch):
    """Runs every function server at LOG_LEVEL=debug and fails the test on a line with PII."""
    monkeypatch.setenv("LOG_LEVEL", "debug")
    servers: list[FunctionServer] = []
    original = FunctionServer.start

    def start(self):
        servers.append(self)
        return original(self)

    monkeypatch.setattr(FunctionServer, "start", start)
    yield servers
    world = request.node.funcargs.get("world")
    names = people_names(world) if isinstance(world, World) else []
    secrets = [world.clever.token] if isinstance(world, World) else []
    leaks = []
    for server in servers:
        if server.log_path is None or not server.log_path.exists():
            continue
        lines = server.log_path.read_text(errors="replace").splitlines()[1:]  # [0] is the command line
        leaks += [f"{server.target}: {line}" for line in pii_in_lines(lines, names, secrets)]
    assert not leaks, "personal data or tokens in the function logs:\n" + "\n".join(leaks[:20])
