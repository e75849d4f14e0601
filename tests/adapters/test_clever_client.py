"""The Clever adapter against the Clever simulator over HTTP: paging, cursor expiry, retries, users."""

import pytest
from rostersync.adapters.clever import CleverClient, CleverError, CleverUserDirectory
from rostersync.retry import Deadline, RetryPolicy

from tests.sims.clever_sim import CleverSimulator


@pytest.fixture
def sim():
    with CleverSimulator() as s:
        yield s


def client(sim, page_size=3, token=None):
    return CleverClient(
        sim.base_url,
        token or sim.token,
        page_size=page_size,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05, sleep=lambda s: None),
        deadline=Deadline(30),
    )


def seed(sim, sections=7):
    teacher = sim.add_user("teacher", "ann.smith@district.example.org", "Ann", "Smith", emit=False)
    kids = [sim.add_user("student", f"kid{i}@district.example.org", "Kid", str(i), emit=False) for i in range(4)]
    ids = [sim.add_section(f"Section {i}", teacher, students=kids[: i % 4 + 1]) for i in range(sections)]
    return teacher, kids, ids


def test_section_pages_follow_next_links_to_the_end(sim):
    _, _, ids = seed(sim)
    pages = list(client(sim).section_pages())
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [s["id"] for p in pages for s in p] == ids


def test_events_after_a_cursor_and_the_newest_event_id(sim):
    _, kids, ids = seed(sim, sections=2)
    c = client(sim)
    newest = c.newest_event_id()
    sim.add_student(ids[0], kids[3])
    events = [e for p in c.event_pages(newest) for e in p]
    assert [e["type"] for e in events] == ["sections.updated"]
    assert events[0]["data"]["previous_attributes"]["students"] == [kids[0]]
    assert c.newest_event_id() == events[0]["id"]


def test_an_expired_cursor_is_seen_by_asking_for_its_event_not_by_paging(sim):
    seed(sim, sections=3)
    c = client(sim)
    old = sim.events[0]["id"]
    sim.expire_events(keep_last=1)
    assert not c.event_exists(old) and c.event_exists(sim.events[-1]["id"])
    # The page after it answers 200 with the oldest events kept, as if nothing had been missed.
    assert [e["id"] for p in c.event_pages(old) for e in p] == [sim.events[-1]["id"]]


def test_rate_limit_and_server_faults_are_retried(sim):
    seed(sim, sections=2)
    c = client(sim)
    sim.force_429(2)
    sim.inject_errors(503, 1)
    assert len([s for p in c.section_pages() for s in p]) == 2
    assert c.requests_made >= 4


def test_bad_token_is_not_retried(sim):
    c = client(sim, token="wrong")
    with pytest.raises(CleverError) as exc:
        list(c.section_pages())
    assert exc.value.status == 401 and c.requests_made == 1


def test_user_directory_asks_one_by_one_or_reads_everyone_once(sim):
    teacher, kids, _ = seed(sim, sections=1)
    no_email = sim.add_user("student", None, "No", "Email", emit=False)
    c = client(sim, page_size=100)
    few = CleverUserDirectory(c, bulk_threshold=10)
    assert few.emails([teacher, no_email, "5c0000000000000000000000"]) == {
        teacher: "ann.smith@district.example.org",
        no_email: None,
        "5c0000000000000000000000": None,
    }
    assert sim.requests["user"] == 3
    many = CleverUserDirectory(client(sim, page_size=100), bulk_threshold=2)
    assert many.emails(kids)[kids[2]] == "kid2@district.example.org"
    assert sim.requests["users"] == 1  # one page of everyone: a short page is the last
    many.emails([teacher])
    assert sim.requests["users"] == 1 and sim.requests["user"] == 3
