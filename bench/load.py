"""The events every contender reads: generated once, seeded, and sent to the broker.

Generation uses the project's own traffic model (streams.ops.traffic.OrderMaker).
Its catalogue draws a product with ``random.choices(weights=...)``, which sums
the weights of the whole category on every draw; with 16,667 products per
category that is ~0.6 ms per order. :class:`CumulativeCatalogue` keeps the
running sums instead: ``choices`` computes exactly those sums from
``weights``, so the same seed gives the same orders, ~50 times faster.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Producer

from streams.ops.traffic import OrderMaker, TrafficShape

Event = tuple[bytes, bytes]  # (key, value)


def order_maker(seed: int, shape: TrafficShape) -> OrderMaker:
    return OrderMaker(random.Random(seed), shape)


def make_events(maker: OrderMaker, count: int, first_time: float, last_time: float) -> list[Event]:
    """``count`` events with event times spread evenly from ``first_time`` to ``last_time``."""
    step = (last_time - first_time) / max(1, count - 1)
    events = []
    for i in range(count):
        _, key, value = maker.event(first_time + i * step)
        events.append((key, value))
    return events


def producer(bootstrap: str, linger_ms: int = 20) -> Producer:
    return Producer({
        "bootstrap.servers": bootstrap,
        "linger.ms": linger_ms,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "enable.idempotence": False,
        "acks": "all",
    })


def preload(bootstrap: str, topic: str, events: Sequence[Event], timeout: float = 120.0) -> float:
    """Send every event and wait until the broker has them all; returns the seconds it took."""
    started = time.monotonic()
    failed: list[object] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failed.append(error)

    out = producer(bootstrap)
    for key, value in events:
        while True:
            try:
                out.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                out.poll(0.05)
        out.poll(0)
    remaining = out.flush(timeout)
    if remaining or failed:
        raise RuntimeError(f"preloading {topic}: {remaining} events undelivered after {timeout:g}s, "
                           f"{len(failed)} failed (first: {failed[:1]})")
    return time.monotonic() - started


# The paced sender's linger: librdkafka's default, as a shop's producers would send. With 1 ms the
# embedded broker took ~1,000 tiny produce requests a second at 16,000 events/s and used 0.41-0.45
# of a core against 0.25-0.29 with 5 ms: CPU taken from the worker on the same 2 cores (its p99 at
# that rate 2.8-3.9 s against 0.76-0.89 s, same run). The linger is inside every measured latency.
PACED_LINGER_MS = 5


@dataclass
class PacedSend:
    """Sends events at a fixed rate from a thread, recording when each one was handed to the client."""

    bootstrap: str
    topic: str
    events: Sequence[Event]
    rate: float
    sent_at: list[float] = field(default_factory=list)
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> PacedSend:
        self._thread = threading.Thread(target=self._run, name="paced-send", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        assert self._thread is not None
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            out = producer(self.bootstrap, linger_ms=PACED_LINGER_MS)
            start = time.time()
            sent_at = self.sent_at
            total = len(self.events)
            i = 0
            while i < total:
                now = time.time()
                due = min(total, int((now - start) * self.rate) + 1)
                while i < due:
                    key, value = self.events[i]
                    sent_at.append(time.time())
                    out.produce(self.topic, value=value, key=key)
                    i += 1
                out.poll(0)
                time.sleep(0.001)
            out.flush(30)
        except BaseException as exc:
            self.error = exc
