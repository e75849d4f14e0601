"""Pub/Sub adapter: publishes roster changes in order per section, and confirms every one.

The only module that imports google.cloud.pubsub. With message ordering on, a failed publish
pauses its ordering key; we resume it and report the failure, so the poller does not advance its
cursor and the next poll publishes the same changes again (the applier ignores repeats).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from google.cloud import pubsub_v1

from rostersync.changes import MAX_CHANGES_PER_MESSAGE, RosterChange, encode_message, message_attributes

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    retryable = True


class PubSubPublisher:
    def __init__(self, project: str, topic: str, timeout: float = 60.0):
        self._client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.02),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self._topic = self._client.topic_path(project, topic)
        self._timeout = timeout

    def publish(self, changes: Iterable[RosterChange]) -> int:
        """Publishes the changes, packing consecutive changes to one section into one message,
        and returns the number of messages once every one is confirmed."""
        futures = [
            (
                group,
                self._client.publish(
                    self._topic, encode_message(group), ordering_key=group[0].ordering_key, **message_attributes(group)
                ),
            )
            for group in pack_by_section(changes)
        ]
        failed: list[tuple[list[RosterChange], Exception]] = []
        for group, future in futures:
            try:
                future.result(timeout=self._timeout)
            except Exception as exc:
                failed.append((group, exc))
        for key in {group[0].ordering_key for group, _ in failed}:
            self._client.resume_publish(self._topic, key)
        if failed:
            group, exc = failed[0]
            raise PublishError(f"{len(failed)} of {len(futures)} publishes failed, first {group[0].describe()}: {exc}")
        return len(futures)

    def publish_message(self, data: bytes, ordering_key: str, attributes: Mapping[str, str]) -> str:
        """One message as given (a dead letter's replay); its id once Pub/Sub confirmed it."""
        future = self._client.publish(self._topic, data, ordering_key=ordering_key, **dict(attributes))
        try:
            return future.result(timeout=self._timeout)
        except Exception as exc:
            self._client.resume_publish(self._topic, ordering_key)
            raise PublishError(f"publish to {self._topic} (ordering key {ordering_key}) failed: {exc}") from exc


def pack_by_section(changes: Iterable[RosterChange]) -> list[list[RosterChange]]:
    """Groups changes by section, keeping their order within a section (the order across
    sections does not matter: each section is its own ordering key)."""
    groups: dict[str, list[list[RosterChange]]] = {}
    for change in changes:
        runs = groups.setdefault(change.section_id, [[]])
        if len(runs[-1]) >= MAX_CHANGES_PER_MESSAGE:
            runs.append([])
        runs[-1].append(change)
    return [run for runs in groups.values() for run in runs]
