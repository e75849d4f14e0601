"""The Classroom simulator's registrations, notifications and OAuth endpoints, through the real client."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tests.sims.classroom_push import PUSH_SCOPE
from tests.sims.classroom_sim import ClassroomSimulator

DOMAIN = "district.example.org"
ADMIN = f"admin@{DOMAIN}"
ANN = f"ann.smith@{DOMAIN}"
TOPIC = "projects/rostersync-e2e/topics/classroom-roster-notifications"
CLIENT_ID, CLIENT_SECRET = "client-1.apps.googleusercontent.com", "not-a-real-secret"
REDIRECT = "http://127.0.0.1:9/"
SCOPES = f"{PUSH_SCOPE} https://www.googleapis.com/auth/classroom.rosters.readonly"


class CollectingNotifier:
    def __init__(self, topics=(TOPIC,)):
        self.topics = set(topics)
        self.messages: list[tuple[str, dict, dict]] = []

    def topic_exists(self, topic_name: str) -> bool:
        return topic_name in self.topics

    def publish(self, topic_name: str, data: bytes, attributes: dict) -> None:
        self.messages.append((topic_name, json.loads(data), attributes))


@pytest.fixture
def sim():
    with ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as s:
        s.add_user(ADMIN, "District", "Admin")
        s.add_user(ANN, "Ann", "Smith")
        s.register_oauth_client(CLIENT_ID, CLIENT_SECRET)
        s.notifier = CollectingNotifier()
        yield s


def consent(sim, login_hint: str = ADMIN, scope: str = SCOPES) -> dict:
    """The admin's browser: authorize, follow the redirect's code to /token."""
    answer = requests.get(
        sim.base_url + "o/oauth2/v2/auth",
        params={
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": scope,
            "state": "xyz",
            "access_type": "offline",
            "login_hint": login_hint,
        },
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == ["xyz"]
    token = requests.post(
        sim.base_url + "token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": REDIRECT,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    return token.json()


def service(sim, credentials=None):
    return build(
        "classroom",
        "v1",
        credentials=credentials or AnonymousCredentials(),
        client_options={"api_endpoint": sim.base_url},
        static_discovery=True,
        cache_discovery=False,
    )


def user_service(sim, refresh_token: str):
    credentials = Credentials(
        None,
        refresh_token=refresh_token,
        token_uri=sim.base_url + "token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes=SCOPES.split(),
    )
    return service(sim, credentials)


def register(api, topic=TOPIC, feed_type="DOMAIN_ROSTER_CHANGES"):
    body = {"feed": {"feedType": feed_type}, "cloudPubsubTopic": {"topicName": topic}}
    return api.registrations().create(body=body).execute()


def error(exc: HttpError) -> tuple[int, str]:
    return exc.resp.status, json.loads(exc.content)["error"]["message"]


def test_registration_needs_a_users_grant_not_delegation(sim):
    with pytest.raises(HttpError) as caught:
        register(service(sim))
    status, message = error(caught.value)
    assert status == 403 and message.startswith("@MissingGrant")
    assert sim.registrations() == []


def test_a_refresh_token_makes_a_week_long_registration_and_renewing_keeps_its_id(sim):
    tokens = consent(sim)
    assert tokens["refresh_token"] and tokens["token_type"] == "Bearer"
    api = user_service(sim, tokens["refresh_token"])
    first = register(api)
    assert first["feed"] == {"feedType": "DOMAIN_ROSTER_CHANGES"}
    assert first["cloudPubsubTopic"] == {"topicName": TOPIC}
    expiry = time.mktime(time.strptime(first["expiryTime"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 6.9 * 86400 < expiry - time.mktime(time.gmtime()) <= 7 * 86400 + 5
    again = register(api)
    assert again["registrationId"] == first["registrationId"]
    assert again["expiryTime"] >= first["expiryTime"]
    assert len(sim.registrations()) == 1


def test_registration_errors(sim):
    api = user_service(sim, consent(sim)["refresh_token"])
    for topic, status in (("not-a-topic", 400), ("projects/rostersync-e2e/topics/nobody-made-this", 404)):
        with pytest.raises(HttpError) as caught:
            register(api, topic=topic)
        assert error(caught.value)[0] == status
    with pytest.raises(HttpError) as caught:
        register(api, feed_type="FEED_TYPE_UNSPECIFIED")
    assert error(caught.value)[0] == 400
    # a teacher's grant cannot watch the whole domain
    teacher_api = user_service(sim, consent(sim, login_hint=ANN)["refresh_token"])
    with pytest.raises(HttpError) as caught:
        register(teacher_api)
    assert error(caught.value)[0] == 403


def test_a_revoked_grant_cannot_renew(sim):
    tokens = consent(sim)
    sim.revoke_grants()
    from google.auth.exceptions import RefreshError

    with pytest.raises(RefreshError):
        register(user_service(sim, tokens["refresh_token"]))


def test_wrong_client_secret_or_reused_code_is_refused(sim):
    answer = requests.post(
        sim.base_url + "token",
        data={"grant_type": "refresh_token", "refresh_token": "1//x", "client_id": CLIENT_ID, "client_secret": "no"},
        timeout=10,
    )
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


def test_joins_and_leaves_by_api_and_by_teachers_are_published_while_registered(sim):
    api = service(sim)
    course = api.courses().create(body={"id": "d:sec-1", "name": "Algebra", "ownerId": ANN}).execute()
    sim.drain_notifications()
    assert sim.notifier.messages == []  # nothing before a registration
    registration = register(user_service(sim, consent(sim)["refresh_token"]))
    sim.add_user(f"stu@{DOMAIN}", "Stu", "Dent")
    student = api.courses().students().create(courseId=course["id"], body={"userId": f"stu@{DOMAIN}"}).execute()
    sim.teacher_remove_student(course["id"], f"stu@{DOMAIN}")
    sim.teacher_add_teacher(course["id"], ADMIN)
    sim.drain_notifications()
    seen = [(m["collection"], m["eventType"], m["resourceId"]["userId"]) for _, m, _ in sim.notifier.messages]
    admin_id = api.userProfiles().get(userId=ADMIN).execute()["id"]
    assert seen == [
        ("courses.students", "CREATED", student["userId"]),
        ("courses.students", "DELETED", student["userId"]),
        ("courses.teachers", "CREATED", admin_id),
    ]
    for topic, message, attributes in sim.notifier.messages:
        assert topic == TOPIC
        assert message["resourceId"]["courseId"] == course["id"]
        assert attributes == {"registrationId": registration["registrationId"]}
    sim.expire_registrations()
    sim.teacher_remove_teacher(course["id"], ADMIN)
    sim.drain_notifications()
    assert len(sim.notifier.messages) == 3  # an expired registration gets nothing
