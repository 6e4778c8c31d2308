"""Helpers for tests that run the real thing: Tansu, worker processes, HTTP scrapes.

Every process started here is owned by the test that started it and stopped
by it; every address is 127.0.0.1 with a free port.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.admin import ensure_topics
from streams.ops.broker import LOOPBACK, EmbeddedBroker, free_port
from streams.ops.supervisor import kill, spawn, stop
from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Worker:
    """One ``python -m streams worker`` process."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = int(self.env["CROSSSELL_WEB_PORT"])

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Worker:
        with open(self.log_path, "ab") as log:
            self.process = spawn([sys.executable, "-m", "streams", "worker"], self.env, log=log, cwd=REPO)
        return self

    def wait_serving(self, timeout: float = 90.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            with contextlib.suppress(OSError):
                if self.get("/metrics", timeout=2):
                    return self
            time.sleep(0.3)
        raise AssertionError(f"worker did not serve /metrics within {timeout}s:\n{self.log_tail()}")

    def assert_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return bytes(response.read())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics as {(name, sorted labels): value}."""
        text = self.get("/metrics").decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def sample(self, name: str, **labels: str) -> float | None:
        with contextlib.suppress(OSError):
            return self.metrics().get((name, tuple(sorted(labels.items()))))
        return None

    def summary(self) -> dict[str, object]:
        return dict(orjson.loads(self.get("/api/summary")))

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            stop(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None:
            kill(self.process)

    def log_tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


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


def wait_until(condition: object, timeout: float, message: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")


# -- Fault-injection helpers (crash, rebalance, network faults) --------------------
# Offline truth: a fresh PartitionLedger per partition over exactly the events the
# orders topic holds, in offset order; the worker's /metrics must equal what the
# project's own collector renders from those ledgers.

import math  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import zlib  # noqa: E402
from collections import Counter  # noqa: E402

from confluent_kafka import OFFSET_BEGINNING  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from streams.ops.traffic import OrderMaker, TrafficShape  # noqa: E402
from streams.orders.contract import Limits, decode_order  # noqa: E402
from streams.orders.ledger import PartitionLedger  # noqa: E402
from streams.orders.snapshot import take_snapshot  # noqa: E402
from streams.runtime.metrics import CrossSellCollector  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


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


class Traffic:
    """A producer thread sending seeded OrderMaker events, keyed by order_id, while a test runs.

    With ``explicit_partitions`` the partition is ``crc32(key) % partitions`` (so
    retries of one order land together, as the README asks of producers);
    otherwise librdkafka's default partitioner picks it from the key.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, *, seed: int, rate: float,
                 late_share: float = 0.02, invalid_share: float = 0.02, duplicate_share: float = 0.02,
                 explicit_partitions: bool = True, limit: int | None = None) -> None:
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.rate, self.limit, self.explicit_partitions = rate, limit, explicit_partitions
        self.maker = OrderMaker(random.Random(seed), TrafficShape(
            late_share=late_share, invalid_share=invalid_share, duplicate_share=duplicate_share))
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
                ahead = self.sent / self.rate - (time.monotonic() - started)
                producer.poll(max(0.0, ahead))
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


Record = tuple[int, bytes | None, float]  # offset, value, record timestamp (unix seconds, as Faust gives it)


