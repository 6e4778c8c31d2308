"""Helpers for tests that run the real thing: Tansu, worker processes, HTTP scrapes.

Every process started here is owned by the test that started it and stopped
by it; every address is 127.0.0.1 with a free port.
"""

from __future__ import annotations

import contextlib
import os
import signal
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

from streams.admin import ensure_topics
from streams.broker import LOOPBACK, EmbeddedBroker, free_port
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
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
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
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

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
            consumer.subscribe([topic])
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


@contextlib.contextmanager
def cluster(tmp: Path, env: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    with EmbeddedBroker() as broker:
        base_env = {
            "CROSSSELL_BROKER_URL": broker.url,
            "CROSSSELL_APP_ID": unique("crosssell"),
            "CROSSSELL_PARTITIONS": "4",
            "CROSSSELL_LOG_LEVEL": "warning",
            **(env or {}),
        }
        running = Cluster(broker, tmp, base_env)
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
