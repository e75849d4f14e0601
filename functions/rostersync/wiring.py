"""Builds the handlers from the settings and the real adapters: the composition root.

Clients are made once per function instance and reused across invocations, as Cloud Functions
recommends; a unit of work gets its own deadline.
"""

from __future__ import annotations

import functools
import logging
import threading

from rostersync.applier import Applier
from rostersync.config import Settings, load_settings
from rostersync.poller import Poller
from rostersync.retry import Deadline


@functools.cache
def settings() -> Settings:
    s = load_settings()
    logging.getLogger().setLevel(s.log_level.upper())
    return s


@functools.cache
def store():
    from rostersync.store import FirestoreStore

    s = settings()
    return FirestoreStore.connect(s.project, s.firestore_database)


_per_thread = threading.local()


def applier() -> Applier:
    """One applier per thread: google-api-python-client's httplib2 transport is not thread-safe,
    and functions-framework serves concurrent requests on threads."""
    if getattr(_per_thread, "applier", None) is None:
        _per_thread.applier = _build_applier()
    return _per_thread.applier


def _build_applier() -> Applier:
    from rostersync.classroom import ClassroomAdapter, build_classroom_service

    s = settings()
    s.require_classroom()
    classroom = ClassroomAdapter(
        build_classroom_service(s),
        s.classroom_api_endpoint,
        deadline_factory=lambda: Deadline(s.apply_time_budget_seconds),
    )
    return Applier(store(), classroom, s.section_deleted_action)


@functools.cache
def publisher():
    from rostersync.bus import PubSubPublisher

    s = settings()
    return PubSubPublisher(s.project, s.roster_events_topic)


def poller() -> Poller:
    """A new poller each invocation: its Clever client carries this poll's deadline and user cache."""
    from rostersync.sources.clever import CleverClient, CleverUserDirectory

    s = settings()
    s.require_clever()
    deadline = Deadline(s.poll_time_budget_seconds)
    clever = CleverClient(s.clever_api_base, s.clever_token, s.clever_page_size, deadline=deadline)
    return Poller(clever, CleverUserDirectory(clever), store(), publisher(), deadline)
