"""Dead letters (deadletters.py): recording, replaying, and the admin command, with fakes."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import itertools

import pytest
from rostersync import wiring
from rostersync.admin import cli
from rostersync.app import deadletters
from rostersync.app.deadletters import (
    DATA_KEEP_LIMIT,
    DATA_TEXT_LIMIT,
    FAILED,
    NOT_FOUND,
    NOT_REPLAYABLE,
    REPLAYED,
    WOULD_REPLAY,
    DeadLetterRecorder,
    decode_push_data,
    replay_dead_letters,
)

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
ATTRS = {"section_id": "sec1", "event_id": "ev0002", "kind": "student_added"}
DL_ATTRS = {
    "CloudPubSubDeadLetterSourceDeliveryCount": "5",
    "CloudPubSubDeadLetterSourceSubscription": "roster-events-apply",
    "CloudPubSubDeadLetterSourceSubscriptionProject": "district-project",
    "CloudPubSubDeadLetterSourceTopicPublishTime": "2025-03-01T11:00:00Z",
}


class FakeDeadLetterStore:
    def __init__(self):
        self.docs: dict[str, dict] = {}
        self.parts: dict[str, list[bytes]] = {}

    def create_dead_letter(self, message_id, doc, parts=()):
        self.parts[message_id] = list(parts)  # first, as the Firestore store does
        if message_id in self.docs:
            return False
        self.docs[message_id] = copy.deepcopy(doc)
        return True

    def dead_letter_data(self, message_id, parts):
        kept = self.parts.get(message_id, [])
        return b"".join(kept) if len(kept) == parts else None

    def get_dead_letter(self, message_id):
        return copy.deepcopy(self.docs.get(message_id))

    def unreplayed_dead_letters(self, limit):
        return [(k, copy.deepcopy(v)) for k, v in self.docs.items() if v["replayed"] is False][:limit]

    def mark_replayed(self, message_id, replayed_at, replay_message_id):
        self.docs[message_id].update(replayed=True, replayed_at=replayed_at, replay_message_id=replay_message_id)


class FakePublisher:
    def __init__(self, fail_for: set[str] = frozenset()):
        self.published: list[tuple[bytes, str, dict]] = []
        self.fail_for = set(fail_for)
        self._ids = itertools.count(9000)

    def publish_message(self, data, ordering_key, attributes):
        if ordering_key in self.fail_for:
            raise RuntimeError("pubsub unavailable")
        self.published.append((data, ordering_key, dict(attributes)))
        return str(next(self._ids))


@pytest.fixture
def store():
    return FakeDeadLetterStore()


def record(store, message_id="m1", data=b'{"kind":"student_added"}', attributes=None, attempt=None):
    recorder = DeadLetterRecorder(store, clock=lambda: T0)
    attributes = {**ATTRS, **DL_ATTRS} if attributes is None else attributes
    return recorder.record(message_id, data, attributes, delivery_attempt=attempt, publish_time="2025-03-01T11:00:00Z")


def test_a_dead_letter_is_recorded_with_its_attributes_and_the_reason(store):
    outcome = record(store)
    assert outcome.created and outcome.section_id == "sec1" and outcome.event_id == "ev0002"
    doc = store.docs["m1"]
    assert doc["attributes"] == ATTRS
    assert doc["dead_letter_attributes"] == DL_ATTRS
    assert (doc["section_id"], doc["event_id"], doc["kind"]) == ("sec1", "ev0002", "student_added")
    assert doc["data_text"] == '{"kind":"student_added"}'
    assert base64.b64decode(doc["data_base64"]) == b'{"kind":"student_added"}'
    assert doc["delivery_attempts"] == 5  # from Pub/Sub's dead-letter attribute
    assert doc["source_subscription"] == "roster-events-apply"
    assert doc["reason"].startswith("delivery attempts exhausted")
    assert "not part of the message" in doc["reason"]
    assert doc["received_at"] == T0
    assert doc["replayed"] is False and doc["replayed_at"] is None


def test_the_push_delivery_attempt_wins_over_the_attribute(store):
    record(store, attempt=7)
    assert store.docs["m1"]["delivery_attempts"] == 7


def test_without_a_count_the_attempts_are_none(store):
    record(store, attributes=ATTRS)
    assert store.docs["m1"]["delivery_attempts"] is None


def test_recording_is_idempotent_per_message_id(store):
    record(store)
    store.docs["m1"]["replayed"] = True
    again = record(store, data=b"something else")
    assert not again.created
    assert store.docs["m1"]["replayed"] is True
    assert store.docs["m1"]["data_text"] == '{"kind":"student_added"}'


def test_large_data_is_cut_in_the_text_and_kept_whole_in_parts(store):
    big = bytes(range(256)) * 9_000  # 2.3 MB: larger than one Firestore document
    record(store, data=big)
    doc = store.docs["m1"]
    assert len(doc["data_text"]) == DATA_TEXT_LIMIT and doc["data_truncated"] is True
    assert doc["data_base64"] is None and doc["data_bytes"] == len(big)
    assert doc["data_parts"] == 3 and b"".join(store.parts["m1"]) == big
    report = replay_dead_letters(store, publisher := FakePublisher())
    assert [i.outcome for i in report.items] == [REPLAYED]
    assert publisher.published[0][0] == big


def test_binary_data_is_kept_exactly_and_shown_as_text_with_replacements(store):
    record(store, data=b"\xff\xfe{")
    doc = store.docs["m1"]
    assert base64.b64decode(doc["data_base64"]) == b"\xff\xfe{"
    assert doc["data_text"].endswith("{")


def test_a_message_without_an_id_is_refused(store):
    with pytest.raises(ValueError):
        record(store, message_id="")


def test_push_data_decoding():
    assert decode_push_data(base64.b64encode(b"abc").decode()) == b"abc"
    assert decode_push_data("not base64!") == b"not base64!"
    assert decode_push_data(None) == b""


# -- replay ---------------------------------------------------------------------------------------


def test_replay_republishes_every_unreplayed_one_in_event_order_and_marks_them(store):
    record(store, "m2", b"second", {**ATTRS, "event_id": "ev0003", **DL_ATTRS})
    record(store, "m1", b"first", {**ATTRS, **DL_ATTRS})
    record(store, "m3", b"other", {"section_id": "sec2", "event_id": "ev0001", "kind": "course_wanted"})
    store.docs["m3"]["replayed"] = True
    publisher = FakePublisher()
    report = replay_dead_letters(store, publisher, clock=lambda: T0)
    assert [i.message_id for i in report.items] == ["m1", "m2"]
    assert report.ok and report.count(REPLAYED) == 2
    assert publisher.published == [
        (b"first", "sec1", ATTRS),  # the original attributes, not Pub/Sub's dead-letter ones
        (b"second", "sec1", {**ATTRS, "event_id": "ev0003"}),
    ]
    assert store.docs["m1"]["replayed"] is True and store.docs["m1"]["replayed_at"] == T0
    assert store.docs["m1"]["replay_message_id"] == "9000"
    assert replay_dead_letters(store, publisher).items == []  # nothing left


def test_replay_of_chosen_ids_also_replays_again_and_reports_unknown_ids(store):
    record(store, "m1")
    store.docs["m1"]["replayed"] = True
    publisher = FakePublisher()
    report = replay_dead_letters(store, publisher, ids=["m1", "nope"])
    outcomes = {i.message_id: i for i in report.items}
    assert outcomes["nope"].outcome == NOT_FOUND
    assert outcomes["m1"].outcome == REPLAYED and "again" in outcomes["m1"].detail
    assert len(publisher.published) == 1
    assert not report.ok


def test_dry_run_publishes_nothing_and_marks_nothing(store):
    record(store, "m1")
    report = replay_dead_letters(store, None, dry_run=True)
    assert [i.outcome for i in report.items] == [WOULD_REPLAY]
    assert store.docs["m1"]["replayed"] is False


def test_what_cannot_be_replayed_is_reported_and_the_rest_still_goes(store):
    record(store, "big", b"x" * (DATA_KEEP_LIMIT + 1))
    store.parts["big"].pop()  # a part of its bytes is missing
    record(store, "nokey", b"data", {"event_id": "ev0001"})
    record(store, "down", b"data", {"section_id": "sec9", "event_id": "ev0004", "kind": "k"})
    record(store, "ok", b"data", {**ATTRS, "event_id": "ev0005"})
    report = replay_dead_letters(store, FakePublisher(fail_for={"sec9"}))
    outcomes = {i.message_id: i.outcome for i in report.items}
    assert outcomes == {"big": NOT_REPLAYABLE, "nokey": NOT_REPLAYABLE, "down": FAILED, "ok": REPLAYED}
    assert store.docs["down"]["replayed"] is False and store.docs["ok"]["replayed"] is True


# -- the admin command ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, store):
    publisher = FakePublisher()
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "district-project")
    monkeypatch.delenv("PUSH_AUTH", raising=False)
    wiring.settings.cache_clear()
    monkeypatch.setattr(wiring, "dead_letter_store", lambda: store)
    monkeypatch.setattr(wiring, "publisher", lambda: publisher)
    yield publisher
    wiring.settings.cache_clear()


def test_cli_replays_all_and_prints_what_it_did(cli_env, store, capsys):
    record(store, "m1")
    assert cli.main(["replay-dead-letters"]) == 0
    out = capsys.readouterr().out
    assert "m1: replayed (student_added, section=sec1 event=ev0002)" in out
    assert "1 replayed (topic roster-events, project district-project)" in out
    assert len(cli_env.published) == 1


def test_cli_dry_run_and_ids(cli_env, store, capsys):
    record(store, "m1")
    record(store, "m2")
    assert cli.main(["replay-dead-letters", "--id", "m2", "--id", "zz", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "m2: would replay" in out and "zz: not found" in out and "m1" not in out
    assert cli_env.published == []


def test_cli_says_what_configuration_is_missing(monkeypatch, capsys, tmp_path):
    # No project: not in the environment, and no Application Default Credentials that name one.
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setattr("google.auth.compute_engine._metadata._NO_GCE_CHECK", True)
    assert cli.main(["replay-dead-letters"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("error: configuration: no project: pass --project, set GOOGLE_CLOUD_PROJECT") and (
        "Traceback" not in err
    )


def test_cli_reports_a_bad_setting_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("PUSH_AUTH", "off")
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    wiring.settings.cache_clear()
    try:
        assert cli.main(["replay-dead-letters", "--dry-run"]) == cli.EXIT_CONFIG
    finally:
        wiring.settings.cache_clear()
    assert "PUSH_AUTH=off" in capsys.readouterr().err


def test_cli_needs_a_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2


def test_the_reason_admits_the_applier_error_is_not_known():
    assert "log" in deadletters.REASON
