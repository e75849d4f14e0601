"""OneRoster CSV bundles end to end: a zip uploaded to the Cloud Storage simulator → its
OBJECT_FINALIZE notification through the Pub/Sub emulator → import_oneroster_bundle (reading the
object through the storage v1 API) → roster-events → apply_roster_event → Classroom simulator."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import ADMIN, DOMAIN, PROJECT
from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.gcs_sim import GcsSimulator
from tests.sims.stack import FunctionServer, LocalStack, PushRelay, create_topic_and_push_subscription, publish_raw
from tests.unit.test_oneroster_csv import bundle, cls, enr, user

pytestmark = pytest.mark.e2e
BUCKET = "district-oneroster-bundles"
TOPIC = "oneroster-bundles"


def email(sid: str) -> str:
    return f"{sid}@{DOMAIN}"  # the Classroom simulator's domain: only its users may own courses


class BundleWorld:
    def __init__(self, gcs, classroom, stack, relay):
        self.gcs, self.classroom, self.stack, self.relay = gcs, classroom, stack, relay
        self.uploads = 0

    def upload(self, data: bytes, roster_messages: int) -> None:
        """Uploads a bundle, waits for its import, then for the roster messages it should publish."""
        self.gcs.upload(BUCKET, f"export-{self.uploads}.zip", data)
        self.uploads += 1
        self.relay.wait_for(self.uploads, timeout=60)
        self.stack.published_total += roster_messages
        self.stack.relay.wait_for(self.stack.published_total, timeout=60)

    def problems(self) -> list[dict]:
        docs = self.stack.firestore_client().collection("problems").stream()
        return [d.to_dict() for d in docs if d.to_dict().get("kind") == "bad_oneroster_bundle"]


@pytest.fixture
def world(emulators):
    pubsub, _ = emulators
    with (
        ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom,
        GcsSimulator(on_finalize=lambda attrs, obj: publish_raw(pubsub.host, PROJECT, TOPIC, b"{}", attrs)) as gcs,
    ):
        classroom.add_user(ADMIN, "District", "Admin")
        for sid in ("t1", "t2", "s1", "s2", "s3"):
            classroom.add_user(email(sid), sid, "User")
        env = {
            "ROSTER_SOURCE": "oneroster",
            "STORAGE_API_ENDPOINT": gcs.base_url,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "CLASSROOM_CALLS_PER_MINUTE": "0",
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            db = stack.firestore_client()
            for doc in db.collection("oneroster_classes").stream():
                doc.reference.delete()
            db.collection("sync_state").document("oneroster").delete()
            importer = FunctionServer("import_oneroster_bundle", "cloudevent", env=stack.env).start()
            relay = PushRelay(importer.url).start()
            try:
                create_topic_and_push_subscription(
                    pubsub.host, PROJECT, TOPIC, f"{TOPIC}-push-{uuid.uuid4().hex[:8]}", relay.url, ordering=True
                )
                yield BundleWorld(gcs, classroom, stack, relay)
            finally:
                relay.stop()
                importer.stop()


USERS = [
    user(sid, role) | {"email": email(sid)}
    for sid, role in (("t1", "teacher"), ("t2", "teacher"), ("s1", "student"), ("s2", "student"))
]


def bulk(students=("s1", "s2"), owner="t1", title="Chemistry"):
    enrollments = [enr("e-t1", "c1", "t1", "teacher", "true" if owner == "t1" else "false")]
    if owner == "t2":
        enrollments.append(enr("e-t2", "c1", "t2", "teacher", "true"))
    enrollments += [enr(f"e-{s}", "c1", s, "student") for s in students]
    return bundle(classes=[cls("c1", title)], users=USERS, enrollments=enrollments)


def test_bulk_delta_bulk_and_a_malformed_bundle(world):
    world.upload(bulk(), roster_messages=1)
    roster = world.classroom.roster("d:clever-c1")
    assert roster["state"] == "PROVISIONED" and roster["owner"] == email("t1")
    assert roster["students"] == {email("s1"), email("s2")}

    # A delta bundle adds s3 (a teacher-added student stays through all of this).
    course_id = world.classroom.course("d:clever-c1")["id"]
    world.classroom.teacher_add_student(course_id, email("s3"))
    world.classroom.teacher_rename(course_id, "Chem (mine)")
    delta = bundle("delta", enrollments=[enr("e-s1", "c1", "s1", "student", status="tobedeleted")])
    world.upload(delta, roster_messages=1)
    assert world.classroom.roster("d:clever-c1")["students"] == {email("s2"), email("s3")}

    # A malformed bundle is rejected whole, with the reason recorded; nothing changes.
    world.upload(b"PK not really a zip", roster_messages=0)
    assert [p["message"] for p in world.problems()] == [
        "OneRoster bundle export-2.zip was rejected whole: not a zip file"
    ]

    # The next bulk export has neither s1 nor s2 (s2 is simply missing), a new title and a new owner.
    world.upload(bulk(students=(), owner="t2", title="Chemistry II"), roster_messages=1)
    roster = world.classroom.roster("d:clever-c1")
    assert roster["students"] == {email("s3")}
    assert roster["owner"] == email("t2") and roster["name"] == "Chem (mine)"
