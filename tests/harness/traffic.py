"""Seeded order traffic from a producer thread while a test runs."""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections import Counter

from confluent_kafka import Producer

from streams.ops.generator import pace
from streams.ops.traffic import OrderMaker, TrafficShape


class Traffic:
    """A producer thread sending seeded OrderMaker events, keyed by order_id, while a test runs.

    With ``explicit_partitions`` the partition is ``crc32(key) % partitions`` (so
    retries of one order land together, as the README asks of producers);
    otherwise librdkafka's default partitioner picks it from the key.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, *, seed: int, rate: float,
                 late_share: float = 0.02, invalid_share: float = 0.02, duplicate_share: float = 0.02,
                 explicit_partitions: bool = True, limit: int | None = None, customers: int = 50_000,
                 return_rate: float = 0.0) -> None:
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.rate, self.limit, self.explicit_partitions = rate, limit, explicit_partitions
        self.maker = OrderMaker(random.Random(seed), TrafficShape(
            late_share=late_share, invalid_share=invalid_share, duplicate_share=duplicate_share,
            customers=customers, return_rate=return_rate))
        self.kinds: Counter[str] = Counter()
        self.sent = 0
        self.delivered = 0
        self.failed: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._error: BaseException | None = None
        self.undelivered = 0

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _on_delivery(self, error: object, message: object) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed.append(str(error))

    def _run(self) -> None:
        try:
            producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all",
                                 "message.timeout.ms": 300_000})
            started = time.monotonic()
            while not self._stopping.is_set() and (self.limit is None or self.sent < self.limit):
                kind, key, value = self.maker.event(time.time())
                if self.explicit_partitions:
                    producer.produce(self.topic, value=value, key=key, partition=zlib.crc32(key) % self.partitions,
                                     on_delivery=self._on_delivery)
                else:
                    producer.produce(self.topic, value=value, key=key, on_delivery=self._on_delivery)
                self.sent += 1
                self.kinds[kind] += 1
                pace(producer, started, self.sent, self.rate)
            self.undelivered = producer.flush(120)
        except BaseException as exc:  # re-raised by stop()
            self._error = exc

    def wait(self, timeout: float = 300.0) -> Traffic:
        """Until ``limit`` events are sent and delivered."""
        self._thread.join(timeout)
        return self

    def stop(self) -> int:
        """Stop sending, wait for delivery; returns how many events the broker acknowledged."""
        self._stopping.set()
        self._thread.join(180)
        assert not self._thread.is_alive(), "the traffic thread did not finish"
        if self._error is not None:
            raise self._error
        assert self.undelivered == 0 and not self.failed, (
            f"{self.undelivered} events not delivered, {len(self.failed)} failed: {self.failed[:3]}")
        return self.delivered
