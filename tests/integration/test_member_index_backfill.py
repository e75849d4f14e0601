"""Links saved before `member_ids` existed (issue 12): the nightly reconcile pass writes them, so
sections_with_member (a user's email change finds their sections with it) finds their members."""

from __future__ import annotations

from google.cloud import firestore

from tests.integration.test_concurrent_writers import _world, firestore_client  # noqa: F401 (fixture)
from tests.unit.clever_payloads import STUDENTS


def test_the_reconcile_pass_writes_member_ids_of_a_link_saved_without_them(firestore_client):  # noqa: F811
    world = _world(firestore_client, "sec-backfill-1", students=STUDENTS[:4])
    ref = firestore_client.collection("sections").document("sec-backfill-1")
    ref.update({"member_ids": firestore.DELETE_FIELD})  # as an older version saved it
    assert world.store.sections_with_member(STUDENTS[2]) == []
    assert world.store.load_link("sec-backfill-1").unindexed_members

    world.reconciler().reconcile_section("sec-backfill-1")  # nothing else differs from Classroom

    assert set(ref.get().to_dict()["member_ids"]) == set(world.link().members)
    assert world.store.sections_with_member(STUDENTS[2]) == ["sec-backfill-1"]
    assert not world.store.load_link("sec-backfill-1").unindexed_members
    before = ref.get().update_time
    world.reconciler().reconcile_section("sec-backfill-1")
    assert ref.get().update_time == before  # once indexed, a pass with nothing to do writes nothing
