"""A customer partition's ledger: applied once, rolling counts, exact after a crash at any point of a flush."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from streams.customers.ledger import CustomerConfig, CustomerLedger
from streams.customers.outbox import customer_messages, customer_partition

DAY = 86400.0
CONFIG = CustomerConfig(horizon=30 * DAY, bucket=3600.0, max_categories=4)
CATEGORIES = ["laptops", "bags", "tv", "cables", "pens"]


def traffic(seed: int, orders: int = 400) -> list[tuple[str, float, str, tuple[str, ...]]]:
    rng = random.Random(seed)
    out = []
    for i in range(orders):
        customer = f"c-{rng.randrange(60)}"
        categories = tuple(sorted(set(rng.sample(CATEGORIES, rng.choice([1, 1, 2])))))
        out.append((customer, i * 3 * 3600.0 + rng.random(), categories[0], categories))
    return out


def messages_for(partition: int, orders: list[Any], sources: int = 3, per_flush: int = 17) -> list[dict[str, Any]]:
    """What the orders partitions send: orders dealt to sources, each source flushing every few orders."""
    out = []
    for source in range(sources):
        mine = orders[source::sources]
        for sequence, start in enumerate(range(0, len(mine), per_flush), start=1):
            out.extend(m for m in customer_messages(source, sequence, mine[start:start + per_flush], 2,
                                                    CONFIG.horizon, CONFIG.max_categories, 2_000)
                       if m["partition"] == partition)
    # sources interleave at the customer partition, each in its own order
    return sorted(out, key=lambda m: (m["sequence"], m["source"], m["part"]))


class Table(dict[str, bytes]):
    """Keys to JSON, as the changelog holds them: what was written is copied in, and read back as a copy."""

    def apply(self, writes: dict[str, Any], deletes: list[str] = ()) -> None:
        self.update({key: orjson.dumps(value) for key, value in writes.items()})
        for key in deletes:
            self.pop(key, None)

    def lookup(self, key: str) -> Any:
        value = self.get(key)
        return None if value is None else orjson.loads(value)


def flush(ledger: CustomerLedger, table: Table) -> None:
    burned = ledger.burned_flush()
    if burned is not None:
        table.apply(dict([burned]))
    changes = ledger.take_changes()
    if changes is not None:
        table.apply(changes.writes)
        table.apply(dict([changes.meta]), changes.deletes)


def truth(orders: list[Any], partition: int) -> dict[str, int]:
    """Straight from the orders of the partition's customers, without the ledger."""
    mine = [o for o in orders if customer_partition(o[0], 2) == partition]
    watermark = max(o[1] for o in mine)
    oldest = watermark // 3600 * 3600 - CONFIG.horizon + 3600
    counts = {"customers": 0, "multi": 0, "repeat": 0, "single_first": 0}
    by_customer: dict[str, list[Any]] = {}
    for order in sorted(mine, key=lambda o: o[1]):
        by_customer.setdefault(order[0], []).append(order)
    for history in by_customer.values():
        # a gap over the horizon starts the customer afresh
        start = max((i for i in range(1, len(history)) if history[i][1] > history[i - 1][1] + CONFIG.horizon),
                    default=0)
        history = history[start:]
        inside = [o for o in history if o[1] // 3600 * 3600 >= oldest]
        counts["customers"] += bool(inside)
        counts["repeat"] += len(inside) >= 2
        last_by_category: dict[str, float] = {}
        for _, at, _, categories in history:
            for c in categories:
                last_by_category[c] = at
        counts["multi"] += sum(t // 3600 * 3600 >= oldest for t in last_by_category.values()) >= 2
        counts["single_first"] += len(history[0][3]) == 1 and history[0][1] // 3600 * 3600 >= oldest
    return counts


@pytest.mark.parametrize("seed", range(5))
def test_counts_equal_the_truth_from_the_orders(seed):
    orders = traffic(seed)
    for partition in range(2):
        ledger, table = CustomerLedger(partition, CONFIG, lambda k: None), Table()
        ledger.lookup = table.lookup
        for i, message in enumerate(messages_for(partition, orders)):
            assert ledger.apply(message)
            if i % 5 == 4:
                flush(ledger, table)
        totals = ledger.view().totals
        assert {k: totals[k] for k in ("customers", "multi", "repeat", "single_first")} == truth(orders, partition)


def test_a_message_applies_once():
    message = messages_for(0, traffic(1))[0]
    ledger = CustomerLedger(0, CONFIG, lambda k: None)
    assert ledger.apply(message)
    assert not ledger.apply(message)


@pytest.mark.parametrize("seed", range(30))
def test_a_crash_at_any_point_of_a_flush_changes_nothing(seed):
    rng = random.Random(seed)
    orders = traffic(seed)
    messages = messages_for(0, orders)
    expected = CustomerLedger(0, CONFIG, lambda k: None)
    for message in messages:
        expected.apply(message)

    table = Table()
    ledger = CustomerLedger(0, CONFIG, table.lookup)
    position = 0
    for _ in range(3):  # crash, restore, replay, several times
        crash_at = rng.randrange(position, len(messages))
        for i in range(position, crash_at):
            ledger.apply(messages[i])
            if rng.random() < 0.3:
                flush(ledger, table)
        # the crashed flush: a random part of its values reach the table, not its meta key; after a
        # restore, a flush writes values only once the meta key with the flush id it burned is durable
        burned = ledger.burned_flush()
        crashed_before_values = burned is not None and rng.random() < 0.5
        if burned is not None and not crashed_before_values:
            table.apply(dict([burned]))
        changes = ledger.take_changes()
        if changes is not None and not crashed_before_values:
            writes = list(changes.writes.items())
            table.apply(dict(rng.sample(writes, rng.randrange(len(writes) + 1))))
        ledger = CustomerLedger.restore(0, CONFIG, table.lookup)
        # the source replays from what was committed; the ledger skips what it applied
        position = 0
    for message in messages:
        ledger.apply(message)
    assert ledger.view() == expected.view()
    flush(ledger, table)
    assert CustomerLedger.restore(0, CONFIG, table.lookup).view() == expected.view()
