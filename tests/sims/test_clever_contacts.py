"""The Clever simulator's contacts: the v3.0 Contact shape (roles.contact.student_relationships),
the role filter, and the users.* events a contact's changes emit."""

import requests

from tests.sims.clever_sim import CleverSimulator


def get(clever, path, **params):
    resp = requests.get(
        f"{clever.base_url}/v3.0/{path}", params=params, headers={"Authorization": f"Bearer {clever.token}"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_contacts_are_users_with_the_contact_role_and_their_changes_are_events():
    with CleverSimulator() as clever:
        kid = clever.add_user("student", "kid@d.org", "Kid", "One", emit=False)
        mom = clever.add_contact("mom@f.org", "Mom", "One", [(kid, "Parent", "Parent/Guardian")])
        [listed] = [item["data"] for item in get(clever, "users", role="contact")["data"]]
        assert listed["id"] == mom and listed["email"] == "mom@f.org"
        role = listed["roles"]["contact"]
        assert role["student_relationships"] == [{"student": kid, "relationship": "Parent", "type": "Parent/Guardian"}]
        assert set(role) >= {"phone", "phone_type", "sis_id", "legacy_id"} and "student" not in listed["roles"]
        assert [item["data"]["id"] for item in get(clever, "users", role="student")["data"]] == [kid]

        clever.set_relationships(mom, [(kid, "Parent", "Emergency")])
        clever.update_user(mom, email="mom.new@f.org")
        clever.delete_user(mom)
        created, updated, moved, deleted = (e for e in clever.events if e["type"].startswith("users."))
        assert created["type"] == "users.created" and created["data"]["object"]["id"] == mom
        old = updated["data"]["previous_attributes"]["roles"]["contact"]["student_relationships"]
        assert old == [{"student": kid, "relationship": "Parent", "type": "Parent/Guardian"}]  # the array whole
        assert moved["data"]["previous_attributes"] == {"email": "mom@f.org"}
        assert deleted["type"] == "users.deleted" and deleted["data"]["object"]["email"] == "mom.new@f.org"
        assert get(clever, "users", role="contact")["data"] == []
