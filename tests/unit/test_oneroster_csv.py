"""OneRoster CSV bundles: bulk and delta bundles diffed and published; a malformed one rejected whole."""

import io
import zipfile

import pytest
from rostersync.app.oneroster_poller import import_bundle
from rostersync.domain.changes import ChangeKind, RosterChange
from rostersync.domain.sources.oneroster_csv import InvalidBundle, read_bundle

from tests.unit.fakes import FakePublisher
from tests.unit.test_oneroster_poller import MemoryState

CLASS_HEADER = (
    "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,"
    "schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods"
)
USER_HEADER = (
    "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,"
    "familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password"
)
ENR_HEADER = (
    "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate"
)


def quoted(value: str) -> str:
    return f'"{value}"' if "," in value else value  # a list field (agentSourcedIds) as a SIS writes it


def bundle(mode="bulk", classes=(), users=(), enrollments=(), files=None, extra=None):
    """A zip as a SIS exports it; rows are dicts of the columns that matter."""
    files = files or {"classes": mode, "users": mode, "enrollments": mode, "orgs": "absent"}
    manifest = "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\n" + "".join(
        f"file.{k},{v}\n" for k, v in files.items()
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.csv", manifest)
        for name, header, rows in (
            ("classes", CLASS_HEADER, classes),
            ("users", USER_HEADER, users),
            ("enrollments", ENR_HEADER, enrollments),
        ):
            if files.get(name, "absent") == "absent":
                continue
            cols = header.split(",")
            z.writestr(
                f"{name}.csv",
                header + "\n" + "".join(",".join(quoted(r.get(c, "")) for c in cols) + "\n" for r in rows),
            )
        for name, text in (extra or {}).items():
            z.writestr(name, text)
    return out.getvalue()


def cls(sid, title, status=""):
    return {"sourcedId": sid, "title": title, "status": status, "classType": "scheduled"}


def user(sid, role, status=""):
    return {"sourcedId": sid, "role": role, "email": f"{sid}@school.org", "status": status, "enabledUser": "true"}


def enr(sid, class_id, user_id, role, primary="false", status=""):
    return {
        "sourcedId": sid,
        "classSourcedId": class_id,
        "userSourcedId": user_id,
        "role": role,
        "primary": primary,
        "status": status,
    }


BULK = bundle(
    classes=[cls("c1", "Chemistry")],
    users=[user("t1", "teacher"), user("s1", "student"), user("s2", "student")],
    enrollments=[
        enr("e1", "c1", "t1", "teacher", "true"),
        enr("e2", "c1", "s1", "student"),
        enr("e3", "c1", "s2", "student"),
    ],
)


def published(publisher):
    return [(c.kind, c.person.clever_id if c.person else None) for c in map(RosterChange.from_json, publisher.messages)]


def test_a_bulk_bundle_then_a_delta_and_a_second_bulk_missing_a_student():
    state, publisher = MemoryState(), FakePublisher()
    first = import_bundle("b1.zip", "2026-09-01T00:00:00Z", BULK, state, publisher, None)
    assert first.outcome == "ok" and first.full_read
    assert published(publisher) == [(ChangeKind.COURSE_WANTED, None)]
    snap = RosterChange.from_json(publisher.messages[0]).section
    assert snap.primary_teacher.email == "t1@school.org" and len(snap.students) == 2

    publisher.messages.clear()
    delta = bundle("delta", enrollments=[enr("e2", "c1", "s1", "student", status="tobedeleted")])
    assert import_bundle("b2.zip", "2026-09-02T00:00:00Z", delta, state, publisher, "2026-09-01T00:00:00Z").changes == 1
    assert published(publisher) == [(ChangeKind.STUDENT_REMOVED, "s1")]

    publisher.messages.clear()
    again = bundle(
        classes=[cls("c1", "Chemistry")],
        users=[user("t1", "teacher")],
        enrollments=[enr("e1", "c1", "t1", "teacher", "true")],
    )
    import_bundle("b3.zip", "2026-09-03T00:00:00Z", again, state, publisher, "2026-09-02T00:00:00Z")
    assert published(publisher) == [(ChangeKind.STUDENT_REMOVED, "s2")]  # missing from a bulk file: gone


def test_the_same_bundle_twice_publishes_nothing_the_second_time_and_an_older_one_is_stale():
    state, publisher = MemoryState(), FakePublisher()
    import_bundle("b1.zip", "2026-09-01T00:00:00Z", BULK, state, publisher, None)
    publisher.messages.clear()
    assert import_bundle("b1.zip", "2026-09-01T00:00:00Z", BULK, state, publisher, None).published == 0
    stale = import_bundle("b0.zip", "2026-08-31T00:00:00Z", BULK, state, publisher, "2026-09-01T00:00:00Z")
    assert stale.outcome == "stale" and publisher.messages == []


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"not a zip", "not a zip file"),
        (bundle(files={"classes": "bulk", "users": "bulk", "enrollments": "sometimes"}), "file.enrollments"),
        (bundle("delta", classes=[cls("c1", "Chemistry", status="")]), "needs status active or tobedeleted"),
        (bundle(files={"classes": "bulk", "enrollments": "delta", "users": "absent"}), "both be bulk or both delta"),
        (bundle(classes=[cls("", "No id")]), "no sourcedId"),
        (bundle(classes=[cls("c1", "A"), cls("c1", "B")]), "twice"),
        (bundle(files={"classes": "bulk", "enrollments": "bulk", "users": "bulk", "orgs": "bulk"}), "no orgs.csv"),
    ],
)
def test_a_malformed_bundle_is_rejected_whole_with_the_reason(data, reason):
    with pytest.raises(InvalidBundle, match=reason):
        read_bundle(data)
    state, publisher = MemoryState(), FakePublisher()
    result = import_bundle("bad.zip", "2026-09-01T00:00:00Z", data, state, publisher, None)
    assert result.outcome == "rejected" and reason.split()[0] in result.reason
    assert publisher.messages == [] and state.states == {}
    assert state.problems[0].kind == "bad_oneroster_bundle" and "bad.zip" in state.problems[0].message


