"""Clever v3.0 payloads shaped like the real API's (ids are ObjectIds; previous_attributes sits
inside `data`, holds only the changed keys, and sends arrays whole)."""

DISTRICT = "5b2ad81a709e300001e2cd7a"
SCHOOL = "5b2ad81a709e300001e2cd7b"
TEACHER_A = "5c40b4f37d0c8a0001a7e101"
TEACHER_B = "5c40b4f37d0c8a0001a7e102"
TEACHER_C = "5c40b4f37d0c8a0001a7e103"
STUDENTS = [f"5c40b4f37d0c8a0001a7e2{i:02d}" for i in range(10)]
SECTION = "5c40b5127d0c8a0001a7f001"

EMAILS = {
    TEACHER_A: "ann.smith@district.example.org",
    TEACHER_B: "bob.jones@district.example.org",
    TEACHER_C: "cat.lee@district.example.org",
    **{s: f"student{i}@district.example.org" for i, s in enumerate(STUDENTS)},
}


def section(**overrides):
    base = {
        "id": SECTION,
        "district": DISTRICT,
        "school": SCHOOL,
        "name": "Algebra I - Smith - Period 3",
        "period": "3",
        "subject": "math",
        "course": "5c40b5127d0c8a0001a7f0c1",
        "term_id": "5c40b5127d0c8a0001a7f0d1",
        "sis_id": "ALG1-3",
        "section_number": "3",
        "grade": "9",
        "teacher": TEACHER_A,
        "teachers": [TEACHER_A],
        "students": STUDENTS[:5],
        "created": "2026-08-01T12:00:00.000Z",
        "last_modified": "2026-08-01T12:00:00.000Z",
        "ext": {},
    }
    base.update(overrides)
    return base


def event(event_id, type_, obj, previous=None, created="2026-11-02T09:15:01.123Z"):
    data = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": event_id, "type": type_, "created": created, "data": data}


def wrapped(ev):
    """As an item of GET /v3.0/events: {"data": <event>, "uri": ...}."""
    return {"data": ev, "uri": f"/v3.0/events/{ev['id']}"}
