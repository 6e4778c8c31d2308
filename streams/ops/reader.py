"""Read the "frequently bought together" lists back from their compacted topics.

Partitions are assigned, not subscribed: no consumer group to join, so the
answer comes at once (a group join took ~27 s on the embedded broker). A
topic is read from its start; the newest message of each product is its
current list, a null value (tombstone) that it has none.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import IO

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

# Read until nothing new came for this long after the partitions' end offsets were reached
# (Tansu 0.6.0 can report an end offset short of the last record: FACTS.md).
QUIET_SECONDS = 0.5
CATCH_UP_TIMEOUT = 60.0


def _consumer(bootstrap: str, topics: list[str], partitions: int, security: Mapping[str, str]) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, **security,
                         "group.id": f"crosssell-reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic in topics for p in range(partitions)])
    return consumer


def _messages(consumer: Consumer, timeout: float) -> Iterator[Message]:
    for message in consumer.consume(1000, timeout=timeout):
        if message.error() is None:
            yield message


def _caught_up(consumer: Consumer, topics: list[str], partitions: int) -> bool:
    for topic in topics:
        for partition in range(partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5, cached=False)
            position = consumer.position([TopicPartition(topic, partition)])[0].offset
            if high > 0 and (position < 0 or position < high):
                return False
    return True


def latest(consumer: Consumer, topics: list[str], partitions: int) -> dict[tuple[str, bytes], bytes | None]:
    """The newest value of every key in ``topics`` (None: a tombstone)."""
    found: dict[tuple[str, bytes], bytes | None] = {}
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    last_new = time.monotonic()
    while time.monotonic() < deadline:
        got = False
        for message in _messages(consumer, 0.2):
            found[(message.topic() or "", message.key() or b"")] = message.value()
            got = True
        if got:
            last_new = time.monotonic()
        elif time.monotonic() - last_new >= QUIET_SECONDS and _caught_up(consumer, topics, partitions):
            break
    return found


def current_lists(bootstrap: str, topics: list[str], partitions: int, *,
                  security: Mapping[str, str] | None = None) -> dict[tuple[str, bytes], bytes | None]:
    """The newest value of every (topic, product) in ``topics``, read from their start (None: a tombstone)."""
    consumer = _consumer(bootstrap, topics, partitions, security or {})
    try:
        return latest(consumer, topics, partitions)
    finally:
        consumer.close()


def print_recommendations(bootstrap: str, topics: list[str], partitions: int, product: str | None, *,
                          security: Mapping[str, str], follow: bool = False, out: IO[str] = sys.stdout) -> int:
    """Print the current lists (one JSON line each), then with ``follow`` every update; returns lines printed."""
    wanted = product.encode() if product is not None else None
    consumer = _consumer(bootstrap, topics, partitions, security)
    printed = 0
    try:
        for (_, key), value in sorted(latest(consumer, topics, partitions).items(),
                                          key=lambda item: (item[0][1], item[0][0])):
            if value is not None and (wanted is None or key == wanted):
                print(value.decode(), file=out, flush=True)
                printed += 1
        if product is not None and not printed:
            print(f"crosssell: no list for {product!r} in {', '.join(topics)} (yet)", file=sys.stderr)
        while follow:
            for message in _messages(consumer, 1.0):
                if wanted is None or message.key() == wanted:
                    value = message.value()
                    print(value.decode() if value is not None else
                          f'{{"product_id": "{(message.key() or b"").decode()}", "topic": "{message.topic()}", '
                          f'"companions": []}}', file=out, flush=True)
                    printed += 1
    finally:
        consumer.close()
    return printed
