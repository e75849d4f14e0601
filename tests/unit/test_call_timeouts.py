"""Every Classroom and Clever call's timeout is bounded by what is left of the budget (issue 13)."""

from __future__ import annotations

import httplib2
from rostersync.adapters.classroom import CALL_TIMEOUT, bound_timeout
from rostersync.adapters.clever import CleverClient
from rostersync.retry import MIN_CALL_TIMEOUT, Deadline


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_call_timeout_is_what_is_left_of_the_budget_capped_and_floored():
    clock = Clock()
    deadline = Deadline(50, clock)
    assert deadline.call_timeout(CALL_TIMEOUT) == CALL_TIMEOUT
    clock.now = 40
    assert deadline.call_timeout(CALL_TIMEOUT) == 10
    clock.now = 60
    assert deadline.call_timeout(CALL_TIMEOUT) == MIN_CALL_TIMEOUT


def test_bound_timeout_sets_the_http_and_its_open_connections():
    http = httplib2.Http(timeout=60)
    conn = httplib2.HTTPConnectionWithTimeout("127.0.0.1", 9, timeout=60)
    http.connections["http:127.0.0.1:9"] = conn

    class Authorized:  # google-auth's AuthorizedHttp keeps the httplib2.Http as .http
        pass

    wrapper = Authorized()
    wrapper.http = http
    bound_timeout(wrapper, 7.5)
    assert http.timeout == 7.5 and conn.timeout == 7.5


def test_clever_requests_carry_the_bounded_timeout():
    seen = []

    class Session:
        headers: dict = {}

        def get(self, url, params=None, timeout=None):
            seen.append(timeout)
            raise __import__("requests").ConnectionError("no network in this test")

    clock = Clock()
    client = CleverClient("http://127.0.0.1:9", "t", deadline=Deadline(12, clock), session=Session(), timeout=30)
    clock.now = 9
    try:
        client._get_once("http://127.0.0.1:9/v3.0/sections", None)
    except Exception:
        pass
    assert seen == [3]
