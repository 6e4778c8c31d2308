"""``python -m bench.hotpath``: the project's per-event Python, without Kafka or Faust.

Runs the steps of the worker's hot path in one process over the same seeded
orders as ``python -m bench`` and prints microseconds of CPU per event for
each: decode (``streams.orders.contract.decode_order``), apply
(``PartitionLedger.apply``), flush (``take_changes``, every
``--flush-every`` events, as the worker's flush does) and the pairs side
(``PairLedger.apply`` of the outbox messages those flushes produce, through
JSON as on the pairs topic, and the memory budget after each), with the orders spread over ``--partitions``
ledgers as the worker spreads them.

Use it to compare a change of the hot path with the code before it, in one
run or two runs close together: it measures CPU time, so it is less disturbed
by other load than the broker benchmark, but it is still a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from bench.load import make_events, order_maker
from streams.ops.traffic import TrafficShape
from streams.orders.config import window_config
from streams.orders.contract import Limits, Order, decode_order
from streams.orders.facts import order_facts
from streams.orders.hit_rate import PublishedLists, listed
from streams.orders.ledger import PartitionLedger
from streams.pairs.budget import PairMemoryBudget
from streams.pairs.ledger import PairLedger
from streams.settings import Settings, duration_label


def _cpu(step: Callable[[], Any]) -> tuple[float, Any]:
    started = time.process_time()
    result = step()
    return time.process_time() - started, result


def run(events: int, flush_every: int, seed: int, span: float, partitions: int,
        potential_capacity: int | None = None, hit_rate: bool = False) -> dict[str, float]:
    shape = TrafficShape(late_share=0.01, duplicate_share=0.005, invalid_share=0.0,
                         categories=12, products_per_category=16667)
    now = time.time()
    values = [value for _, value in make_events(order_maker(seed, shape), events, now - span, now)]
    settings = Settings(partitions=partitions) if potential_capacity is None else Settings(
        partitions=partitions, potential_capacity=potential_capacity)
    lists = published_lists(values, settings, now - span - 1) if hit_rate else None
    return measure(values, flush_every, settings, now, lists)


def published_lists(values: list[bytes], settings: Settings, computed_at: float) -> PublishedLists:
    """Lists of ten companions for the most frequent primary products, as many as the hit rate holds."""
    limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
    primaries = Counter(order_facts(order).primary_product for order in
                        (decode_order(value, limits) for value in values) if isinstance(order, Order))
    lists = PublishedLists(settings.hit_rate_products)
    for n, (product, _) in enumerate(primaries.most_common(settings.hit_rate_products)):
        companions = [(other, 0.05) for other, _ in primaries.most_common(n % 50 + 10)[-10:]]
        lists.publish(product, listed(computed_at, companions, {c: 2.0 for c, _ in companions}))
    return lists


def measure(values: list[bytes], flush_every: int, settings: Settings, now: float,
            lists: PublishedLists | None = None) -> dict[str, float]:
    """CPU us per event of each step over ``values`` (events produced up to ``now``), spread over
    ``settings.partitions`` ledgers; with ``lists``, orders are checked against them (the hit rate)."""
    events, partitions = len(values), settings.partitions
    limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
    ledgers = [PartitionLedger(p, window_config(settings)) for p in range(partitions)]
    for ledger in ledgers:
        ledger.lists = lists
    horizons = {duration_label(h): h for h in settings.pair_horizons}
    pair_ledgers = [PairLedger(q, horizons, settings.pair_slots) for q in range(partitions)]
    budget = PairMemoryBudget(settings.pair_memory_bytes)  # one worker owning every pairs partition
    produced_at = now + 1.0

    gc.collect()
    decode_s, decoded = _cpu(lambda: [decode_order(value, limits) for value in values])
    apply_s = flush_s = pairs_s = 0.0
    for first in range(0, events, flush_every):
        chunk = decoded[first:first + flush_every]
        started = time.process_time()
        # Orders spread over the source partitions as the orders topic spreads them (round robin here).
        for offset, order in enumerate(chunk, first):
            ledgers[offset % partitions].apply(offset // partitions, order, produced_at)
        apply_s += time.process_time() - started
        started = time.process_time()
        changes = [ledger.take_changes() for ledger in ledgers]
        flush_s += time.process_time() - started
        started = time.process_time()
        # Pair deltas only: detection counts (and customer summaries) go to other topics.
        for message in (m for c in changes if c is not None for m in c.outbox if "kind" not in m):
            pair_ledger = pair_ledgers[message["partition"]]
            if pair_ledger.apply(orjson.loads(orjson.dumps(message))):
                budget.enforce(pair_ledgers, changed=pair_ledger)
        pairs_s += time.process_time() - started
    per_event = 1e6 / events
    return {"decode_us": decode_s * per_event, "apply_us": apply_s * per_event,
            "flush_us": flush_s * per_event, "pairs_us": pairs_s * per_event,
            "total_us": (decode_s + apply_s + flush_s + pairs_s) * per_event}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="orders (default 50000)")
    parser.add_argument("--flush-every", type=int, default=Settings().flush_max_events,
                        help="events between two flushes (default: the worker's flush_max_events)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4, help="source and pairs partitions (default 4)")
    parser.add_argument("--event-time-span", type=float, default=600.0,
                        help="seconds of event time the orders cover (default 600, as python -m bench)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best of each step is shown (default 3)")
    parser.add_argument("--potential-capacity", default=None, metavar="N[,N...]",
                        help="CROSSSELL_POTENTIAL_CAPACITY for the runs (default: the setting's default); several, "
                             "e.g. 0,32, are run in turns in one sitting and shown side by side")
    parser.add_argument("--hit-rate", action="store_true",
                        help="also run with published lists for the most frequent primary products (as many as "
                             "CROSSSELL_HIT_RATE_PRODUCTS), in turns with the runs without")
    args = parser.parse_args(argv)
    capacities: list[int | None] = [None] if args.potential_capacity is None else [
        int(c) for c in args.potential_capacity.split(",")]
    variants = [(c, h) for c in capacities for h in ((False, True) if args.hit_rate else (False,))]
    runs: dict[tuple[int | None, bool], list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.repeat):  # in turns, so that a noisy moment of the machine hits every variant
        for capacity, hit_rate in variants:
            runs[(capacity, hit_rate)].append(run(args.events, args.flush_every, args.seed, args.event_time_span,
                                                  args.partitions, capacity, hit_rate))
    for (capacity, hit_rate), measured in runs.items():
        best = {name: min(r[name] for r in measured) for name in measured[0]}
        shown = ("" if capacity is None else f", potential capacity {capacity}") + (
            ", hit rate on" if hit_rate else "")
        print(f"{args.events} events, flush every {args.flush_every}{shown}, best of {args.repeat}: "
              "CPU us per event")
        for name, value in best.items():
            print(f"  {name.removesuffix('_us'):<7} {value:7.2f}")


if __name__ == "__main__":
    main()
