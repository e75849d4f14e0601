"""The Classroom adapter against the Classroom simulator: admin subjects take turns, the client-side
rate limit holds calls back instead of spending them on 429s."""

from rostersync.adapters.classroom import ClassroomAdapter, build_classroom_service
from rostersync.adapters.throttle import RateLimiter
from rostersync.config import load_settings

from tests.sims.classroom_sim import ClassroomSimulator

DOMAIN = "district.example.org"


def service_for(sim, monkeypatch):
    monkeypatch.setenv("CLASSROOM_API_ENDPOINT", sim.base_url)
    return build_classroom_service(load_settings())


def test_each_message_uses_the_next_admin_subject(monkeypatch):
    with ClassroomSimulator(domain=DOMAIN) as first, ClassroomSimulator(domain=DOMAIN) as second:
        for sim in (first, second):
            sim.add_user(f"ann@{DOMAIN}", "Ann", "Smith")
        # Two clients stand for two admin subjects (the simulators tell them apart for the test).
        adapter = ClassroomAdapter([service_for(first, monkeypatch), service_for(second, monkeypatch)], first.base_url)
        for n in range(4):
            adapter.start_unit_of_work()
            adapter.create_course(f"d:clever-s{n}", f"Course {n}", f"ann@{DOMAIN}")
        assert len(first.courses()) == 2 and len(second.courses()) == 2


def test_the_rate_limit_waits_instead_of_meeting_the_quota(monkeypatch):
    slept = []
    with ClassroomSimulator(domain=DOMAIN) as sim:
        sim.add_user(f"ann@{DOMAIN}", "Ann", "Smith")
        sim.set_quota(5)
        limiter = RateLimiter(per_minute=5, burst=5, sleep=slept.append)
        adapter = ClassroomAdapter(service_for(sim, monkeypatch), sim.base_url, limiter=limiter)
        for n in range(5):
            adapter.create_course(f"d:clever-q{n}", f"Course {n}", f"ann@{DOMAIN}")
        assert slept == []  # the burst
        assert sum(sim.calls.values()) == 5
        limiter.acquire()  # the sixth call would have to wait about 12 s for room
        assert slept and 11 < slept[0] <= 12.5
