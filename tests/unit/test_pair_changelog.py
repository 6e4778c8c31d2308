"""streams.pairs.ledger: the changelog of pair buckets, a base per bucket and logs of the messages applied since.

A flush writes what changed: a log of the messages (bytes that grow with the
traffic), or a new base once the logs would reach half of it. Recovery from
what the changelog holds, at any flush, gives the buckets the worker had.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from streams.pairs.basket import PairAccumulator
from streams.pairs.ledger import PairLedger

HORIZONS = {"24h": 86400.0}
BUCKET = 7200.0


class Changelog:
    """The table as the changelog holds it: the newest JSON of every key, tombstones removed."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.written = 0

    def flush(self, ledger: PairLedger) -> tuple[dict[str, Any], list[str]]:
        writes, deletes = ledger.take_changes()
        for key, value in writes.items():
            body = orjson.dumps(value)
            self.values[key] = body
            self.written += len(body)
        for key in deletes:
            self.values.pop(key, None)
        return writes, deletes

    def restore(self) -> PairLedger:
        items = [(key, orjson.loads(value)) for key, value in self.values.items()]
        random.Random(len(items)).shuffle(items)  # recovery order is not part of the contract
        return PairLedger.restore(0, HORIZONS, 12, None, None, items)


def messages(seed: int, count: int, start: int = 1) -> list[dict[str, Any]]:
    """Pairs messages of source partition 0 for one bucket, as the outbox sends them (through JSON)."""
    rng = random.Random(seed)
    catalogue = [f"p{n:04d}" for n in range(600)]
    sent = []
    for sequence in range(start, start + count):
        accumulator = PairAccumulator()
        accumulator.add_baskets([tuple(sorted(set(rng.sample(catalogue, rng.randint(2, 5))))) for _ in range(40)])
        sent.append({"partition": 0, "source": 0, "sequence": sequence, "horizon": "24h", "bucket": BUCKET,
                     "orders": accumulator.total_orders, "products": accumulator.product_counts(),
                     "pairs": accumulator.companion_counts()})
    return sent


def state(ledger: PairLedger) -> dict[Any, Any]:
    return {key: (b.orders, b.applied, b.products, b.pairs) for key, b in ledger.buckets.items()}


def test_a_flush_writes_a_log_of_the_messages_and_a_new_base_only_when_the_logs_reach_half_of_it() -> None:
    ledger, changelog = PairLedger(0, HORIZONS, 12), Changelog()
    kinds = []
    for message in messages(1, 60):
        ledger.apply(message, orjson.dumps(message))
        writes, _ = changelog.flush(ledger)
        kinds.append("base" if "0/24h/7200" in writes else "log")
    assert kinds[0] == "base" and kinds.count("base") < 10 < kinds.count("log")
    # What all the flushes wrote is a few times what the bucket takes, not one bucket per flush.
    assert changelog.written < 6 * len(changelog.values["0/24h/7200"])


@pytest.mark.parametrize("flushes", [1, 2, 7, 23, 60])
def test_recovery_after_any_flush_gives_the_buckets_the_worker_had(flushes: int) -> None:
    ledger, changelog = PairLedger(0, HORIZONS, 12), Changelog()
    for message in messages(2, flushes):
        ledger.apply(message, orjson.dumps(message))
        changelog.flush(ledger)
    restored = changelog.restore()
    assert state(restored) == state(ledger)
    # And it goes on from there as the original does.
    for message in messages(3, 5, start=flushes + 1):
        ledger.apply(message)
        restored.apply(message)
        changelog.flush(ledger)
    assert state(changelog.restore()) == state(ledger)


def test_the_logs_a_new_base_replaced_are_deleted_at_the_next_flush_and_ignored_until_then() -> None:
    ledger, changelog = PairLedger(0, HORIZONS, 12), Changelog()
    for message in messages(4, 6):
        ledger.apply(message)
        changelog.flush(ledger)
    logs = [key for key in changelog.values if key.count("/") == 3]
    assert logs
    ledger.mark_changed(("24h", BUCKET))  # as after a cut: the next flush writes a base
    writes, deletes = changelog.flush(ledger)
    assert "0/24h/7200" in writes and not set(logs) & set(deletes)
    # A crash now: the old logs are still there, and must not be applied to the new base.
    assert state(changelog.restore()) == state(ledger)
    assert set(changelog.restore().take_changes()[1]) == set(logs)
    _, deletes = changelog.flush(ledger)
    assert set(deletes) == set(logs)


def test_an_expired_bucket_is_deleted_with_its_logs() -> None:
    ledger, changelog = PairLedger(0, HORIZONS, 12), Changelog()
    for message in messages(5, 4):
        ledger.apply(message)
        changelog.flush(ledger)
    later = messages(6, 1)[0] | {"bucket": BUCKET + 86400.0}
    ledger.apply(later)
    changelog.flush(ledger)
    assert list(changelog.values) == ["0/24h/93600"]
