"""The local stack harness, against a throwaway functions source (not functions/main.py).

Needs gcloud with the Pub/Sub and Firestore emulators and Java; skipped otherwise.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.sims.emulators import ToolMissing, check_tools, pid_alive, start_emulators
from tests.sims.stack import REPO_ROOT, LocalStack

try:
    check_tools()
except ToolMissing as exc:  # pragma: no cover - depends on the machine
    pytest.skip(str(exc), allow_module_level=True)

PROJECT = "stack-test"
TOPIC = "roster-events"

SIM_MAIN = textwrap.dedent(
    '''
    """Stand-ins for the two entry points: the poller publishes what the plan file says."""
    import base64
    import json
    import os
    import threading
    import time

    import functions_framework
    from google.cloud import firestore, pubsub_v1

    _attempts = {}
    _lock = threading.Lock()


    @functions_framework.http
    def poll_clever(request):
        with open(os.environ["SIM_PLAN_FILE"]) as fh:
            plan = json.load(fh)
        publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        )
        topic = publisher.topic_path(os.environ["GOOGLE_CLOUD_PROJECT"], os.environ["ROSTER_EVENTS_TOPIC"])
        futures = [
            publisher.publish(
                topic,
                json.dumps({**m, "run": plan["run"]}).encode(),
                ordering_key=m["key"],
                key=m["key"],
                seq=str(m["seq"]),
            )
            for m in plan["messages"]
        ]
        ids = [f.result(timeout=30) for f in futures]
        return {"published": len(ids), "message_ids": ids}


    @functions_framework.cloud_event
    def apply_roster_event(cloud_event):
        started = time.time()
        data = cloud_event.data
        payload = json.loads(base64.b64decode(data["message"]["data"]))
        name = f"{payload['run']}-{payload['key']}-{payload['seq']}"
        with _lock:
            _attempts[name] = attempt = _attempts.get(name, 0) + 1
        time.sleep(payload.get("sleep", 0))
        if attempt <= payload.get("fail_times", 0):
            raise RuntimeError(f"simulated failure of {name}, attempt {attempt}")
        firestore.Client().collection("applied").document(name).set(
            {
                "data_json": json.dumps(data, default=repr),
                "ce": {k: str(cloud_event[k]) for k in ("id", "type", "source", "specversion")},
                "attempt": attempt,
                "started": started,
                "finished": time.time(),
            }
        )
    '''
)


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sim_functions")
    (d / "main.py").write_text(SIM_MAIN)
    return d


@pytest.fixture(scope="module")
def emulators():
    started = time.monotonic()
    pubsub, firestore = start_emulators(PROJECT)
    print(
        f"emulators up in {time.monotonic() - started:.1f} s "
        f"(pubsub {pubsub.startup_seconds:.1f} s, firestore {firestore.startup_seconds:.1f} s)"
    )
    yield pubsub, firestore
    pubsub.stop()
    firestore.stop()


@pytest.fixture(scope="module")
def shared_stack(emulators, source_dir, tmp_path_factory):
    plan_file = tmp_path_factory.mktemp("plan") / "plan.json"
    with LocalStack(
        project=PROJECT,
        topic=TOPIC,
        extra_env={"SIM_PLAN_FILE": str(plan_file)},
        emulators=emulators,
        source_dir=source_dir,
    ) as stack:
        stack.plan_file = plan_file
        yield stack


@pytest.fixture
def stack(shared_stack):
    shared_stack.reset()
    return shared_stack


def set_plan(stack: LocalStack, messages: list[dict]) -> str:
    run = uuid.uuid4().hex[:8]
    stack.plan_file.write_text(json.dumps({"run": run, "messages": messages}))
    return run


def applied(stack: LocalStack) -> dict[str, dict]:
    return {d.id: d.to_dict() for d in stack.firestore_client().collection("applied").stream()}


def test_env_given_to_the_functions(stack):
    assert stack.env["GOOGLE_CLOUD_PROJECT"] == PROJECT
    assert stack.env["PUBSUB_EMULATOR_HOST"] == stack.pubsub.host
    assert stack.env["FIRESTORE_EMULATOR_HOST"] == stack.firestore.host
    assert stack.env["ROSTER_EVENTS_TOPIC"] == TOPIC
    assert stack.env["SIM_PLAN_FILE"]
    assert stack.poller.url.startswith("http://127.0.0.1:")
    assert stack.applier.log_path.exists()
    print(f"functions up in {stack.applier.startup_seconds:.1f} s / {stack.poller.startup_seconds:.1f} s")


def test_push_path_delivers_a_cloudevent_with_the_pubsub_message(stack):
    run = set_plan(stack, [{"key": "sec-1", "seq": i} for i in range(3)])
    result = stack.poll_and_wait(timeout=30)
    assert result["published"] == 3
    counters = stack.relay.counters()
    assert counters == {"delivered": 3, "acked": 3, "failed": 0, "in_flight": 0, "messages": 3}

    docs = applied(stack)
    assert sorted(docs) == [f"{run}-sec-1-{i}" for i in range(3)]
    doc = docs[f"{run}-sec-1-0"]
    data = json.loads(doc["data_json"])
    # functions-framework turns the raw push body into a CloudEvent whose data is {"message": ...}:
    # data (base64) and attributes kept, messageId and publishTime restored from the event context;
    # "subscription", "orderingKey" and "deliveryAttempt" are dropped.
    assert set(data) == {"message"}
    message = data["message"]
    assert set(message) == {"@type", "data", "attributes", "messageId", "publishTime"}
    assert message["@type"] == "type.googleapis.com/google.pubsub.v1.PubsubMessage"
    assert message["attributes"] == {"key": "sec-1", "seq": "0"}
    assert json.loads(base64.b64decode(message["data"]))["seq"] == 0
    assert message["messageId"] in result["message_ids"]
    assert doc["ce"]["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert doc["ce"]["id"] == message["messageId"]

    # What the emulator itself pushed (as the relay saw it).
    push = stack.relay.messages[message["messageId"]].push_body
    assert push["subscription"] == f"projects/{PROJECT}/subscriptions/{stack.subscription}"
    assert set(push["message"]) >= {"data", "attributes", "messageId", "publishTime"}
    print("push body:", json.dumps(push))
    print("cloud_event.data:", json.dumps(data))

    # A second poll adds to the running total.
    set_plan(stack, [{"key": "sec-2", "seq": 0}])
    assert stack.poll_and_wait(timeout=30)["published"] == 1
    assert stack.published_total == 4
    assert stack.relay.counters()["acked"] == 4


def test_same_ordering_key_is_pushed_one_at_a_time_in_order(stack):
    n = 4
    set_plan(stack, [{"key": k, "seq": i, "sleep": 0.4} for k in ("A", "B") for i in range(n)])
    started = time.monotonic()
    stack.poll_and_wait(timeout=40)
    elapsed = time.monotonic() - started

    attempts = sorted(stack.relay.attempts, key=lambda a: a.started)
    assert len(attempts) == 2 * n and all(a.status == 200 for a in attempts)
    for key in ("A", "B"):
        mine = [a for a in attempts if a.attributes["key"] == key]
        assert [int(a.attributes["seq"]) for a in mine] == list(range(n))  # in publish order
        for prev, nxt in itertools.pairwise(mine):
            assert nxt.started >= prev.finished  # the next one only after the previous was acked
    # Different keys do go in parallel.
    assert stack.relay.max_in_flight >= 2
    print(f"2 keys x {n} messages x 0.4 s took {elapsed:.1f} s; max in flight {stack.relay.max_in_flight}")


def test_a_500_counts_as_failed_and_is_redelivered_before_the_next_message_of_its_key(stack):
    run = set_plan(
        stack,
        [
            {"key": "C", "seq": 0, "fail_times": 2},
            {"key": "C", "seq": 1},
            {"key": "D", "seq": 0},
        ],
    )
    stack.poll_and_wait(timeout=30)
    counters = stack.relay.counters()
    assert counters["acked"] == 3
    assert counters["failed"] == 2
    assert counters["delivered"] == 5

    c0 = [a for a in stack.relay.attempts if a.attributes == {"key": "C", "seq": "0"}]
    assert [a.status for a in c0] == [500, 500, 200]
    c1 = next(a for a in stack.relay.attempts if a.attributes == {"key": "C", "seq": "1"})
    assert c1.started >= c0[-1].finished  # held back until C0 was finally acked
    gaps = [nxt.started - prev.finished for prev, nxt in itertools.pairwise(c0)]
    print("redelivery gaps after a 500:", [f"{g * 1000:.0f} ms" for g in gaps])
    assert max(gaps) < 10
    assert applied(stack)[f"{run}-C-0"]["attempt"] == 3


def test_wait_for_times_out_with_the_counters(stack):
    with pytest.raises(TimeoutError, match="acked"):
        stack.relay.wait_for(1, timeout=0.5)


def test_reset_wipes_firestore_and_replaces_the_subscription(stack):
    set_plan(stack, [{"key": "E", "seq": 0}])
    stack.poll_and_wait(timeout=30)
    assert applied(stack)
    old_subscription = stack.subscription
    stack.reset()
    assert stack.subscription != old_subscription
    assert applied(stack) == {}
    assert stack.relay.counters()["delivered"] == 0
    assert stack.published_total == 0


def test_poll_failure_raises_with_the_poller_log(stack):
    stack.plan_file.write_text("not json")
    with pytest.raises(RuntimeError, match="poll_clever answered 500") as info:
        stack.poll()
    assert "JSONDecodeError" in str(info.value)


def test_check_tools_explains_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="gcloud components install pubsub-emulator"):
        check_tools()


def test_own_emulators_and_functions_stop_without_leftovers(source_dir, tmp_path):
    stack = LocalStack(project=PROJECT, source_dir=source_dir, extra_env={"SIM_PLAN_FILE": "x"})
    with stack:
        parts = [stack.pubsub, stack.firestore, stack.applier, stack.poller]
        pids = [pid for p in parts for pid in p.pids()]
        assert len(pids) >= 6  # gcloud + java (x2), gunicorn arbiter + worker (x2)
        assert all(pid_alive(pid) for pid in pids)
    assert [pid for pid in pids if pid_alive(pid)] == []


SAFETY_NET_CHILD = """
import sys, time
from tests.sims.emulators import PubSubEmulator
emulator = PubSubEmulator(project="p").start()
print(" ".join(map(str, emulator.pids())), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_emulators_die_with_an_interrupted_parent(signum):
    child = subprocess.Popen(
        [sys.executable, "-c", SAFETY_NET_CHILD],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        # A shell without job control starts background commands (scripts/test's pytest) with
        # SIGINT ignored, and children inherit that: give the child the terminal's default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
        assert pids and all(pid_alive(p) for p in pids)
        child.send_signal(signum)
        # Stopping is SIGTERM, up to 10 s of grace, then SIGKILL: allow for a loaded CI machine.
        child.wait(timeout=60)
        deadline = time.monotonic() + 15
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in pids if pid_alive(p)] == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