def read_partitions(bootstrap: str, topic: str, partitions: int, at_least: int = 0, timeout: float = 60.0,
                    quiet: float = 2.0, client_config: Mapping[str, str] | None = None) -> dict[int, list[Record]]:
    """Every message of ``topic``, per partition in offset order: {partition: [(offset, value, timestamp)]}.

    Reads until it has ``at_least`` messages and then nothing new came for ``quiet``
    seconds. Not up to the high watermarks: Tansu 0.6.0 answers ListOffsets(latest)
    with the base offset of the partition's last batch + 1, short of the end
    whenever that batch holds several records. ``client_config``: more consumer properties (TLS).
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": unique("truth"), "enable.auto.commit": False,
        "auto.offset.reset": "earliest", **(client_config or {}),
    })
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        messages: dict[int, list[Record]] = {p: [] for p in range(partitions)}
        count = 0
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while count < at_least or time.monotonic() - last_new < quiet:
            assert time.monotonic() < deadline, f"read {count} of at least {at_least} messages of {topic}"
            for message in consumer.consume(1000, timeout=0.2):
                if message.error() is None:
                    timestamp = message.timestamp()[1] / 1000.0
                    messages[message.partition()].append((message.offset(), message.value(), timestamp))
                    count += 1
                    last_new = time.monotonic()
        for p, got in messages.items():
            offsets = [offset for offset, _, _ in got]
            assert offsets == list(range(len(offsets))), f"partition {p}: offsets not read once each from 0"
        return messages
    finally:
        consumer.close()


def offline_ledgers(settings: Settings, messages: Mapping[int, Iterable[Record]]) -> dict[int, PartitionLedger]:
    """A fresh PartitionLedger per partition, fed exactly these events in offset order, as the worker applies them."""
    from streams.orders.ledger import window_config

    config = window_config(settings)
    limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
    ledgers: dict[int, PartitionLedger] = {}
    # The worker read every event before now: an event ahead of now was ahead of its clock too.
    now = time.time()
    for partition, events in messages.items():
        ledger = ledgers[partition] = PartitionLedger(partition, config)
        for offset, value, timestamp in events:
            ledger.apply(offset, decode_order(value, limits), timestamp, received_at=now)
    return ledgers


# Per process (dead letters are at-least-once), or not part of the state.
NOT_COMPARED = ("crosssell_dead_letters_total", "crosssell_dead_letter_errors_total", "crosssell_consumer_lag_messages")


def expected_metrics(ledgers: Iterable[PartitionLedger], settings: Settings) -> Samples:
    """The crosssell_ samples a worker owning exactly ``ledgers`` must export."""
    held = list(ledgers)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CrossSellCollector(lambda: take_snapshot(held, settings, dead_letters={}), settings))
    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name not in NOT_COMPARED:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def crosssell_samples(metrics: Samples, like: Samples) -> Samples:
    """The samples of ``metrics`` in the metric families that ``like`` (the collector's output) has."""
    families = {name.removesuffix("_total") for name, _ in like}
    return {k: v for k, v in metrics.items() if k[0].removesuffix("_total") in families and k[0] not in NOT_COMPARED}


def metric_differences(actual: Samples, expected: Samples, rel: float = 1e-9) -> list[str]:
    """Samples that differ: exact for counts, relative ``rel`` for revenue (float sums in another order)."""
    differences = []
    for key in sorted(set(actual) | set(expected)):
        got, want = actual.get(key), expected.get(key)
        if got is None or want is None:
            differences.append(f"{key}: worker {got}, offline truth {want}")
        elif "revenue" in key[0] or key[0] == "crosssell_rate_ratio":
            if not math.isclose(got, want, rel_tol=rel, abs_tol=1e-9):
                differences.append(f"{key}: worker {got!r}, offline truth {want!r}")
        elif got != want:
            differences.append(f"{key}: worker {got!r}, offline truth {want!r}")
    return differences


def assert_workers_match_truth(workers: Iterable[Worker], ledgers: Mapping[int, PartitionLedger],
                               settings: Settings) -> None:
    """Each live worker exports exactly what its partitions' offline ledgers say; together they own all."""
    owned: list[int] = []
    problems: list[str] = []
    for worker in workers:
        for _ in range(5):  # the partition list and the scrape must describe one assignment
            before = list(worker.summary()["partitions"])  # type: ignore[call-overload]
            scraped = worker.metrics()
            if list(worker.summary()["partitions"]) == before:  # type: ignore[call-overload]
                break
            time.sleep(1)
        owned += before
        expected = expected_metrics([ledgers[p] for p in before], settings)
        actual = crosssell_samples(scraped, like=expected)
        problems += [f"worker :{worker.port} partitions {before}: {d}" for d in metric_differences(actual, expected)]
    assert sorted(owned) == sorted(ledgers), f"partitions owned by live workers: {sorted(owned)}"
    assert not problems, "\n".join(problems[:40])


def total(workers: Iterable[Worker], name: str, **labels: str) -> float | None:
    """Sum of one sample over ``workers``; None if any of them does not answer."""
    values = [worker.sample(name, **labels) for worker in workers]
    if any(value is None for value in values):
        return None
    return sum(v for v in values if v is not None)


def wait_for_events(workers: Iterable[Worker], count: int, timeout: float, partitions: int | None = None) -> None:
    """Until the live workers together have read ``count`` events (and own ``partitions``); else say where they are."""
    workers = list(workers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            worker.assert_alive()
        if total(workers, "crosssell_events_total") == count and (
                partitions is None or total(workers, "crosssell_partitions_assigned") == partitions):
            return
        time.sleep(0.5)
    where = "; ".join(
        f"worker :{w.port} events={w.sample('crosssell_events_total')} "
        f"partitions={w.sample('crosssell_partitions_assigned')} lag={_lag_by_partition(w)}" for w in workers)
    logs = "\n".join(f"--- worker :{w.port}\n{w.log_tail(30)}" for w in workers)
    raise AssertionError(f"after {timeout}s the workers have not read {count} events: {where}\n{logs}")


def _lag_by_partition(worker: Worker) -> dict[str, float]:
    with contextlib.suppress(OSError):
        return {dict(labels).get("partition", "?"): value for (name, labels), value in worker.metrics().items()
                if name == "crosssell_consumer_lag_messages"}
    return {}
