"""Pub/Sub adapter: publishes roster changes in order per section, and confirms every one.

The only module that imports google.cloud.pubsub. With message ordering on, a failed publish
pauses its ordering key; we resume it and report the failure, so the poller does not advance its
cursor and the next poll publishes the same changes again (the applier ignores repeats).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from google.cloud import pubsub_v1

from rostersync.changes import RosterChange

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
        futures = [
            (
                change,
                self._client.publish(
                    self._topic, change.to_json(), ordering_key=change.ordering_key, **change.attributes()
                ),
            )
            for change in changes
        ]
        failed: list[tuple[RosterChange, Exception]] = []
        for change, future in futures:
            try:
                future.result(timeout=self._timeout)
            except Exception as exc:
                failed.append((change, exc))
        for key in {change.ordering_key for change, _ in failed}:
            self._client.resume_publish(self._topic, key)
        if failed:
            change, exc = failed[0]
            raise PublishError(f"{len(failed)} of {len(futures)} publishes failed, first {change.describe()}: {exc}")
        return len(futures)
