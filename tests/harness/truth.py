"""The offline truth: what the topic holds, replayed through fresh ledgers, against what the workers export."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.orders.config import window_config
from streams.orders.contract import Limits, decode_order
from streams.orders.ledger import PartitionLedger
from streams.orders.snapshot import take_snapshot
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings
from tests.harness.processes import Samples, Worker, unique

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
# Per worker process or timing-dependent: no offline replay knows them (orders that reached the
# drop test after their tick was tested depend on when they were delivered, e.g. after an outage;
# which worker runs the fleet's drop test depends on the group's assignment).
# How the worker's flushes stand (pending events, a flush waiting for the broker, failures) is timing too.
NOT_COMPARED = ("crosssell_dead_letters_total", "crosssell_dead_letter_errors_total", "crosssell_consumer_lag_messages",
                "crosssell_drop_orders_skipped_total", "crosssell_drop_owner", "crosssell_flush_pending_events",
                "crosssell_flush_outstanding", "crosssell_flush_failures_total")

def expected_metrics(ledgers: Iterable[PartitionLedger], settings: Settings) -> Samples:
    """The crosssell_ samples a worker owning exactly ``ledgers`` must export."""
    held = list(ledgers)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CrossSellCollector(lambda: take_snapshot(held, settings, dead_letters={}), settings))
    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name not in NOT_COMPARED:
                labels = tuple(sorted(item for item in sample.labels.items() if item[0] != "assignment"))
                samples[(sample.name, labels)] = sample.value
    return samples

def crosssell_samples(metrics: Samples, like: Samples) -> Samples:
    """The samples of ``metrics`` in the metric families that ``like`` (the collector's output) has."""
    families = {name.removesuffix("_total") for name, _ in like}
    # ``assignment`` says when the worker took the partition, which no offline truth knows;
    # a scrape has one per owned partition, so the counts compare without it.
    return {(name, tuple(label for label in labels if label[0] != "assignment")): value
            for (name, labels), value in metrics.items()
            if name.removesuffix("_total") in families and name not in NOT_COMPARED}

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
