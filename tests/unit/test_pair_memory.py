"""The pair state stays within its documented bound whatever the catalogue.

200,000 distinct products over seven days of event time go through the same
path as in the worker (per-flush accumulators, outbox messages, pair ledgers of
every pairs partition). The bound (README, "Memory"): per pairs partition and
horizon at most ``pair_slots`` buckets, each with at most
``pair_product_capacity`` products and ``pair_capacity`` pairs, about 300 bytes
per entry.
"""

from __future__ import annotations

import random
import tracemalloc

from streams.orders.windows import window_start
from streams.pairs.basket import PairAccumulator
from streams.pairs.ledger import PairLedger
from streams.pairs.outbox import outbox_messages
from streams.settings import Settings, duration_label

PRODUCTS = 200_000
ORDERS = 67_000
BYTES_PER_ENTRY = 300  # documented in the README


def test_pair_state_of_200000_products_stays_within_the_documented_bound() -> None:
    settings = Settings()
    horizons = {duration_label(h): h for h in settings.pair_horizons}
    partitions = settings.partitions
    rng = random.Random(3)
    start = 1_790_000_000.0
    span = max(horizons.values())
    tracemalloc.start()
    ledgers = [PairLedger(q, horizons, settings.pair_slots, settings.pair_product_capacity, settings.pair_capacity)
               for q in range(partitions)]
    seen: set[str] = set()
    sequence = 0
    batches: dict[tuple[str, float], PairAccumulator] = {}
    for n in range(ORDERS):
        t = start + span * n / ORDERS
        basket = {f"p-{(n * 3 + k) % PRODUCTS:06d}" for k in range(rng.randint(3, 5))}
        seen |= basket
        for label, seconds in horizons.items():
            key = (label, window_start(t, seconds / settings.pair_slots))
            batches.setdefault(key, PairAccumulator(settings.max_basket)).add_order(basket)
        if n % 1000 == 999:  # one flush
            sequence += 1
            for message in outbox_messages(0, sequence, batches, partitions):
                ledgers[message["partition"]].apply(message)
            for ledger in ledgers:
                ledger.take_changes()  # expires buckets past the horizon
            batches = {}
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert len(seen) == PRODUCTS
    entries = 0
    for ledger in ledgers:
        for label in horizons:
            assert len([1 for (h, _) in ledger.buckets if h == label]) <= settings.pair_slots
        for bucket in ledger.buckets.values():
            assert len(bucket.products) <= settings.pair_product_capacity
            assert len(bucket.pairs) <= settings.pair_capacity
            entries += len(bucket.products) + len(bucket.pairs)
    bound_entries = partitions * len(horizons) * settings.pair_slots * (
        settings.pair_product_capacity + settings.pair_capacity)
    assert entries <= bound_entries
    assert used <= bound_entries * BYTES_PER_ENTRY, f"{used / 1e6:.0f} MB for {entries} entries"
