"""OneRoster bundles end to end with names and ids real exports have (`exports/2026/roster.zip`,
sourcedIds with '/'), and a broken zip rejected as a problem and acknowledged, never redelivered."""

from __future__ import annotations

import pytest

from tests.e2e.test_oneroster_csv import BUCKET, USERS, email, world  # noqa: F401 (the fixture)
from tests.unit.test_oneroster_bad_bundles import patch_entry
from tests.unit.test_oneroster_csv import bundle, cls, enr

pytestmark = pytest.mark.e2e


def upload(world, name: str, data: bytes, roster_messages: int) -> None:  # noqa: F811
    world.gcs.upload(BUCKET, name, data)
    world.uploads += 1
    world.relay.wait_for(world.uploads, timeout=60)
    world.stack.published_total += roster_messages
    world.stack.relay.wait_for(world.stack.published_total, timeout=60)


def test_slashes_in_bundle_names_and_sourced_ids_and_a_broken_zip(world):  # noqa: F811
    class_id = "sch/12/bio:2026-27"
    good = bundle(
        classes=[cls(class_id, "Biology")],
        users=USERS,
        enrollments=[
            enr("enr/t1", class_id, "t1", "teacher", "true"),
            enr("enr/s1", class_id, "s1", "student"),
            enr("enr/s2", class_id, "s2", "student"),
        ],
    )
    upload(world, "exports/2026/roster.zip", good, roster_messages=1)
    roster = world.classroom.roster(f"d:clever-{class_id}")
    assert roster["owner"] == email("t1") and roster["students"] == {email("s1"), email("s2")}
    db = world.stack.firestore_client()
    (state,) = [d.to_dict() for d in db.collection("oneroster_classes").stream()]
    assert state["class_id"] == class_id and set(state["enrollments"]) == {"enr/t1", "enr/s1", "enr/s2"}

    # An encrypted export under a nested name: rejected whole, recorded, acknowledged (the relay
    # saw its one delivery acked), and nothing changed.
    upload(world, "exports/2026/roster-2.zip", patch_entry(good, "enrollments.csv", flag=0x1), roster_messages=0)
    problems = world.problems()
    assert [p["message"] for p in problems] == [
        "OneRoster bundle exports/2026/roster-2.zip was rejected whole: enrollments.csv is encrypted"
    ]
    assert world.relay.delivered == world.uploads  # no redelivery
    assert world.classroom.roster(f"d:clever-{class_id}")["students"] == {email("s1"), email("s2")}

    # A delta under another nested name still applies after it.
    delta = bundle("delta", enrollments=[enr("enr/s2", class_id, "s2", "student", status="tobedeleted")])
    upload(world, "exports/2026/roster-3.zip", delta, roster_messages=1)
    assert world.classroom.roster(f"d:clever-{class_id}")["students"] == {email("s1")}
