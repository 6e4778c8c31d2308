"""Follow whole topics in every worker: the markers, and the published recommendation lists.

Each worker must see every message of these topics, so they are not read
through a consumer group (which would split their partitions among the
workers): a background thread assigns itself every partition, reads from the
start and then follows, handing each message to a callback. confluent-kafka
with the project's security settings (streams/ops/security.py), as the
``recommendations`` command reads the same topics.

The callback runs on the follower's thread; what it changes must be safe to
read from the event loop (the ones here replace or update plain dicts and
lists, atomic under the GIL).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.ops.security import librdkafka_config
from streams.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes, "bytes | None"], None]


class TopicFollower:
    """A thread reading ``topics`` from their start, then following them, until :meth:`stop`."""

    def __init__(self, settings: Settings, topics: list[str], handle: Handler, poll_seconds: float = 0.5) -> None:
        self.settings = settings
        self.topics = topics
        self.handle = handle
        self.poll_seconds = poll_seconds
        self.read = 0  # messages handed to the callback
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.topics:
            self._thread = threading.Thread(target=self._run, name="crosssell-follower", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.settings.bootstrap_servers(),
                             **librdkafka_config(self.settings),
                             "group.id": f"crosssell-follower-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            assigned: set[str] = set()
            while not self._stopping.is_set():
                if len(assigned) < len(self.topics):
                    assigned |= self._assign_new(consumer, assigned)
                for message in consumer.consume(500, timeout=self.poll_seconds):
                    if message.error() is not None:
                        continue
                    try:
                        self.handle(message.topic() or "", message.key() or b"", message.value())
                    except Exception:  # one bad message must not stop the follower
                        log.exception("follower: message of %s not handled", message.topic())
                    self.read += 1
        finally:
            consumer.close()

    def _assign_new(self, consumer: Consumer, assigned: set[str]) -> set[str]:
        """Assign every partition of the topics that exist now (a topic created later is picked up then)."""
        found: set[str] = set()
        partitions = []
        for topic in self.topics:
            if topic in assigned:
                continue
            try:
                metadata = consumer.list_topics(topic, timeout=2.0).topics.get(topic)
            except KafkaException as exc:
                log.warning("follower: topic %s not readable yet: %s", topic, exc)
                continue
            if metadata is None or metadata.error is not None or not metadata.partitions:
                continue
            found.add(topic)
            partitions += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        if partitions:
            consumer.incremental_assign(partitions)
        return found
