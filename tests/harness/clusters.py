"""A test cluster: an embedded broker the test owns, its topics, and the settings its workers share."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.ops.admin import ensure_topics
from streams.ops.broker import EmbeddedBroker, free_port
from streams.settings import Settings
from tests.harness.processes import Worker, unique
from tests.tcp_proxy import TcpProxy


@dataclass
class Cluster:
    """A broker (embedded, owned by the test) plus the settings workers share."""

    broker: EmbeddedBroker
    tmp: Path
    base_env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.base_env)

    def create_topics(self) -> None:
        ensure_topics(self.bootstrap, self.settings)

    def worker(self, **overrides: str) -> Worker:
        name = f"worker{len(self.workers)}"
        env = {
            **os.environ, **self.base_env,
            "CROSSSELL_WEB_PORT": str(free_port()),
            "CROSSSELL_DATA_DIR": str(self.tmp / name),
            **overrides,
        }
        worker = Worker(env, self.tmp / f"{name}.log")
        self.workers.append(worker)
        return worker

    def produce(self, events: Iterable[tuple[bytes | None, bytes, int | None]], topic: str | None = None) -> int:
        """Send (key, value, partition) events in order; returns how many."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all"})
        topic = topic or self.settings.orders_topic
        n = 0
        for key, value, partition in events:
            if partition is None:
                producer.produce(topic, value=value, key=key)
            else:
                producer.produce(topic, value=value, key=key, partition=partition)
            n += 1
            if n % 1000 == 0:
                producer.poll(0)
        assert producer.flush(30) == 0, "events were not delivered"
        return n

    def read_topic(self, topic: str, expected: int, timeout: float = 30.0) -> list[object]:
        """At least ``expected`` messages of ``topic`` (all partitions, from the start)."""
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": unique("reader"),
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
        })
        try:
            # Assigned, not subscribed: no consumer-group join to wait for.
            consumer.assign([TopicPartition(topic, p, 0) for p in range(self.settings.partitions)])
            messages: list[object] = []
            deadline = time.monotonic() + timeout
            while len(messages) < expected and time.monotonic() < deadline:
                batch = consumer.consume(500, timeout=0.5)
                messages.extend(m for m in batch if m.error() is None)
            return messages
        finally:
            consumer.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            partitions = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
            return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        finally:
            consumer.close()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

# A killed or cut-off worker leaves the group after the session timeout: the fault tests keep it short.
SHORT_SESSION: dict[str, str] = {
    "CROSSSELL_SESSION_TIMEOUT_SECONDS": "6",
    "CROSSSELL_REBALANCE_TIMEOUT_SECONDS": "6",
}

def base_environment(broker_url: str, env: Mapping[str, str] | None) -> dict[str, str]:
    """The settings every worker of one test cluster shares (a fresh app id per cluster)."""
    return {
        "CROSSSELL_BROKER_URL": broker_url,
        "CROSSSELL_APP_ID": unique("crosssell"),
        "CROSSSELL_PARTITIONS": "4",
        "CROSSSELL_LOG_LEVEL": "warning",
        **(env or {}),
    }

@contextlib.contextmanager
def cluster(tmp: Path, env: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    with EmbeddedBroker() as broker:
        running = Cluster(broker, tmp, base_environment(broker.url, env))
        running.create_topics()
        try:
            yield running
        finally:
            running.stop()

@contextlib.contextmanager
def proxied_cluster(tmp: Path, env: Mapping[str, str] | None = None) -> Iterator[tuple[Cluster, TcpProxy]]:
    """Like :func:`cluster`, with a :class:`TcpProxy` between every client and the broker."""
    broker_port = free_port()
    with TcpProxy(target_port=broker_port) as proxy, EmbeddedBroker(port=broker_port,
                                                                   advertised_port=proxy.port) as broker:
        running = Cluster(broker, tmp, base_environment(broker.url, env))
        running.create_topics()
        try:
            yield running, proxy
        finally:
            running.stop()
