"""Send generated order traffic to the orders topic with confluent-kafka (replay: streams/ops/replay.py).

Both show progress on stderr every few seconds and end with a summary of what
they sent, by kind.
"""

from __future__ import annotations

import functools
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from confluent_kafka import KafkaException, Producer

from streams.ops.traffic import OrderMaker, Scenario, TrafficShape

PROGRESS_EVERY = 5.0


def producer(bootstrap: str, security: Mapping[str, str]) -> Producer:
    """``security``: the TLS and SASL properties of streams.ops.security.librdkafka_config."""
    return Producer({
        "bootstrap.servers": bootstrap,
        **security,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "enable.idempotence": False,
        "acks": "all",
    })


@dataclass(slots=True)
class SendReport:
    sent: Counter[str]
    failed: int
    seconds: float

    def summary(self, what: str) -> str:
        total = sum(self.sent.values())
        kinds = ", ".join(f"{kind}={n}" for kind, n in sorted(self.sent.items())) or "nothing"
        rate = total / self.seconds if self.seconds else 0.0
        return (f"{what}: {total} events in {self.seconds:.1f}s ({rate:.0f}/s): {kinds}; "
                f"{self.failed} failed to deliver")


class Sender:
    def __init__(self, bootstrap: str, security: Mapping[str, str], topic: str, out: IO[str]) -> None:
        self.producer = producer(bootstrap, security)
        self.topic = topic
        self.out = out
        self.sent: Counter[str] = Counter()
        self.failed = 0
        self.started = time.monotonic()
        self.last_progress = self.started

    def _delivered(self, error: object, message: object) -> None:
        if error is not None:
            self.failed += 1

    def send(self, kind: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.sent[kind] += 1
        self.producer.poll(0)
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            total = sum(self.sent.values())
            print(f"  sent {total} events ({total / (now - self.started):.0f}/s)", file=self.out, flush=True)

    def finish(self, timeout: float = 30.0) -> SendReport:
        remaining = self.producer.flush(timeout)
        if remaining:
            raise KafkaException(f"{remaining} events were not delivered within {timeout:g}s")
        return SendReport(self.sent, self.failed, time.monotonic() - self.started)


def generate(bootstrap: str, topic: str, *, rate: float, duration: float, seed: int, shape: TrafficShape,
             security: Mapping[str, str], count: int | None = None, out: IO[str] = sys.stderr) -> SendReport:
    """Send ``rate`` events per second for ``duration`` seconds (0: until interrupted) or ``count`` events."""
    maker = OrderMaker(random.Random(seed), shape)
    sender = Sender(bootstrap, security, topic, out)
    start = time.monotonic()
    n = 0
    try:
        while (count is None or n < count) and (duration <= 0 or time.monotonic() - start < duration):
            kind, key, value = maker.event(time.time())
            sender.send(kind, key, value)
            n += 1
            pace(sender.producer, start, n, rate)
    except KeyboardInterrupt:
        pass
    return sender.finish()


def generate_scenario(bootstrap: str, topic: str, scenario: Scenario, *, seconds: float, seed: int,
                      shape: TrafficShape, security: Mapping[str, str], simulate: bool,
                      out: IO[str] = sys.stderr) -> SendReport:
    """Send ``seconds`` of ``scenario``: in real time, or (``simulate``) as fast as possible with event
    times laid out on a simulated clock over the last ``seconds`` before now (a fast event-time
    replay: a worker sees the same event times either way, never ahead of its clock)."""
    maker = OrderMaker(random.Random(seed), shape)
    arrivals = scenario.arrivals(random.Random(seed + 1), seconds)
    drops = random.Random(seed + 2)
    sender = Sender(bootstrap, security, topic, out)
    origin = time.time() - seconds if simulate else time.time()
    started = time.monotonic()
    try:
        for offset in arrivals:
            if not simulate:
                while (ahead := started + offset - time.monotonic()) > 0:
                    sender.producer.poll(min(ahead, 0.5))
            event_time = origin + offset if simulate else time.time()
            kind, key, value = maker.event(event_time, functools.partial(scenario.apply, drops, offset))
            sender.send(kind, key, value)
    except KeyboardInterrupt:
        pass
    return sender.finish()


def pace(producer: Producer, start: float, sent: int, rate: float) -> None:
    """Wait until ``sent`` events at ``rate`` per second since ``start`` are due (rate 0: no wait).

    It serves delivery reports meanwhile; poll() returns at the first of them, so it
    is called again until the time has come (else a low rate would run at ~40/s).
    """
    if rate <= 0:
        return
    due = start + sent / rate
    while (ahead := due - time.monotonic()) > 0:
        producer.poll(min(ahead, 0.5))
