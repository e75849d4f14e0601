"""Pub/Sub adapter: publishes roster changes in order per section, and confirms every one.

The only module that imports google.cloud.pubsub. With message ordering on, a failed publish
pauses its ordering key; we resume it and report the failure, so the poller does not advance its
cursor and the next poll publishes the same changes again (the applier ignores repeats).

Messages are bounded by bytes (changes.pack_changes): no message we publish is larger than the
applier accepts. A single change too large for any message (it would take a section of some
50,000 members) is not published and not dropped either: it goes to `on_too_large` (the wiring
keeps it as a dead letter, visible and replayable), and the rest of the changes go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from google.cloud import pubsub_v1

from rostersync.domain.changes import (
    MAX_MESSAGE_BYTES,
    ChangeTooLarge,
    PackedMessage,
    RosterChange,
    encode_message,
    pack_changes,
    split_message,
)

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    retryable = True


class PubSubPublisher:
    def __init__(
        self,
        project: str,
        topic: str,
        timeout: float = 60.0,
        on_too_large: Callable[[ChangeTooLarge, bytes], None] | None = None,
    ):
        self._on_too_large = on_too_large
        self._client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.02),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self._topic = self._client.topic_path(project, topic)
        self._timeout = timeout

    def publish(self, changes: Iterable[RosterChange]) -> int:
        """Publishes the changes, packing consecutive changes to one section into messages bounded
        by bytes, and returns the number of messages once every one is confirmed."""
        messages, too_large = pack_changes(list(changes))
        for refused in too_large:
            self._keep_too_large(refused)
        return self._publish_all(messages)

    def _keep_too_large(self, refused: ChangeTooLarge) -> None:
        log.error("not published, kept as a dead letter: %s", refused)
        if self._on_too_large is None:
            # Without a place to keep it, failing is the only way not to drop it.
            raise PublishError(str(refused))
        self._on_too_large(refused, encode_message([refused.change]))

    def _publish_all(self, messages: list[PackedMessage]) -> int:
        futures = [
            (m, self._client.publish(self._topic, m.data, ordering_key=m.ordering_key, **m.attributes))
            for m in messages
        ]
        failed: list[tuple[PackedMessage, Exception]] = []
        for message, future in futures:
            try:
                future.result(timeout=self._timeout)
            except Exception as exc:
                failed.append((message, exc))
        for key in {m.ordering_key for m, _ in failed}:
            self._client.resume_publish(self._topic, key)
        if failed:
            message, exc = failed[0]
            raise PublishError(
                f"{len(failed)} of {len(futures)} publishes failed, first {message.changes[0].describe()}: {exc}"
            )
        return len(futures)

    def publish_message(self, data: bytes, ordering_key: str, attributes: Mapping[str, str]) -> str:
        """One message as given (a dead letter's replay, a change held while paused); its id once
        Pub/Sub confirmed it. One larger than the applier takes (written before messages were
        bounded) goes as bounded messages with the same changes, in order; the id is the last's."""
        if len(data) > MAX_MESSAGE_BYTES:
            parts = split_message(data)
            self._publish_all(parts)
            return f"{len(parts)} messages"
        future = self._client.publish(self._topic, data, ordering_key=ordering_key, **dict(attributes))
        try:
            return future.result(timeout=self._timeout)
        except Exception as exc:
            self._client.resume_publish(self._topic, ordering_key)
            raise PublishError(f"publish to {self._topic} (ordering key {ordering_key}) failed: {exc}") from exc


def pack_by_section(changes: Iterable[RosterChange]) -> list[list[RosterChange]]:
    """The groups of changes publish() sends as one message each (bounded by bytes and count,
    in order within a section)."""
    messages, too_large = pack_changes(list(changes))
    if too_large:
        raise too_large[0]
    return [m.changes for m in messages]
