"""A customer partition's ledger: applied once, rolling counts, exact after a crash at any point of a flush."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest

from streams.customers.ledger import BUCKET, CUSTOMER, CustomerConfig, CustomerLedger, expired
from streams.customers.outbox import customer_messages, customer_partition

DAY = 86400.0
CONFIG = CustomerConfig(horizon=30 * DAY, bucket=3600.0, max_categories=4)
# The traffic spans 50 days: ten horizons of 5 days, expired 7 stored customers at a time.
EXPIRING = CustomerConfig(horizon=5 * DAY, bucket=3600.0, max_categories=4, expiry_keys=7)
CATEGORIES = ["laptops", "bags", "tv", "cables", "pens"]


def traffic(seed: int, orders: int = 400) -> list[tuple[str, float, str, tuple[str, ...]]]:
    rng = random.Random(seed)
    out = []
    for i in range(orders):
        customer = f"c-{rng.randrange(60)}"
        categories = tuple(sorted(set(rng.sample(CATEGORIES, rng.choice([1, 1, 2])))))
        out.append((customer, i * 3 * 3600.0 + rng.random(), categories[0], categories))
    return out


def messages_for(partition: int, orders: list[Any], sources: int = 3, per_flush: int | None = None,
                 config: CustomerConfig = CONFIG) -> list[dict[str, Any]]:
    """What the orders partitions send: orders dealt to sources, each source flushing every few orders.

    The sources lag one another by up to a flush: less than a horizon, which the
    gap rule (and so expiry) needs to be exact (streams/customers/ledger.py).
    """
    if per_flush is None:
        per_flush = 17 if config.horizon >= 30 * DAY else 5
    out = []
    for source in range(sources):
        mine = orders[source::sources]
        for sequence, start in enumerate(range(0, len(mine), per_flush), start=1):
            out.extend(m for m in customer_messages(source, sequence, mine[start:start + per_flush], 2,
                                                    config.horizon, config.max_categories, 2_000)
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

    def scan(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any]]:
        keys = sorted(k for k in self if k.startswith(prefix) and (after is None or k > after))
        return [(k, self.lookup(k)) for k in keys[:limit]]

    def keys_of(self, kind: str) -> set[str]:
        return {k for k in self if k.split("/")[1] == kind}


def flush(ledger: CustomerLedger, table: Table) -> None:
    burned = ledger.burned_flush()
    if burned is not None:
        table.apply(dict([burned]))
    changes = ledger.take_changes()
    if changes is not None:
        table.apply(changes.writes)
        table.apply(dict([changes.meta]), changes.deletes)


def truth(orders: list[Any], partition: int, config: CustomerConfig = CONFIG) -> dict[str, int]:
    """Straight from the orders of the partition's customers, without the ledger."""
    mine = [o for o in orders if customer_partition(o[0], 2) == partition]
    watermark = max(o[1] for o in mine)
    oldest = watermark // 3600 * 3600 - config.horizon + 3600
    counts = {"customers": 0, "multi": 0, "repeat": 0, "single_first": 0}
    by_customer: dict[str, list[Any]] = {}
    for order in sorted(mine, key=lambda o: o[1]):
        by_customer.setdefault(order[0], []).append(order)
    for history in by_customer.values():
        # a gap over the horizon starts the customer afresh
        start = max((i for i in range(1, len(history)) if history[i][1] > history[i - 1][1] + config.horizon),
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


@pytest.mark.parametrize("config", [CONFIG, EXPIRING], ids=["30d", "5d-expiring"])
@pytest.mark.parametrize("seed", range(5))
def test_counts_equal_the_truth_from_the_orders(seed, config):
    orders = traffic(seed)
    for partition in range(2):
        table = Table()
        ledger = CustomerLedger(partition, config, table.lookup, table.scan)
        for i, message in enumerate(messages_for(partition, orders, config=config)):
            assert ledger.apply(message)
            if i % 5 == 4:
                flush(ledger, table)
        totals = ledger.view().totals
        assert {k: totals[k] for k in ("customers", "multi", "repeat", "single_first")} == \
            truth(orders, partition, config)


def lagging_messages(partition: int, orders: list[Any], per_flush: tuple[int, ...],
                     config: CustomerConfig) -> list[dict[str, Any]]:
    """Orders dealt to one source per entry of ``per_flush``, each flushing after that many of its orders.

    A flush reaches the customer partition when its last order happens, so a
    source that flushes seldom delivers its orders late, behind those of the others.
    """
    sources = len(per_flush)
    out: list[tuple[float, dict[str, Any]]] = []
    for source, size in enumerate(per_flush):
        mine = orders[source::sources]
        for sequence, start in enumerate(range(0, len(mine), size), start=1):
            chunk = mine[start:start + size]
            sent = customer_messages(source, sequence, chunk, 2, config.horizon, config.max_categories, 2_000)
            out.extend((max(o[1] for o in chunk), m) for m in sent if m["partition"] == partition)
    return [m for _, m in sorted(out, key=lambda am: (am[0], am[1]["source"], am[1]["part"]))]


@pytest.mark.parametrize("seed", range(20))
def test_counts_stay_exact_when_an_order_bridging_a_gap_arrives_after_orders_beyond_it(seed):
    """A source lagging by up to 4.9 days (less than the 5-day horizon): orders arrive far out of event-time order.

    An order falling into a gap of more than the horizon joins the episodes on
    both sides; the customer must count as if every order had arrived in
    event-time order (before episodes were kept, the older side was gone once
    an order beyond the gap had arrived).
    """
    orders = traffic(seed, orders=200)
    for partition in range(2):
        table = Table()
        ledger = CustomerLedger(partition, EXPIRING, table.lookup, table.scan)
        for i, message in enumerate(lagging_messages(partition, orders, (1, 13, 3), EXPIRING)):
            assert ledger.apply(message)
            if i % 5 == 4:
                flush(ledger, table)
        flush(ledger, table)
        totals = ledger.view().totals
        assert {k: totals[k] for k in ("customers", "multi", "repeat", "single_first")} == \
            truth(orders, partition, EXPIRING)


@pytest.mark.parametrize(("last_at", "horizon", "oldest", "expires"), [
    # counted in no view and more than a horizon before the oldest bucket: any order to come starts afresh
    (0.0, 10.0, 11.0, True),
    # exactly a horizon before the oldest bucket: an order in that bucket would still merge with it
    (1.0, 10.0, 11.0, False),
    # before the oldest bucket (counted in no view) but less than a horizon: a late order may merge with it
    (5.0, 10.0, 11.0, False),
    # inside the horizon
    (11.0, 10.0, 11.0, False),
    (50.0, 10.0, 11.0, False),
])
def test_a_customer_expires_once_no_order_to_come_can_merge_with_it(last_at, horizon, oldest, expires):
    assert expired(last_at, oldest, horizon) is expires


@pytest.mark.parametrize("seed", range(3))
def test_expiry_deletes_past_customers_in_slices_and_bounds_the_buckets(seed):
    orders = traffic(seed)
    table = Table()
    ledger = CustomerLedger(0, EXPIRING, table.lookup, table.scan)
    without = Table()
    keeping = CustomerLedger(0, EXPIRING, without.lookup)  # no scan: never expires
    slices = []
    for message in messages_for(0, orders, config=EXPIRING):
        ledger.apply(message)
        keeping.apply(message)
        before = ledger.customers_expired
        flush(ledger, table)
        flush(keeping, without)
        slices.append(ledger.customers_expired - before)
    assert ledger.view() == keeping.view()
    assert 0 < max(slices) <= EXPIRING.expiry_keys  # deletes happened, never more than a slice per flush
    oldest = ledger.oldest_bucket()
    assert oldest is not None
    stored = {k: ledger._stored_state(table.lookup(k))
              for k in table.keys_of(CUSTOMER)}
    assert len(stored) < len(without.keys_of(CUSTOMER))
    # a few more flushes with nothing new: one full pass, and every expired customer is gone
    for _ in range(len(stored) // EXPIRING.expiry_keys + 2):
        flush(ledger, table)
    left = {k: ledger._stored_state(table.lookup(k))
            for k in table.keys_of(CUSTOMER)}
    assert left and all(not expired(s.last_at, oldest, EXPIRING.horizon) for s in left.values() if s is not None)
    # the bucket histograms stay within the horizon, in memory and in the table
    buckets = EXPIRING.horizon / EXPIRING.bucket
    assert len(ledger.histograms) <= buckets
    assert len(table.keys_of(BUCKET)) <= buckets
    assert all(start >= oldest for start in ledger.histograms)
    assert CustomerLedger.restore(0, EXPIRING, table.lookup).view() == keeping.view()


def test_a_message_applies_once():
    message = messages_for(0, traffic(1))[0]
    ledger = CustomerLedger(0, CONFIG, lambda k: None)
    assert ledger.apply(message)
    assert not ledger.apply(message)


# The broker fails a flush (the worker goes on): its burned meta key, some of its values, its meta key
# (refused, or stored with the answer lost), or its deletions.
FAIL_CHANCE = 0.3


class Stores:
    """The worker's local store (every write lands) and the changelog (only what the broker stored)."""

    def __init__(self) -> None:
        self.local = Table()
        self.changelog = Table()

    def write(self, writes: dict[str, Any], deletes: list[str] = (), landed: Any = lambda key: True) -> None:
        self.local.apply(writes, deletes)
        self.changelog.apply({k: v for k, v in writes.items() if landed(k)}, [k for k in deletes if landed(k)])

    def crashed(self) -> None:
        """The worker lost its local store: the new owner recovers it from the changelog."""
        self.local = Table(self.changelog)

    def ledger(self, config: CustomerConfig) -> CustomerLedger:
        return CustomerLedger.restore(0, config, self.local.lookup, self.local.scan)


def flush_or_fail(ledger: CustomerLedger, stores: Stores, rng: random.Random | None) -> str | None:
    """A flush as CustomerProcessor.flush makes it; with ``rng``, the broker may fail it (the kind it failed)."""

    def fails() -> bool:
        return rng is not None and rng.random() < FAIL_CHANCE

    def some(key: str) -> bool:
        return rng is not None and rng.random() < 0.5

    burned = ledger.burned_flush()
    if burned is not None:
        if fails():
            stores.write(dict([burned]), landed=some)
            ledger.give_back(burned, None)
            return "burned meta key"
        stores.write(dict([burned]))
    changes = ledger.take_changes()
    if changes is None:
        return None
    if fails():
        if rng is not None and rng.random() < 0.5:
            stores.write(changes.writes, landed=some)
            kind = "some values stored"
        else:  # every value durable, then the meta key refused or stored with its answer lost
            stores.write(changes.writes)
            stores.write(dict([changes.meta]), landed=some)
            kind = "meta key"
        ledger.give_back(burned, changes)
        return kind
    stores.write(changes.writes)
    stores.write(dict([changes.meta]))
    if changes.deletes and fails():
        stores.write({}, changes.deletes, landed=some)
        ledger.carry_deletes(changes)
        return "deletions"
    stores.write({}, changes.deletes)
    return None


@pytest.mark.parametrize("failures", [False, True], ids=["crashes", "crashes and failed flushes"])
@pytest.mark.parametrize("config", [CONFIG, EXPIRING], ids=["30d", "5d-expiring"])
@pytest.mark.parametrize("seed", range(30))
def test_a_crash_at_any_point_of_a_flush_changes_nothing(seed, config, failures):
    """Crashes at any point of a flush, and with ``failures`` flushes the broker fails (given back as the
    worker does), give exactly the counts and customers of one clean run."""
    rng = random.Random(seed)
    orders = traffic(seed)
    messages = messages_for(0, orders, config=config)
    expected = CustomerLedger(0, config, lambda k: None)
    for message in messages:
        expected.apply(message)

    stores = Stores()
    ledger = CustomerLedger(0, config, stores.local.lookup, stores.local.scan)
    failed: Counter[str] = Counter()
    position = 0
    for _ in range(6 if failures else 3):  # crash, restore, replay, several times
        crash_at = rng.randrange(position, len(messages))
        for i in range(position, crash_at):
            ledger.apply(messages[i])
            if rng.random() < (0.5 if failures else 0.3):
                kind = flush_or_fail(ledger, stores, rng if failures else None)
                if kind is not None:
                    failed[kind] += 1
        # the crashed flush: a random part of its values reach the changelog, not its meta key; or all of
        # them and the meta key, and a random part of its deletions (expired buckets and customers).
        # After a restore or a failed flush, a flush writes values only once the meta key with the flush
        # id it burned or aborted is durable.
        burned = ledger.burned_flush()
        crashed_before_values = burned is not None and rng.random() < 0.5
        if burned is not None and not crashed_before_values:
            stores.write(dict([burned]))
        changes = ledger.take_changes()
        if changes is not None and not crashed_before_values:
            if rng.random() < 0.5:
                writes = list(changes.writes.items())
                stores.write(dict(rng.sample(writes, rng.randrange(len(writes) + 1))))
            else:
                stores.write(changes.writes)
                stores.write(dict([changes.meta]),
                             rng.sample(changes.deletes, rng.randrange(len(changes.deletes) + 1)))
        stores.crashed()
        ledger = stores.ledger(config)
        # the source replays from what was committed; the ledger skips what it applied
        position = 0
    assert not failures or failed["some values stored"] + failed["meta key"] >= 1, failed
    for message in messages:
        ledger.apply(message)
    assert ledger.view() == expected.view()
    flush_or_fail(ledger, stores, None)
    stores.crashed()
    restored = stores.ledger(config)
    assert restored.view() == expected.view()
    oldest = expected.oldest_bucket()
    assert oldest is not None
    for customer, (_, state) in expected.touched.items():
        if state is not None and not expired(state.last_at, oldest, config.horizon):
            assert restored.state(customer) == state, customer
