"""The local stack: emulators + both Cloud Functions under functions-framework + a push relay.

    with LocalStack(extra_env={"CLEVER_API_BASE": ..., ...}) as stack:
        result = stack.poll_and_wait()          # poll_clever, then wait until every message is acked
        db = stack.firestore_client()

Message path, as on Google Cloud with a push subscription:

    poll_clever (functions-framework, http) --publish--> Pub/Sub emulator topic
        --ordered push subscription--> PushRelay --POST--> apply_roster_event (functions-framework,
        cloudevent; it converts the raw push JSON to a CloudEvent)

The PushRelay sits between the emulator and the applier only to count: it forwards every push
unchanged, hands the applier's status back to the emulator, and records per Pub/Sub message id
what happened, so a test knows when the subscription is drained without touching product code.

With ``dead_letters=True`` the stack also runs record_dead_letter behind its own relay, fed by a
push subscription on the dead-letter topic. The Pub/Sub emulator (0.8.20) does NOT dead-letter:
with a dead_letter_policy it stops pushing after max_delivery_attempts, but forwarding to the
dead-letter topic fails inside the emulator (a NullPointerException, "publisherService is null"),
so the message is simply gone, and its pushes carry no ``deliveryAttempt``. So the policy is off
unless ``max_delivery_attempts`` is given, and ``dead_letter(message_id)`` does what Pub/Sub would:
it stops the deliveries (a fresh subscription) and publishes the message to the dead-letter topic
with Pub/Sub's CloudPubSubDeadLetter* attributes.

Push requests carry no OIDC token locally, so the functions run with PUSH_AUTH=off.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.sims.emulators import (
    FirestoreEmulator,
    ManagedProcess,
    PubSubEmulator,
    free_port,
    http_answers,
    start_emulators,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE_DIR = REPO_ROOT / "functions"

# Client libraries pick the emulator up from these variables when the client is constructed.
_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _temporary_env(**values: str) -> Iterator[None]:
    with _ENV_LOCK:
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


# --------------------------------------------------------------------------------------------------
# functions-framework


class FunctionServer(ManagedProcess):
    """One entry point of <source_dir>/main.py served by functions-framework, as Cloud Functions does."""

    def __init__(
        self,
        target: str,
        signature_type: str = "http",
        env: Mapping[str, str] | None = None,
        source_dir: str | os.PathLike | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if signature_type not in ("http", "cloudevent"):
            raise ValueError(f"signature_type must be 'http' or 'cloudevent', not {signature_type!r}")
        self.target = target
        self.signature_type = signature_type
        self.env = dict(env or {})
        self.source_dir = Path(source_dir) if source_dir is not None else DEFAULT_SOURCE_DIR
        self._requested_port = port
        self.start_timeout = start_timeout
        self.name = f"functions-framework {target}"

    @property
    def url(self) -> str:
        return f"http://{self.host}/"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "functions_framework",
            "--target", self.target,
            "--signature-type", self.signature_type,
            "--source", str(self.source_dir / "main.py"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip

    def start(self) -> FunctionServer:
        self.port = self._requested_port or free_port()
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._spawn(self.argv(), cwd=self.source_dir, env=env, log_prefix=f"ff-{self.target}")
        # /robots.txt answers 404 (http) or 405 (cloudevent) without invoking the function.
        self._wait_ready(lambda: http_answers(f"{self.url}robots.txt"), self.start_timeout)
        return self


# --------------------------------------------------------------------------------------------------
# Push relay


@dataclass
class PushAttempt:
    message_id: str
    attributes: dict
    status: int
    started: float
    finished: float


@dataclass
class _MessageState:
    attempts: int = 0
    acked: bool = False
    statuses: list[int] = field(default_factory=list)
    push_body: dict | None = None  # the first push request's JSON, as the emulator sent it


class PushRelay:
    """Loopback HTTP server the push subscription points at; forwards to target_url and counts.

    Counters: ``delivered`` (push attempts), ``acked`` (distinct message ids answered 2xx),
    ``failed`` (non-2xx attempts, including an unreachable target, answered 502), ``in_flight``.
    ``attempts`` lists every attempt in order of completion (with monotonic start/finish times).
    """

    def __init__(self, target_url: str, forward_timeout: float = 600.0) -> None:
        self.target_url = target_url.rstrip("/")
        self.forward_timeout = forward_timeout
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.messages: dict[str, _MessageState] = {}
        self.attempts: list[PushAttempt] = []

    @property
    def acked(self) -> int:
        with self._cond:
            return sum(1 for m in self.messages.values() if m.acked)

    def counters(self) -> dict[str, int]:
        with self._cond:
            return {
                "delivered": self.delivered,
                "acked": sum(1 for m in self.messages.values() if m.acked),
                "failed": self.failed,
                "in_flight": self.in_flight,
                "messages": len(self.messages),
            }

    def reset(self) -> None:
        with self._cond:
            self._reset_counters()
            self._cond.notify_all()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> PushRelay:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection", "transfer-encoding")
                }
                status, response_body = relay._forward(self.path, body, headers)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(response_body)))
                self.end_headers()
                self.wfile.write(response_body)

            def log_message(self, format, *args) -> None:  # quiet
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                exc = sys.exc_info()[1]
                if isinstance(exc, ConnectionError | TimeoutError):
                    return  # the emulator dropped a keep-alive connection (e.g. it was stopped)
                super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="push-relay", daemon=True)
        self._thread.start()
        return self

    def _forward(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        push_body = None
        try:
            push_body = json.loads(body)
            message = push_body.get("message", {})
            message_id = str(message.get("messageId") or message.get("message_id") or "?")
            attributes = message.get("attributes") or {}
        except (ValueError, AttributeError):
            message_id, attributes = "?", {}
        started = time.monotonic()
        with self._cond:
            self.delivered += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            state = self.messages.setdefault(message_id, _MessageState())
            state.attempts += 1
            if state.push_body is None:
                state.push_body = push_body
        status, response_body = 502, b""
        try:
            request = urllib.request.Request(self.target_url + path, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=self.forward_timeout) as response:
                status, response_body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, response_body = exc.code, exc.read()
        except OSError as exc:
            status, response_body = 502, f"push relay: target unreachable: {exc}".encode()
        finally:
            with self._cond:
                self.in_flight -= 1
                state = self.messages.setdefault(message_id, _MessageState())
                state.statuses.append(status)
                if 200 <= status < 300:
                    state.acked = True
                else:
                    self.failed += 1
                self.attempts.append(PushAttempt(message_id, attributes, status, started, time.monotonic()))
                self._cond.notify_all()
        return status, response_body

    def wait_for(self, acked: int, timeout: float = 60.0, settle: float = 0.3) -> dict[str, int]:
        """Block until >= acked distinct messages were acked and nothing is in flight (stable for
        `settle` seconds). Raises TimeoutError with the counters otherwise."""
        deadline = time.monotonic() + timeout

        def done() -> bool:
            return self.in_flight == 0 and sum(1 for m in self.messages.values() if m.acked) >= acked

        with self._cond:
            while True:
                remaining = deadline - time.monotonic()
                if done():
                    stable_until = time.monotonic() + settle
                    # settle: no new delivery (a redelivery or a late message) may start meanwhile
                    delivered = self.delivered
                    while done() and self.delivered == delivered and time.monotonic() < stable_until:
                        self._cond.wait(stable_until - time.monotonic())
                    if done() and self.delivered == delivered:
                        return self.counters()
                    continue
                if remaining <= 0:
                    raise TimeoutError(
                        f"push relay: wanted {acked} acked messages with none in flight within "
                        f"{timeout:.0f} s; counters: {self.counters()}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PushRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Pub/Sub resources


def _publisher(pubsub_host: str):
    from google.cloud import pubsub_v1

    with _temporary_env(PUBSUB_EMULATOR_HOST=pubsub_host):
        return pubsub_v1.PublisherClient()


def _subscriber(pubsub_host: str):
    from google.cloud import pubsub_v1

    with _temporary_env(PUBSUB_EMULATOR_HOST=pubsub_host):
        return pubsub_v1.SubscriberClient()


def create_topic_and_push_subscription(
    pubsub_host: str,
    project: str,
    topic: str,
    subscription: str,
    push_endpoint: str,
    ordering: bool = True,
    ack_deadline: int = 60,
    dead_letter_policy: dict | None = None,
) -> None:
    """Create the topic and a push subscription on it (idempotent: ALREADY_EXISTS is fine).
    With a dead_letter_policy ({"dead_letter_topic": path, "max_delivery_attempts": n}) its topic
    is created too; mind that the emulator does not deliver dead letters (module docstring)."""
    from google.api_core.exceptions import AlreadyExists

    publisher = _publisher(pubsub_host)
    subscriber = _subscriber(pubsub_host)
    topic_path = publisher.topic_path(project, topic)
    subscription_path = subscriber.subscription_path(project, subscription)
    try:
        with contextlib.suppress(AlreadyExists):
            publisher.create_topic(request={"name": topic_path})
        request = {
            "name": subscription_path,
            "topic": topic_path,
            "push_config": {"push_endpoint": push_endpoint},
            "enable_message_ordering": ordering,
            "ack_deadline_seconds": ack_deadline,
        }
        if dead_letter_policy:
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(request={"name": dead_letter_policy["dead_letter_topic"]})
            request["dead_letter_policy"] = dead_letter_policy
        with contextlib.suppress(AlreadyExists):
            subscriber.create_subscription(request=request)
    finally:
        subscriber.close()
        publisher.transport.close()


def publish_raw(
    pubsub_host: str, project: str, topic: str, data: bytes, attributes: Mapping[str, str], ordering_key: str = ""
) -> str:
    """Publish one message as given (ordering key optional); its message id."""
    from google.cloud import pubsub_v1

    with _temporary_env(PUBSUB_EMULATOR_HOST=pubsub_host):
        publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        )
    try:
        future = publisher.publish(publisher.topic_path(project, topic), data, ordering_key=ordering_key, **attributes)
        return future.result(timeout=30)
    finally:
        publisher.transport.close()


class PubSubNotifier:
    """What the Classroom simulator publishes its push notifications with (classroom_push.Notifier):
    the emulator, as Classroom publishes to the real Pub/Sub."""

    def __init__(self, pubsub_host: str) -> None:
        from google.cloud import pubsub_v1

        with _temporary_env(PUBSUB_EMULATOR_HOST=pubsub_host):
            self._publisher = pubsub_v1.PublisherClient()

    def topic_exists(self, topic_name: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self._publisher.get_topic(request={"topic": topic_name})
        except NotFound:
            return False
        return True

    def publish(self, topic_name: str, data: bytes, attributes: dict[str, str]) -> None:
        self._publisher.publish(topic_name, data, **attributes).result(timeout=30)

    def close(self) -> None:
        self._publisher.transport.close()


def delete_subscription(pubsub_host: str, project: str, subscription: str) -> None:
    """Delete the subscription (NOT_FOUND is fine)."""
    from google.api_core.exceptions import NotFound

    subscriber = _subscriber(pubsub_host)
    try:
        with contextlib.suppress(NotFound):
            subscriber.delete_subscription(
                request={"subscription": subscriber.subscription_path(project, subscription)}
            )
    finally:
        subscriber.close()


# --------------------------------------------------------------------------------------------------
# The whole stack


class LocalStack:
    """Emulators (own or shared), both functions, the push relay and an ordered push subscription."""

    def __init__(
        self,
        project: str = "rostersync-local",
        topic: str = "roster-events",
        extra_env: Mapping[str, str] | None = None,
        emulators: tuple[PubSubEmulator, FirestoreEmulator] | None = None,
        source_dir: str | os.PathLike | None = None,
        ack_deadline: int = 60,
        dead_letters: bool = False,
        max_delivery_attempts: int | None = None,
    ) -> None:
        self.project = project
        self.topic = topic
        self.dead_letters = dead_letters
        self.dead_letter_topic = f"{topic}-dead-letter"
        self.max_delivery_attempts = max_delivery_attempts
        self.recorder: FunctionServer | None = None
        self.dead_letter_relay: PushRelay | None = None
        self.dead_letter_subscription: str | None = None
        self.extra_env = dict(extra_env or {})
        self.source_dir = Path(source_dir) if source_dir is not None else DEFAULT_SOURCE_DIR
        self.ack_deadline = ack_deadline
        self._own_emulators = emulators is None
        self.pubsub, self.firestore = emulators if emulators is not None else (None, None)
        self.applier: FunctionServer | None = None
        self.poller: FunctionServer | None = None
        self.relay: PushRelay | None = None
        self.subscription: str | None = None
        self.published_total = 0
        self.env: dict[str, str] = {}

    def start(self) -> LocalStack:
        try:
            if self._own_emulators:
                self.pubsub, self.firestore = start_emulators(self.project)
            self.env = {
                "GOOGLE_CLOUD_PROJECT": self.project,
                "PUBSUB_EMULATOR_HOST": self.pubsub.host,
                "FIRESTORE_EMULATOR_HOST": self.firestore.host,
                "ROSTER_EVENTS_TOPIC": self.topic,
                "PUSH_AUTH": "off",  # the emulator's pushes carry no OIDC token
                **self.extra_env,
            }
            self.applier = FunctionServer("apply_roster_event", "cloudevent", env=self.env, source_dir=self.source_dir)
            self.poller = FunctionServer("poll_clever", "http", env=self.env, source_dir=self.source_dir)
            servers = [self.applier, self.poller]
            if self.dead_letters:
                self.recorder = FunctionServer(
                    "record_dead_letter", "cloudevent", env=self.env, source_dir=self.source_dir
                )
                servers.append(self.recorder)
            # Both are Python start-ups of a second or two: start them side by side.
            errors: list[BaseException] = []

            def start(server: FunctionServer) -> None:
                try:
                    server.start()
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=start, args=(s,)) for s in servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            self.relay = PushRelay(self.applier.url).start()
            if self.dead_letters:
                self.dead_letter_relay = PushRelay(self.recorder.url).start()
                self._create_dead_letter_subscription()
            self._create_subscription()
        except BaseException:
            self.stop()
            raise
        return self

    def _create_subscription(self) -> None:
        self.subscription = f"{self.topic}-push-{uuid.uuid4().hex[:8]}"
        dead_letter_policy = None
        if self.max_delivery_attempts is not None:
            topic_path = f"projects/{self.project}/topics/{self.dead_letter_topic}"
            dead_letter_policy = {"dead_letter_topic": topic_path, "max_delivery_attempts": self.max_delivery_attempts}
        create_topic_and_push_subscription(
            self.pubsub.host,
            self.project,
            self.topic,
            self.subscription,
            self.relay.url,
            ordering=True,
            ack_deadline=self.ack_deadline,
            dead_letter_policy=dead_letter_policy,
        )

    def _create_dead_letter_subscription(self) -> None:
        self.dead_letter_subscription = f"{self.dead_letter_topic}-push-{uuid.uuid4().hex[:8]}"
        create_topic_and_push_subscription(
            self.pubsub.host,
            self.project,
            self.dead_letter_topic,
            self.dead_letter_subscription,
            self.dead_letter_relay.url,
            ordering=True,
        )

    def replace_subscription(self) -> None:
        """A fresh push subscription to the applier: whatever the old one still redelivers is gone."""
        if self.subscription is not None:
            delete_subscription(self.pubsub.host, self.project, self.subscription)
        self._create_subscription()

    def dead_letter(self, message_id: str, timeout: float = 30.0) -> None:
        """What Pub/Sub does after max_delivery_attempts (the emulator cannot): no more deliveries of
        the message, and a copy with Pub/Sub's dead-letter attributes on the dead-letter topic,
        recorded by record_dead_letter before this returns."""
        state = self.relay.messages.get(message_id)
        if state is None or state.push_body is None:
            raise KeyError(f"the push relay saw no message {message_id!r}")
        self.replace_subscription()
        message = state.push_body["message"]
        attributes = {
            **(message.get("attributes") or {}),
            "CloudPubSubDeadLetterSourceDeliveryCount": str(state.attempts),
            "CloudPubSubDeadLetterSourceSubscription": state.push_body.get("subscription", "").rsplit("/", 1)[-1],
            "CloudPubSubDeadLetterSourceSubscriptionProject": self.project,
            "CloudPubSubDeadLetterSourceTopicPublishTime": message.get("publishTime", ""),
        }
        before = self.dead_letter_relay.acked
        publish_raw(
            self.pubsub.host,
            self.project,
            self.dead_letter_topic,
            base64.b64decode(message.get("data") or ""),
            attributes,
            ordering_key=message.get("orderingKey") or attributes.get("section_id", ""),
        )
        try:
            self.dead_letter_relay.wait_for(before + 1, timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nrecorder log {self.recorder.log_path}:\n{self.recorder.log_tail()}") from None

    def poll(self, timeout: float = 120.0) -> dict:
        """POST to poll_clever; its JSON answer (with an integer "published")."""
        request = urllib.request.Request(
            self.poller.url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"poll_clever answered {exc.code}: {exc.read()[:2000]!r}\n"
                f"poller log {self.poller.log_path}:\n{self.poller.log_tail()}"
            ) from None
        try:
            result = json.loads(body)
        except ValueError:
            raise RuntimeError(
                f"poll_clever answered non-JSON {body[:2000]!r}\n"
                f"poller log {self.poller.log_path}:\n{self.poller.log_tail()}"
            ) from None
        if not isinstance(result, dict) or not isinstance(result.get("published"), int):
            raise RuntimeError(f"poll_clever answer has no integer 'published': {result!r}")
        return result

    def poll_and_wait(self, timeout: float = 60.0) -> dict:
        """poll(), then wait until every message published so far (by all polls) is acked."""
        result = self.poll()
        self.published_total += result["published"]
        try:
            self.relay.wait_for(self.published_total, timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\napplier log {self.applier.log_path}:\n{self.applier.log_tail()}") from None
        return result

    def firestore_client(self):
        """A google.cloud.firestore.Client on the emulator."""
        from google.cloud import firestore

        with _temporary_env(FIRESTORE_EMULATOR_HOST=self.firestore.host):
            return firestore.Client(project=self.project)

    def reset(self) -> None:
        """Wipe Firestore, replace the subscription with a fresh one, zero the counters."""
        if self.subscription is not None:
            delete_subscription(self.pubsub.host, self.project, self.subscription)
        self.firestore.reset(self.project)
        self.relay.reset()
        self.published_total = 0
        if self.dead_letters:
            if self.dead_letter_subscription is not None:
                delete_subscription(self.pubsub.host, self.project, self.dead_letter_subscription)
            self.dead_letter_relay.reset()
            self._create_dead_letter_subscription()
        self._create_subscription()

    def stop(self) -> None:
        for subscription in (self.subscription, self.dead_letter_subscription):
            if subscription is not None and self.pubsub is not None and not self._own_emulators:
                with contextlib.suppress(Exception):  # shared emulators: don't leave a pushing subscription
                    delete_subscription(self.pubsub.host, self.project, subscription)
        self.subscription = None
        self.dead_letter_subscription = None
        for server in (self.poller, self.applier, self.recorder):
            if server is not None:
                server.stop()
        for relay in (self.relay, self.dead_letter_relay):
            if relay is not None:
                relay.stop()
        if self._own_emulators:
            for emulator in (self.pubsub, self.firestore):
                if emulator is not None:
                    emulator.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
