"""The pair state stays within its memory budget whatever the catalogue.

200,000 distinct products over seven days of event time go through the same
path as in the worker (per-flush accumulators, outbox messages, the pair
ledgers of every pairs partition, one worker's memory budget after each
message, and the changelog table's copy of every bucket as the flush writes
it). Exact counting would take about twice the default budget
(CROSSSELL_PAIR_MEMORY_MB), so the budget has to cut; at every flush the
ledgers and the table's copy (bases and logs), as tracemalloc measures them,
take at most the budget (README: memory bound).
"""

from __future__ import annotations

import random
import tracemalloc

import orjson

from streams.orders.windows import window_start
from streams.pairs.basket import PairAccumulator
from streams.pairs.budget import PairMemoryBudget
from streams.pairs.ledger import PairLedger
from streams.pairs.outbox import outbox_messages
from streams.settings import Settings, duration_label

PRODUCTS = 200_000
ORDERS = 67_000


def test_pair_state_of_200000_products_stays_within_the_memory_budget() -> None:
    settings = Settings()
    horizons = {duration_label(h): h for h in settings.pair_horizons}
    partitions = settings.partitions
    rng = random.Random(3)
    start = 1_790_000_000.0
    span = max(horizons.values())
    # Every order has at least three products: p-(3n), p-(3n+1), p-(3n+2) cover the catalogue.
    assert len({(n * 3 + k) % PRODUCTS for n in range(ORDERS) for k in range(3)}) == PRODUCTS
    tracemalloc.start()
    ledgers = [PairLedger(q, horizons, settings.pair_slots) for q in range(partitions)]
    budget = PairMemoryBudget(settings.pair_memory_bytes)
    table: dict[str, bytes] = {}  # the changelog table keeps the JSON of every key it holds
    sequence = 0
    batches: dict[tuple[str, float], PairAccumulator] = {}
    largest = 0
    for n in range(ORDERS):
        t = start + span * n / ORDERS
        basket = {f"p-{(n * 3 + k) % PRODUCTS:06d}" for k in range(rng.randint(3, 5))}
        for label, seconds in horizons.items():
            key = (label, window_start(t, seconds / settings.pair_slots))
            batches.setdefault(key, PairAccumulator(settings.max_basket)).add_order(basket)
        if n % 1000 == 999:  # one flush
            sequence += 1
            for message in outbox_messages(0, sequence, batches, partitions):
                # Through JSON, as from the pairs topic: the ledgers hold strings of their own.
                if ledgers[message["partition"]].apply(orjson.loads(orjson.dumps(message))):
                    budget.enforce(ledgers)
            batches = {}
            for ledger in ledgers:
                writes, deletes = ledger.take_changes()  # also expires buckets past the horizon
                # Copied: tracemalloc counts orjson's output at the size of its buffer, several times
                # its length, though only the length is ever resident.
                table.update((key, bytes(bytearray(orjson.dumps(value)))) for key, value in writes.items())
                for key in deletes:
                    table.pop(key, None)
            del writes
            largest = max(largest, tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()

    assert budget.usage.cuts > 0, "exact counting fitted: the test no longer exercises the budget"
    for ledger in ledgers:
        for label in horizons:
            assert len([1 for (h, _) in ledger.buckets if h == label]) <= settings.pair_slots + 1
    assert largest <= settings.pair_memory_bytes, f"{largest / 1e6:.0f} MB measured, {budget.usage}"
