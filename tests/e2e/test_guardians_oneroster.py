"""Guardians from OneRoster end to end (GUARDIANS=invite): parents and guardians linked to students by
`agents` → poll_oneroster (full reads) → Pub/Sub emulator → apply_roster_event → the Classroom
simulator's guardian invitations, with the records in the Firestore emulator."""

from __future__ import annotations

import pytest
import requests
from google.cloud.firestore_v1.base_query import FieldFilter

from tests.e2e.conftest import ADMIN, DOMAIN, PROJECT
from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.oneroster_sim import OneRosterSimulator
from tests.sims.stack import FunctionServer, LocalStack

pytestmark = pytest.mark.e2e

FAMILY = "family.example.com"


def agents(*ids: str) -> list[dict]:
    return [{"href": f"/users/{i}", "sourcedId": i, "type": "user"} for i in ids]


def test_oneroster_parents_are_invited_once_accepted_noticed_and_an_ended_link_removes_only_ours(emulators):
    with (
        OneRosterSimulator() as oneroster,
        ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom,
    ):
        classroom.add_user(ADMIN, "District", "Admin")
        oneroster.add_org("org1", "Lincoln High")
        oneroster.add_course("course1", "Biology")
        env = {
            "ROSTER_SOURCE": "oneroster",
            "ONEROSTER_API_BASE": oneroster.base_url,
            "ONEROSTER_VERSION": "1.2",
            "ONEROSTER_CLIENT_ID": oneroster.client_id,
            "ONEROSTER_CLIENT_SECRET": oneroster.client_secret,
            "ONEROSTER_TOKEN_URL": oneroster.token_url,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "POLL_TIME_BUDGET_SECONDS": "120",
            "CLASSROOM_CALLS_PER_MINUTE": "0",
            "GUARDIANS": "invite",
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            poller = FunctionServer("poll_oneroster", "http", env=stack.env).start()
            try:
                db = stack.firestore_client()

                def poll(full: bool = True) -> dict:
                    resp = requests.post(poller.url, json={"full": full}, timeout=120)
                    assert resp.status_code == 200, f"{resp.text}\n{poller.log_tail()}"
                    result = resp.json()
                    stack.published_total += result["published"]
                    stack.relay.wait_for(stack.published_total, timeout=60)
                    return result

                def states(student: str) -> dict[str, str]:
                    query = db.collection("guardians").where(filter=FieldFilter("student_id", "==", student))
                    return {d.to_dict()["email"]: d.to_dict()["state"] for d in query.stream()}

                kid, kid_email = "kid0", f"kid0@{DOMAIN}"
                classroom.add_user(kid_email, "Kid", "Zero")
                oneroster.add_user(kid, "student", kid_email)
                oneroster.add_user("mom0", "parent", f"mom0@{FAMILY}")
                oneroster.add_user("dad0", "guardian", f"dad0@{FAMILY}")
                oneroster.add_user("aunt0", "relative", f"aunt0@{FAMILY}")  # "Family": not a guardian type
                oneroster.update_user(kid, agents=agents("mom0", "dad0", "aunt0"))
                oneroster.add_class("bio1", "Biology - Period 2")

                first = poll()
                assert first["guardian_changes"] == 1
                pending = {i["invitedEmailAddress"] for i in classroom.invitations_of(kid_email, "PENDING")}
                assert pending == {f"mom0@{FAMILY}", f"dad0@{FAMILY}"}
                assert states(kid) == {f"mom0@{FAMILY}": "pending", f"dad0@{FAMILY}": "pending"}

                classroom.reset_counters()
                poll()  # the next full read: nobody invited twice
                assert classroom.calls["classroom.userProfiles.guardianInvitations.create"] == 0

                classroom.guardian_accepts(kid_email, f"mom0@{FAMILY}")
                classroom.add_guardian_by_hand(kid_email, f"grandpa@{FAMILY}")
                poll()  # a full read's complete change reads pending invitations back first
                assert states(kid)[f"mom0@{FAMILY}"] == "accepted"

                oneroster.update_user(kid, agents=agents("dad0"))  # mom's link ended in the SIS
                poll()
                assert classroom.guardians_of(kid_email) == {f"grandpa@{FAMILY}"}
                assert states(kid) == {f"mom0@{FAMILY}": "removed", f"dad0@{FAMILY}": "pending"}

                # Mid-week, between full reads: a delta brings a new guardian and an ended link.
                oneroster.add_user("gran0", "guardian", f"gran0@{FAMILY}")
                oneroster.update_user(kid, agents=agents("gran0"))  # dad's link ended, gran's started
                classroom.reset_counters()
                delta = poll(full=False)
                assert not delta["full_read"] and delta["guardian_changes"] == 1
                pending = {i["invitedEmailAddress"] for i in classroom.invitations_of(kid_email, "PENDING")}
                assert pending == {f"gran0@{FAMILY}"}
                assert classroom.guardians_of(kid_email) == {f"grandpa@{FAMILY}"}  # hand-added: untouched
                assert states(kid) == {
                    f"mom0@{FAMILY}": "removed",
                    f"dad0@{FAMILY}": "withdrawn",
                    f"gran0@{FAMILY}": "pending",
                }
                assert poll(full=False)["guardian_changes"] == 0  # the overlapping span again: nothing new
            finally:
                poller.stop()


def test_oneroster_csv_bundles_invite_a_parent_added_withdraw_one_removed_and_leave_a_hand_added_guardian(emulators):
    """Bulk bundles (1.1 users.csv: role, agentSourcedIds) through the bucket's notification, the
    importer and the applier: only the student whose agents changed gets a change."""
    import uuid

    from tests.sims.gcs_sim import GcsSimulator
    from tests.sims.stack import PushRelay, create_topic_and_push_subscription, publish_raw
    from tests.unit.test_oneroster_csv import bundle, cls, enr, user

    pubsub, _ = emulators
    topic = "oneroster-bundles"
    kid, kid_email = "kid0", f"kid0@{DOMAIN}"

    def users(*parents: tuple[str, str]) -> list[dict]:
        ids = ",".join(p for p, _ in parents)
        return [
            user("t1", "teacher") | {"email": f"t1@{DOMAIN}"},
            user(kid, "student") | {"email": kid_email, "agentSourcedIds": ids},
            user("kid1", "student") | {"email": f"kid1@{DOMAIN}"},  # nobody's: never a guardian change
            *[user(p, role) | {"email": f"{p}@{FAMILY}"} for p, role in parents],
        ]

    def export(*parents: tuple[str, str]) -> bytes:
        enrollments = [enr("e1", "c1", "t1", "teacher", "true"), enr("e2", "c1", kid, "student")]
        return bundle(classes=[cls("c1", "Biology")], users=users(*parents), enrollments=enrollments)

    with (
        ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom,
        GcsSimulator(on_finalize=lambda attrs, obj: publish_raw(pubsub.host, PROJECT, topic, b"{}", attrs)) as gcs,
    ):
        for address in (ADMIN, f"t1@{DOMAIN}", kid_email, f"kid1@{DOMAIN}"):
            classroom.add_user(address, "Some", "One")
        env = {
            "ROSTER_SOURCE": "oneroster",
            "STORAGE_API_ENDPOINT": gcs.base_url,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "CLASSROOM_CALLS_PER_MINUTE": "0",
            "GUARDIANS": "invite",
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            db = stack.firestore_client()
            for collection in ("oneroster_classes", "oneroster_guardian_links"):
                for doc in db.collection(collection).stream():
                    doc.reference.delete()
            db.collection("sync_state").document("oneroster").delete()
            importer = FunctionServer("import_oneroster_bundle", "cloudevent", env=stack.env).start()
            relay = PushRelay(importer.url).start()
            uploads = [0]

            def upload(data: bytes, messages: int) -> None:
                gcs.upload("district-oneroster-bundles", f"export-{uploads[0]}.zip", data)
                uploads[0] += 1
                relay.wait_for(uploads[0], timeout=60)
                stack.published_total += messages
                stack.relay.wait_for(stack.published_total, timeout=60)

            def states() -> dict[str, str]:
                query = db.collection("guardians").where(filter=FieldFilter("student_id", "==", kid))
                return {d.to_dict()["email"]: d.to_dict()["state"] for d in query.stream()}

            try:
                create_topic_and_push_subscription(
                    pubsub.host, PROJECT, topic, f"{topic}-push-{uuid.uuid4().hex[:8]}", relay.url, ordering=True
                )
                upload(export(("mom0", "parent"), ("dad0", "guardian")), messages=2)  # the course, kid0's guardians
                pending = {i["invitedEmailAddress"] for i in classroom.invitations_of(kid_email, "PENDING")}
                assert pending == {f"mom0@{FAMILY}", f"dad0@{FAMILY}"}
                classroom.add_guardian_by_hand(kid_email, f"grandpa@{FAMILY}")

                classroom.reset_counters()
                upload(export(("mom0", "parent"), ("dad0", "guardian")), messages=0)  # the same export
                assert sum(classroom.calls.values()) == 0

                # dad's link ends (gone from the export), gran's starts: one change, for kid0 only.
                upload(export(("mom0", "parent"), ("gran0", "guardian")), messages=1)
                pending = {i["invitedEmailAddress"] for i in classroom.invitations_of(kid_email, "PENDING")}
                assert pending == {f"mom0@{FAMILY}", f"gran0@{FAMILY}"}
                assert classroom.guardians_of(kid_email) == {f"grandpa@{FAMILY}"}  # hand-added: untouched
                assert states() == {
                    f"mom0@{FAMILY}": "pending",
                    f"dad0@{FAMILY}": "withdrawn",
                    f"gran0@{FAMILY}": "pending",
                }
            finally:
                relay.stop()
                importer.stop()