# -- guardians (GUARDIANS=invite) --------------------------------------------------------------------

TYPES = ("Parent/Guardian", "Primary")


def family(sid, role, agents="", status=""):
    return {"sourcedId": sid, "role": role, "email": f"{sid}@family.org", "status": status, "agentSourcedIds": agents}


def guardians_bundle(*people):
    kids = [user("s1", "student") | {"agentSourcedIds": "mom1,dad1"}, user("s2", "student")]
    return bundle(
        classes=[cls("c1", "Chemistry")],
        users=[user("t1", "teacher"), *kids, *people],
        enrollments=[enr("e1", "c1", "t1", "teacher", "true"), enr("e2", "c1", "s1", "student")],
    )


def guardian_changes(publisher):
    from rostersync.domain.guardians import decode_guardian_message

    out = {}
    for message in publisher.messages:
        for change in decode_guardian_message(message) or []:
            assert change.complete and change.source == "oneroster"
            out[change.student.clever_id] = sorted(p.email for p in change.wanted)
    return out


def test_a_bulk_users_csv_states_guardians_of_students_whose_agents_changed_and_nobody_for_links_gone():
    state = MemoryState()
    mom, dad = family("mom1", "parent"), family("dad1", "guardian")
    aunt = family("aunt1", "relative", agents="s2")  # "Family": not a guardian type by default
    gran = family("gran1", "guardian", agents="s2")  # linked from the guardian's own end

    first = FakePublisher()
    result = import_bundle(
        "b1.zip",
        "1",
        guardians_bundle(mom, dad, aunt, gran),
        state,
        first,
        None,
        guardian_types=TYPES,
        guardian_students=lambda: {"s9"},  # a student we hold records for, in nobody's agents now
    )
    assert result.guardian_changes == 3
    assert guardian_changes(first) == {
        "s1": ["dad1@family.org", "mom1@family.org"],
        "s2": ["gran1@family.org"],
        "s9": [],  # the first bundle states everyone's: the sync's invitations for s9 end
    }

    again = FakePublisher()  # the same export again: no student's links changed
    assert (
        import_bundle(
            "b2.zip", "2", guardians_bundle(mom, dad, aunt, gran), state, again, "1", guardian_types=TYPES
        ).guardian_changes
        == 0
    )
    assert again.messages == []

    # mom's address changes; dad and gran are gone from users.csv (their links end with them).
    later = FakePublisher()
    moved = family("mom1", "parent") | {"email": "mom.new@family.org"}
    gone_bundle = guardians_bundle(moved, aunt)
    result = import_bundle("b3.zip", "3", gone_bundle, state, later, "2", guardian_types=TYPES)
    assert guardian_changes(later) == {"s1": ["mom.new@family.org"], "s2": []}
    assert result.guardian_changes == 2
    assert set(state.guardian_links) == {"s1"}  # nobody kept for s2: no document


def test_guardians_are_not_read_from_a_bundle_when_guardians_are_off_or_users_csv_is_a_delta():
    state, publisher = MemoryState(), FakePublisher()
    data = guardians_bundle(family("mom1", "parent"))
    assert import_bundle("b1.zip", "1", data, state, publisher, None).guardian_changes == 0
    assert guardian_changes(publisher) == {} and read_bundle(data).users["s1"].keys() == {
        "sourcedId",
        "email",
        "status",
    }
    delta = bundle(
        mode="delta",
        users=[user("s1", "student", "active") | {"agentSourcedIds": "mom1"}],
        enrollments=[enr("e2", "c1", "s1", "student", status="active")],
    )
    result = import_bundle("b2.zip", "2", delta, state, publisher, "1", guardian_types=TYPES)
    assert result.guardian_changes == 0 and getattr(state, "guardian_links", None) is None


def test_a_1_2_bundle_reads_roles_from_roles_csv():
    roles = "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId\n"
    roles += "r1,,,mom1,primary,parent,,,org1\nr2,,,s1,primary,student,,,org1\n"
    users_12 = [dict(user("s1", "") | {"agentSourcedIds": "mom1"}), family("mom1", "")]
    data = bundle(
        classes=[cls("c1", "Chemistry")],
        users=users_12,
        enrollments=[enr("e2", "c1", "s1", "student")],
        files={"classes": "bulk", "users": "bulk", "enrollments": "bulk", "roles": "bulk"},
        extra={"roles.csv": roles},
    )
    state, publisher = MemoryState(), FakePublisher()
    import_bundle("b1.zip", "1", data, state, publisher, None, guardian_types=TYPES)
    assert guardian_changes(publisher) == {"s1": ["mom1@family.org"]}
