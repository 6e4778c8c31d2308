"""``python -m bench.scrape``: CPU per /metrics answer, prometheus_client's text format next to ours.

Builds the registry a worker serves (``streams.runtime.app.metrics_registry``:
the cross-sell collector over a real ``OrderProcessor`` snapshot and a real
``Recommender``, the flush-failure collector, and the process, gc and platform
collectors) on the state of ``--orders`` applied orders (the seeded orders of
``python -m bench``, spread over ``--partitions`` ledgers and pair ledgers as
in ``python -m bench.hotpath``), then answers /metrics ``--scrapes`` times with
each renderer in turns: ``prometheus_client.generate_latest`` and
``streams.runtime.exposition.TextExposition``. Before each answer
``--orders-between`` more orders are applied and flushed, as a worker applies
orders between two scrapes of the latency benchmark (20 a second), so every
answer reads a state no answer read before. It prints CPU milliseconds per
answer (the body, collectors included, as the /metrics page spends them), and
checks that both renderers give the same bytes for the same state.

It measures CPU time in one process, so it is less disturbed by other load
than the broker benchmark; still, compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from bench.load import make_events, order_maker
from streams.ops.traffic import TrafficShape
from streams.orders.contract import Limits, decode_order
from streams.runtime.app import Pipeline, metrics_registry
from streams.runtime.processors import OrderProcessor, PairProcessor, Recommender
from streams.settings import Settings


class _EmptyTable:
    """A table with nothing to restore from."""

    def items_of_partition(self, partition: int) -> list[tuple[bytes, bytes]]:
        return []


class WorkerState:
    """A worker's ledgers without Kafka or Faust: orders are applied and flushed in one process."""

    def __init__(self, settings: Settings, orders: Iterator[bytes]) -> None:
        self.settings = settings
        self.orders = orders
        self.limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
        # Only the ledgers and the snapshot are used: no table, topics or producer.
        self.processor = OrderProcessor(settings, cast(Any, _EmptyTable()), cast(Any, None), cast(Any, None))
        self.pairs = PairProcessor(settings, cast(Any, _EmptyTable()))
        partitions = set(range(settings.partitions))
        self.processor.restore(partitions)
        self.pairs.restore(partitions)
        self.recommender = Recommender(settings, self.pairs, {})
        # A worker ranks the top pairs in a task of its own every 10 s, not in a scrape; outside an event
        # loop a scrape would rank them itself. Ranked once, at the first answer.
        self.recommender.VIEW_MAX_AGE = 1e9
        self.applied = 0

    def apply(self, count: int) -> None:
        """Applies ``count`` more orders round robin over the partitions, then flushes as the worker does."""
        ledgers = self.processor.ledgers
        partitions = self.settings.partitions
        for _ in range(count):
            value = next(self.orders)
            order = decode_order(value, self.limits)
            offset = self.applied
            ledgers[offset % partitions].apply(offset // partitions, order, time.time())
            self.applied += 1
        for ledger in list(ledgers.values()):
            changes = ledger.take_changes()
            if changes is None:
                continue
            for message in changes.outbox:
                if "kind" in message:
                    continue
                pair_ledger = self.pairs.ledgers[message["partition"]]
                if pair_ledger.apply(orjson.loads(orjson.dumps(message))):
                    self.pairs.budget.enforce(self.pairs.ledgers.values(), changed=pair_ledger)

    def registry(self) -> CollectorRegistry:
        """The registry the worker serves on /metrics (no app: the collectors do not use it)."""
        return metrics_registry(self.settings, Pipeline(cast(Any, None), self.processor, self.pairs, self.recommender))


Renderer = Callable[[CollectorRegistry], bytes]
RENDERERS = ("generate_latest", "exposition")


def renderers(chosen: str) -> dict[str, Renderer]:
    """The renderers to time: prometheus_client's, ours (imported only then: the command also runs on
    trees without it, to time the code before it), or both."""
    found: dict[str, Renderer] = {}
    if chosen in ("both", "generate_latest"):
        found["generate_latest"] = generate_latest
    if chosen in ("both", "exposition"):
        from streams.runtime.exposition import TextExposition
        found["exposition"] = TextExposition().render
    return found


def run(orders: int, between: int, scrapes: int, partitions: int, seed: int, span: float,
        chosen: str = "both") -> dict[str, float]:
    """CPU ms per answer of each renderer, in turns, each answer after ``between`` more orders; with both,
    each answer is compared with the other renderer's for the same state (untimed), and must be equal."""
    shape = TrafficShape(late_share=0.01, duplicate_share=0.005, invalid_share=0.0,
                         categories=12, products_per_category=16667)
    timed = renderers(chosen)
    total = orders + between * scrapes * len(timed)
    now = time.time()
    # The state's event times end now, as in python -m bench (the views are anchored at the newest).
    values = [value for _, value in make_events(order_maker(seed, shape), total, now - span, now)]
    state = WorkerState(Settings(partitions=partitions), iter(values))
    for first in range(0, orders, 5000):
        state.apply(min(5000, orders - first))
    registry = state.registry()
    spent = dict.fromkeys(timed, 0.0)
    lines = 0
    gc.collect()
    for _ in range(scrapes):
        for name, render in timed.items():
            state.apply(between)  # every timed answer reads a state no answer has read
            started = time.process_time()
            body = render(registry)
            spent[name] += time.process_time() - started
            lines = body.count(b"\n")
            for other_name, other in timed.items():
                if other_name != name:
                    _same(_steady(body), _steady(other(registry)), name, other_name)
    return {**{f"{name}_ms": 1000 * seconds / scrapes for name, seconds in spent.items()}, "lines": lines}


def _same(body: bytes, other: bytes, name: str, other_name: str) -> None:
    if body != other:
        lines, other_lines = body.split(b"\n"), other.split(b"\n")
        differ = next(n for n, (a, b) in enumerate(zip(lines, other_lines, strict=False)) if a != b)
        raise AssertionError(f"{name} and {other_name} gave different bytes for the same state; the first "
                             f"different line: {lines[differ]!r} against {other_lines[differ]!r}")


def _steady(body: bytes) -> bytes:
    """The body less the lines that change between two answers of one state: CPU seconds, memory, gc counts."""
    return b"\n".join(line for line in body.split(b"\n")
                      if not line.startswith((b"process_", b"python_gc_")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000, help="orders applied before the scrapes (default "
                        "100000)")
    parser.add_argument("--orders-between", type=int, default=500, help="orders applied before each answer "
                        "(default 500: 10,000 orders/s at 20 scrapes/s)")
    parser.add_argument("--scrapes", type=int, default=200, help="answers per renderer (default 200)")
    parser.add_argument("--renderer", choices=("both", *RENDERERS), default="both",
                        help="what answers /metrics (default both, in turns)")
    parser.add_argument("--partitions", type=int, default=4, help="orders and pairs partitions (default 4)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--event-time-span", type=float, default=600.0,
                        help="seconds of event time the orders cover (default 600, as python -m bench)")
    args = parser.parse_args(argv)
    result = run(args.orders, args.orders_between, args.scrapes, args.partitions, args.seed, args.event_time_span,
                 args.renderer)
    print(f"{args.orders} orders, {args.orders_between} more before each answer, {args.scrapes} answers each, "
          f"{int(result['lines'])} lines per answer: CPU ms per /metrics answer")
    for name in RENDERERS:
        if f"{name}_ms" in result:
            print(f"  {name:<16} {result[f'{name}_ms']:7.3f}")
    if len(result) == 3:
        print(f"  ratio            {result['generate_latest_ms'] / result['exposition_ms']:7.2f}")


if __name__ == "__main__":
    main()
