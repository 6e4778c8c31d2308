"""``python -m bench.growth``: how the worker's cost grows with basket size, catalogue and partitions,
and its memory with the dedup horizon x rate.

Each point changes one thing from the defaults of ``python -m bench`` (4
partitions, 200,004 products, the generator's baskets of 1-6 lines) and
measures, over the same number of seeded orders:

- ``basket``: every order has exactly N distinct lines (N = 1 ... 50, the
  worker's default ``CROSSSELL_MAX_BASKET``), products from the whole catalogue;
- ``catalogue``: 1,000 ... 1,000,000 distinct products (12 categories);
- ``partitions``: 1 ... 16 source (and pairs) partitions.

By default a point is the worker's own per-event Python in one process, as
``python -m bench.hotpath`` runs it (decode, apply, flush, pairs; no Kafka, no
Faust): CPU us per event, and the events/s one core would reach at that cost.
With ``--worker``, each point is also run through ``python -m streams worker``
on one embedded broker (its own topics with that many partitions, the orders
preloaded, one worker, measured through /metrics as ``python -m bench`` does):
events/s and CPU s per million events of the whole process.

``dedup``: memory against the order ids the worker keeps, which is rate x
``CROSSSELL_DEDUP_HORIZON_SECONDS`` in a steady state. For N ids (10,000 ...
1,000,000 by default) a fresh process applies N distinct orders to a ledger
whose horizon keeps them all, flushing as the worker does, and reports its
RSS growth; the fitted bytes per id give the model printed after the table.

Results: tables on stdout and ``bench/results/growth.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import hotpath, pipeline
from bench.load import make_events, order_maker, preload
from bench.procs import Children, children
from bench.report import MIN_TIMED_SECONDS, write_json
from streams.ops.admin import ensure_topics
from streams.ops.broker import EmbeddedBroker
from streams.ops.traffic import OrderMaker, TrafficShape
from streams.orders.config import window_config
from streams.orders.contract import Limits, decode_order
from streams.orders.ledger import PartitionLedger
from streams.settings import Settings

AXES = ("basket", "catalogue", "partitions", "dedup")
BASKETS = (1, 2, 5, 10, 20, 50)
CATALOGUES = (1_000, 10_000, 100_000, 1_000_000)
PARTITIONS = (1, 2, 4, 8, 16)
DEDUP_IDS = (10_000, 100_000, 1_000_000)
DEDUP_RATE = 1000.0  # orders per second of event time in the dedup points
CATEGORIES = 12
DEFAULT_PRODUCTS = 200_004
DEFAULT_PARTITIONS = 4
EVENT_TIME_SPAN = 600.0
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "growth.json"


def shape_for(products: int) -> TrafficShape:
    return TrafficShape(late_share=0.01, duplicate_share=0.005, invalid_share=0.0, categories=CATEGORIES,
                        products_per_category=max(1, round(products / CATEGORIES)))


def basket_orders(maker: OrderMaker, count: int, size: int, first_time: float, last_time: float) -> list[bytes]:
    """``count`` orders of exactly ``size`` distinct lines: the generator's primary line, then products
    drawn from the whole catalogue (by category weight, then product popularity)."""
    catalogue = maker.catalogue
    assert catalogue is not None
    rng = random.Random(size)
    step = (last_time - first_time) / max(1, count - 1)
    values = []
    for i in range(count):
        order = maker.order(first_time + i * step)
        items: list[dict[str, Any]] = order["items"][:1]  # type: ignore[index]
        chosen = {items[0]["product_id"]}
        while len(items) < size:
            product = catalogue.pick_product(rng, catalogue.pick_category(rng))
            if product.product_id not in chosen:
                chosen.add(product.product_id)
                items.append({"product_id": product.product_id, "category": product.category,
                              "unit_price": product.price, "quantity": 1})
        order["items"] = items
        values.append(orjson.dumps(order))
    return values


def points(axes: Sequence[str]) -> list[tuple[str, int]]:
    wanted = {"basket": BASKETS, "catalogue": CATALOGUES, "partitions": PARTITIONS}
    return [(axis, value) for axis in axes if axis in wanted for value in wanted[axis]]


def orders_for(axis: str, value: int, events: int, seed: int, now: float) -> tuple[list[bytes], int]:
    """The orders of one point and its partition count."""
    products = value if axis == "catalogue" else DEFAULT_PRODUCTS
    maker = order_maker(seed, shape_for(products))
    if axis == "basket":
        return basket_orders(maker, events, value, now - EVENT_TIME_SPAN, now), DEFAULT_PARTITIONS
    values = [v for _, v in make_events(maker, events, now - EVENT_TIME_SPAN, now)]
    return values, value if axis == "partitions" else DEFAULT_PARTITIONS


def run_hotpath(axis: str, value: int, events: int, seed: int) -> dict[str, Any]:
    now = time.time()
    values, partitions = orders_for(axis, value, events, seed, now)
    settings = Settings(partitions=partitions)
    gc.collect()
    cost = hotpath.measure(values, settings.flush_max_events, settings, now)
    return {"axis": axis, "value": value, "events": events, "partitions": partitions,
            "lines_per_order": _lines_per_order(values), **{k: round(v, 2) for k, v in cost.items()},
            "one_core_events_per_second": round(1e6 / cost["total_us"])}


def _lines_per_order(values: Sequence[bytes]) -> float:
    sample = values[:: max(1, len(values) // 1000)]
    return round(sum(len(orjson.loads(v)["items"]) for v in sample) / len(sample), 2)


def run_worker(kids: Children, broker_url: str, axis: str, value: int, events: int, seed: int, run_id: str,
               log_dir: Path, timeout: float) -> dict[str, Any]:
    now = time.time()
    values, partitions = orders_for(axis, value, events, seed, now)
    settings = pipeline.run_settings(broker_url, partitions, f"growth-{run_id}-{axis}-{value}")
    bootstrap = settings.bootstrap_servers()
    ensure_topics(bootstrap, settings)
    preload(bootstrap, settings.orders_topic, [(str(i).encode(), v) for i, v in enumerate(values)])
    workers = pipeline.start_workers(kids, 1, name=f"{axis}-{value}", settings=settings, data_dir=log_dir)
    try:
        throughput = pipeline.measure_throughput(workers, events, timeout, progress=False)
    finally:
        for worker in workers:
            kids.stop(worker.child)
    timed = throughput.events > 0 and throughput.seconds >= MIN_TIMED_SECONDS
    return {"worker_events_per_second": round(throughput.events_per_second) if timed else None,
            "worker_cpu_seconds_per_million": round(throughput.cpu_seconds_per_million, 1) if timed else None,
            "worker_span_seconds": round(throughput.seconds, 2),
            "worker_peak_rss_mb": round(max(throughput.peak_rss_mb))}


def dedup_child(ids: int, seed: int) -> None:
    """In a fresh process: RSS growth from holding ``ids`` order ids (one ledger, horizon keeping all)."""
    horizon = 10 * 24 * 3600.0
    settings = Settings(partitions=1, dedup_horizon_seconds=horizon)
    ledger = PartitionLedger(0, window_config(settings))
    limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
    maker = order_maker(seed, TrafficShape(categories=CATEGORIES, products_per_category=1000))
    # Event times advance through the run at DEDUP_RATE orders/s: a chunk that started the span
    # again would be late for windows the previous chunks closed, and never reach the dedup ids.
    now = time.time()
    first_time = now - ids / DEDUP_RATE
    chunk = settings.flush_max_events
    gc.collect()
    before = _rss_kb()
    for first in range(0, ids, chunk):
        count = min(chunk, ids - first)
        start = first_time + first / DEDUP_RATE
        values = [v for _, v in make_events(maker, count, start, start + (count - 1) / DEDUP_RATE)]
        for offset, value in enumerate(values, first):
            ledger.apply(offset, decode_order(value, limits), now + 1.0)
        ledger.take_changes()  # its pair deltas are dropped here, as the worker drops them once sent
    del values
    gc.collect()
    after = _rss_kb()
    print(orjson.dumps({"ids": ids, "kept": len(ledger.seen),
                        "rss_before_kb": before, "rss_after_kb": after}).decode())


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_dedup(counts: Sequence[int], seed: int) -> list[dict[str, Any]]:
    rows = []
    for ids in counts:
        output = subprocess.run([sys.executable, "-m", "bench.growth", "--dedup-child", str(ids), "--seed", str(seed)],
                                check=True, capture_output=True, text=True).stdout
        row = orjson.loads(output.strip().splitlines()[-1])
        row["rss_growth_mb"] = round((row["rss_after_kb"] - row["rss_before_kb"]) / 1024, 1)
        rows.append(row)
        _note(f"dedup: {ids:,} ids -> +{row['rss_growth_mb']} MB RSS")
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--axes", default=",".join(AXES), help=f"comma-separated subset of {','.join(AXES)}")
    parser.add_argument("--events", type=int, default=20_000, help="orders per point (default 20000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", action="store_true",
                        help="also run each point through python -m streams worker on the embedded broker")
    parser.add_argument("--dedup-ids", default=",".join(str(n) for n in DEDUP_IDS),
                        help="order ids held for the dedup axis (default 10000,100000,1000000)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one worker point may take")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--dedup-child", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dedup_child is not None:
        dedup_child(args.dedup_child, args.seed)
        return 0
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    if not axes or set(axes) - set(AXES) or args.events < 100:
        print(f"bench.growth: --axes must be a subset of {','.join(AXES)} and --events at least 100", file=sys.stderr)
        return 2
    rows = [run_hotpath(axis, value, args.events, args.seed) for axis, value in points(axes)]
    for row in rows:
        _note(f"{row['axis']}={row['value']}: {row['total_us']} us per event")
    if args.worker and rows:
        log_dir = Path(tempfile.mkdtemp(prefix="crosssell-growth-"))
        run_id = f"{time.strftime('%H%M%S')}-{os.getpid()}"
        with EmbeddedBroker() as broker, children(log_dir) as kids:
            for row in rows:
                row.update(run_worker(kids, broker.url, row["axis"], row["value"], args.events, args.seed, run_id,
                                      log_dir, args.timeout))
                _note(f"{row['axis']}={row['value']}: worker {row['worker_events_per_second']} events/s")
    dedup = run_dedup([int(n) for n in args.dedup_ids.split(",")], args.seed) if "dedup" in axes else []
    print()
    print(table(rows, args.worker))
    if dedup:
        print()
        print(dedup_table(dedup))
    document = {"events_per_point": args.events, "load_average": [round(x, 2) for x in os.getloadavg()],
                "points": rows, "dedup": dedup}
    if len(dedup) >= 2:
        per_id, fixed = dedup_model(dedup)
        document["dedup_model"] = {"bytes_per_id": round(per_id), "fixed_mb": round(fixed / 1e6, 1)}
    write_json(args.output, document)
    print(f"\nbench.growth: results written to {args.output}")
    return 0


def table(rows: Sequence[dict[str, Any]], worker: bool) -> str:
    header = (f"{'axis':<11} {'value':>9} {'lines':>6} {'decode':>7} {'apply':>7} {'flush':>7} {'pairs':>7} "
              f"{'total us':>9} {'1-core ev/s':>11}")
    if worker:
        header += f" {'worker ev/s':>11} {'CPU s/M':>8} {'RSS MB':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        line = (f"{r['axis']:<11} {r['value']:>9,} {r['lines_per_order']:>6} {r['decode_us']:>7} {r['apply_us']:>7} "
                f"{r['flush_us']:>7} {r['pairs_us']:>7} {r['total_us']:>9} {r['one_core_events_per_second']:>11,}")
        if worker:
            rate, cpu = r.get("worker_events_per_second"), r.get("worker_cpu_seconds_per_million")
            line += (f" {f'{rate:,}' if rate else 'untimed':>11} {cpu if cpu else '-':>8} "
                     f"{r.get('worker_peak_rss_mb', '-'):>7}")
        lines.append(line)
    return "\n".join(lines)


def dedup_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'order ids held':>14} {'RSS growth MB':>14}"]
    lines += [f"{r['ids']:>14,} {r['rss_growth_mb']:>14}" for r in rows]
    if len(rows) >= 2:
        per_id, fixed = dedup_model(rows)
        lines.append(f"model: RSS growth ~ {fixed / 1e6:.0f} MB + rate x CROSSSELL_DEDUP_HORIZON_SECONDS x "
                     f"{per_id:.0f} bytes (the slope between the smallest and largest points), e.g.")
        for rate, horizon in ((100, 3600), (1_000, 3600), (10_000, 600), (10_000, 3600)):
            ids = rate * horizon
            megabytes = (fixed + ids * per_id) / 1e6
            lines.append(f"  {rate:>6,}/s x {horizon:>5,} s = {ids:>10,} ids -> {megabytes:>7,.0f} MB")
    return "\n".join(lines)


def dedup_model(rows: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """(bytes per id, fixed bytes) of the line through the smallest and the largest point."""
    low, high = min(rows, key=lambda r: r["ids"]), max(rows, key=lambda r: r["ids"])
    per_id = (high["rss_growth_mb"] - low["rss_growth_mb"]) * 1024 * 1024 / (high["ids"] - low["ids"])
    return per_id, low["rss_growth_mb"] * 1024 * 1024 - per_id * low["ids"]


def _note(text: str) -> None:
    print(f"bench.growth: {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
