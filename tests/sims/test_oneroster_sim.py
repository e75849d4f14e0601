"""The OneRoster simulator over HTTP: token, bearer check, paging headers, filters, soft delete, 429."""

import pytest
import requests

from tests.sims.oneroster_sim import OneRosterSimulator

V11 = "/ims/oneroster/v1p1"
V12 = "/ims/oneroster/rostering/v1p2"


@pytest.fixture
def sim():
    with OneRosterSimulator() as s:
        for i in range(5):
            s.add_user(f"u{i}", "student", f"kid{i}@d.example.org")
        yield s


def token(sim):
    resp = requests.post(
        sim.token_url, data={"grant_type": "client_credentials"}, auth=(sim.client_id, sim.client_secret), timeout=5
    )
    assert resp.status_code == 200 and resp.json()["token_type"] == "bearer"
    return resp.json()["access_token"]


def get(sim, path, bearer, **params):
    return requests.get(sim.base_url + path, params=params, headers={"Authorization": f"Bearer {bearer}"}, timeout=5)


def test_the_token_endpoint_checks_the_client_and_calls_need_a_valid_bearer(sim):
    bad = requests.post(sim.token_url, data={"grant_type": "client_credentials"}, auth=("x", "y"), timeout=5)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert get(sim, f"{V12}/users", "not-a-token").status_code == 401
    bearer = token(sim)
    assert get(sim, f"{V12}/users", bearer).status_code == 200
    sim.expire_tokens()
    assert get(sim, f"{V12}/users", bearer).status_code == 401


@pytest.mark.parametrize("root", [V11, V12])
def test_limit_offset_paging_with_total_count_and_link_headers(sim, root):
    bearer = token(sim)
    first = get(sim, f"{root}/users", bearer, limit=2, offset=0)
    assert first.headers["X-Total-Count"] == "5"
    assert [u["sourcedId"] for u in first.json()["users"]] == ["u0", "u1"]
    assert 'rel="next"' in first.headers["Link"] and "offset=2" in first.headers["Link"]
    last = get(sim, f"{root}/users", bearer, limit=2, offset=4)
    assert [u["sourcedId"] for u in last.json()["users"]] == ["u4"]
    assert 'rel="next"' not in last.headers["Link"]
    one = get(sim, f"{root}/users/u3", bearer)
    assert one.json()["user"]["email"] == "kid3@d.example.org"
    assert get(sim, f"{root}/users/nope", bearer).status_code == 404


def test_date_last_modified_filter_and_soft_and_silent_deletes(sim):
    bearer = token(sim)
    mark = max(u["dateLastModified"] for u in get(sim, f"{V12}/users", bearer).json()["users"])
    assert get(sim, f"{V12}/users", bearer, filter=f"dateLastModified>'{mark}'").json()["users"] == []
    sim.delete("users", "u1")
    sim.delete("users", "u2", silent=True)
    changed = get(sim, f"{V12}/users", bearer, filter=f"dateLastModified>='{mark}'").json()["users"]
    assert [(u["sourcedId"], u["status"]) for u in changed if u["sourcedId"] == "u1"] == [("u1", "tobedeleted")]
    assert "u2" not in {u["sourcedId"] for u in get(sim, f"{V12}/users", bearer).json()["users"]}
    assert get(sim, f"{V12}/users", bearer, filter="givenName like 'x'").status_code == 400  # not the grammar


def test_forced_429_carries_retry_after(sim):
    bearer = token(sim)
    sim.force_429(1, retry_after=2)
    resp = get(sim, f"{V12}/classes", bearer)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    assert get(sim, f"{V12}/classes", bearer).status_code == 200


def test_signed_requests_are_checked_signature_time_and_nonce():
    import time

    from rostersync.adapters.oauth1 import authorization_header

    with OneRosterSimulator(signing=True) as signed:
        signed.add_user("t1", "teacher", "ann@d.example.org")
        url = f"{signed.base_url}/ims/oneroster/v1p1/users"
        params = {"limit": "5", "filter": "dateLastModified>'2026-01-01T00:00:00Z'"}

        def get(secret=signed.client_secret, nonce=None, timestamp=None, query=params):
            header = authorization_header("GET", url, query, signed.client_id, secret, nonce, timestamp)
            return requests.get(url, params=params, headers={"Authorization": header}, timeout=10).status_code

        assert get() == 200
        assert get(secret="wrong") == 401
        assert get(query={**params, "limit": "6"}) == 401  # signed for another query
        assert get(timestamp=int(time.time()) - 3600) == 401
        assert get(nonce="once") == 200 and get(nonce="once") == 401  # a replay
        assert requests.get(url, timeout=10).status_code == 401
