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

                def poll() -> dict:
                    resp = requests.post(poller.url, json={"full": True}, timeout=120)
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
            finally:
                poller.stop()
