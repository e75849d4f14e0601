"""The Clever adapter against the simulator when the feed misbehaves: ending_before=last refused or
empty, next links that lead astray, pages that repeat, and the deadline on every page."""

import pytest
from rostersync.adapters.clever import CleverClient, CleverError
from rostersync.retry import Deadline, RetryPolicy, TimeBudgetSpent

from tests.sims.clever_sim import CleverSimulator


@pytest.fixture
def sim():
    with CleverSimulator() as s:
        yield s


def client(sim, page_size=3, deadline=None):
    return CleverClient(
        sim.base_url,
        sim.token,
        page_size=page_size,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05, sleep=lambda s: None),
        deadline=deadline or Deadline(30),
    )


def seed(sim, sections=7):
    teacher = sim.add_user("teacher", "ann.smith@district.example.org", "Ann", "Smith", emit=False)
    return [sim.add_section(f"Section {i}", teacher) for i in range(sections)]


@pytest.mark.parametrize("mode", ["newest", "400", "empty"])
def test_the_newest_event_is_found_however_ending_before_last_answers(sim, mode):
    seed(sim, sections=7)
    sim.emit_event("terms.created", {"id": "5c40b5127d0c8a0001a7f0c1", "name": "Spring"})
    sim.refuse_ending_before_last(mode)
    before = sim.requests["events"]
    assert client(sim).newest_event_id() == sim.events[-1]["id"]
    # When `last` works: it, then one page after it (empty). Otherwise the feed, 3 a page, from the start.
    assert sim.requests["events"] - before == (2 if mode == "newest" else 1 + 3)


def test_no_events_at_all_is_none(sim):
    sim.refuse_ending_before_last("400")
    assert client(sim).newest_event_id() is None


def test_the_newest_event_found_by_paging_stops_at_the_deadline_with_an_older_marker(sim):
    seed(sim, sections=8)
    sim.refuse_ending_before_last("empty")
    ticks = iter([0.0, 0.0, 0.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    deadline = Deadline(10, clock=lambda: next(ticks))
    found = client(sim, deadline=deadline).newest_event_id()
    # Older than the newest (safe: the poller reads the events after it again), never newer.
    assert found is not None and found < sim.events[-1]["id"]


def test_next_links_to_another_host_or_scheme_are_never_fetched(sim):
    ids = seed(sim, sections=7)
    with CleverSimulator(token=sim.token) as elsewhere:
        for mode in ("other_host", "other_scheme"):
            sim.hostile_next_links(mode, elsewhere.base_url)
            before = sim.requests["sections"]
            assert [s["id"] for p in client(sim).section_pages() for s in p] == ids
            assert sim.requests["sections"] - before == 3  # 3 + 3 + 1: our own requests, all to sim
        assert sum(elsewhere.requests.values()) == 0


def test_a_server_repeating_its_first_page_under_new_uris_is_an_error_not_a_loop(sim):
    seed(sim, sections=7)
    sim.hostile_next_links("repeat")
    c = client(sim)
    pages = c.section_pages()
    assert len(next(pages)) == 3
    with pytest.raises(CleverError, match="loops back"):
        next(pages)
    assert c.requests_made == 2


def test_a_short_page_is_the_last_page(sim):
    seed(sim, sections=7)
    c = client(sim, page_size=5)
    assert [len(p) for p in c.section_pages()] == [5, 2]
    assert c.requests_made == 2  # no request for the empty page after a short one


def test_the_deadline_is_checked_before_every_page(sim):
    seed(sim, sections=7)
    ticks = iter([0.0, 0.0] + [100.0] * 10)  # the deadline's start, the first page, then past it
    c = client(sim, deadline=Deadline(10, clock=lambda: next(ticks)))
    pages = c.section_pages()
    assert len(next(pages)) == 3
    with pytest.raises(TimeBudgetSpent):
        list(pages)
    assert c.requests_made == 1


def test_a_cursor_clever_ignores_is_not_paged_before(sim):
    """A server that ignores starting_after on the first request: the events at or before our
    cursor it sends back are not handed on as new."""
    seed(sim, sections=4)
    cursor = sim.events[1]["id"]
    sim.hostile_next_links("repeat")  # every request is answered from the start of the feed
    c = client(sim, page_size=10)
    assert [e["id"] for p in c.event_pages(cursor) for e in p] == [e["id"] for e in sim.events[2:]]


def test_events_are_paged_by_bytes_a_big_sections_events_a_few_at_a_time(sim, monkeypatch):
    """A sections event carries its whole section: the first page asks for EVENTS_FIRST_PAGE
    events, and each next page for as many as fit in EVENTS_PAGE_BYTES at the last page's size."""
    from rostersync.adapters import clever

    monkeypatch.setattr(clever, "EVENTS_PAGE_BYTES", 100_000)
    teacher = sim.add_user("teacher", "ann.smith@district.example.org", "Ann", "Smith", emit=False)
    students = [sim.add_user("student", f"s{i}@district.example.org", "S", f"{i}", emit=False) for i in range(400)]
    big = sim.add_section("Band", teacher, students=students[:300])
    start = sim.events[-1]["id"]
    for s in students[300:360]:
        sim.add_student(big, s)
    pages = [len(p) for p in client(sim, page_size=1000).event_pages(start)]
    assert sum(pages) == 60
    # Each event is some 20 KB (300-360 students, before and after): 4 or 5 fit in 100,000 bytes.
    assert pages[0] == clever.EVENTS_FIRST_PAGE and all(3 <= n <= 5 for n in pages[1:-1]), pages


def test_small_events_go_100_a_page_after_the_first(sim):
    from rostersync.adapters import clever

    seed(sim, sections=1)
    start = sim.events[-1]["id"]
    teacher = sim.add_user("teacher", "bob.jones@district.example.org", "Bob", "Jones", emit=False)
    for i in range(250):
        sim.add_section(f"Club {i}", teacher)
    pages = [len(p) for p in client(sim, page_size=1000).event_pages(start)]
    assert pages == [clever.EVENTS_FIRST_PAGE, 100, 100, 250 - 210], pages
