"""``python -m bench.customers``: what customer-level state costs, in throughput, memory and disk.

Two parts, in one run:

1. **Throughput, customer state on next to off.** One embedded broker; the same
   seeded orders (returning customers: the generator's customer model) are
   sent to two topics; one worker (``python -m streams worker``) reads each from
   offset 0, first with ``CROSSSELL_CUSTOMERS=false``, then with it on. Events/s
   and CPU seconds per million events from the worker's /metrics (as
   ``python -m bench`` measures contender 4), and peak RSS. With the state on,
   the span ends when the orders are counted; the customers agent then has at
   most a flush or two of messages left.
2. **State size.** For each count of distinct customers (default 1 million and
   5 million), a fresh process applies one order per customer through the
   customer ledger (streams/customers/ledger.py) to a RocksDB database opened
   with the worker's options (streams/runtime/disk_store.py), flushing every
   5,000 customers as the worker does; it reports peak RSS (VmHWM) and the
   database's size on disk. No broker: this is the state's own memory model.

``--expiry`` runs only this: **state over several horizons, with and without
expiry.** Distinct customers, one order each, arrive in event-time order over
``--horizons`` horizons (30 days each) through one ledger on RocksDB, flushing
every ``--customers-per-flush``; once with expiry (CROSSSELL_CUSTOMER_EXPIRY_KEYS's
default), once without. Reports the customer keys in the database and its size
on disk at the end of each horizon.

Prints a table; writes JSON to bench/results/customers.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import pipeline
from bench.load import make_events, order_maker, preload
from bench.procs import children, peak_rss_mb, python_module
from bench.report import machine, write_json
from streams.ops.admin import ensure_topics
from streams.ops.broker import EmbeddedBroker
from streams.ops.traffic import TrafficShape
from streams.settings import Settings

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "customers.json"
FLUSH_CUSTOMERS = 5000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.customers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="orders per throughput run (default 100000)")
    parser.add_argument("--customers", default="1000000,5000000",
                        help="distinct customers of each state-size run, comma-separated (default 1000000,5000000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--cache-mb", type=int, default=Settings().customer_cache_mb,
                        help="CROSSSELL_CUSTOMER_CACHE_MB of the state-size runs (per partition)")
    parser.add_argument("--smoke", action="store_true", help="5,000 events and 20,000 customers: checks it runs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--expiry", action="store_true",
                        help="only the state over several horizons, with and without expiry")
    parser.add_argument("--expiry-customers", type=int, default=200_000,
                        help="distinct customers of the --expiry runs (default 200000)")
    parser.add_argument("--horizons", type=int, default=5, help="horizons the --expiry runs span (default 5)")
    parser.add_argument("--customers-per-flush", type=int, default=200,
                        help="new customers per flush of the --expiry runs (default 200)")
    parser.add_argument("--state-only", type=int, default=None, help=argparse.SUPPRESS)  # the child of part 2
    parser.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def throughput(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Part 1: one worker over the same orders, customer state off, then on."""
    maker = order_maker(1, TrafficShape(customers=max(1000, args.events // 4), return_rate=0.5))
    now = time.time()
    events = make_events(maker, args.events, now - 600, now)
    results: dict[str, Any] = {}
    with EmbeddedBroker() as broker, children(log_dir) as kids:
        for mode in ("off", "on"):
            app_id = f"bench-customers-{mode}-{int(now)}"
            settings = pipeline.run_settings(broker.url, args.partitions, app_id)
            customers_topic = f"{app_id}.customers"
            ensure_topics(broker.bootstrap, Settings(**{**_fields(settings), "customers_topic": customers_topic}))
            preload(broker.bootstrap, settings.orders_topic, events)
            workers = pipeline.start_workers(
                kids, 1, name=f"worker-{mode}", settings=settings, data_dir=log_dir,
                extra_env={"CROSSSELL_CUSTOMERS": "true" if mode == "on" else "false",
                           "CROSSSELL_CUSTOMERS_TOPIC": customers_topic})
            print(f"bench: customer state {mode}: {args.events} orders", flush=True)
            measured = pipeline.measure_throughput(workers, args.events, timeout=120 + args.events / 200)
            results[mode] = {"events_per_second": round(measured.events_per_second),
                             "cpu_seconds_per_million": round(measured.cpu_seconds_per_million, 1),
                             "peak_rss_mb": round(measured.peak_rss_mb[0], 1)}
            for worker in workers:
                kids.stop(worker.child)
    off, on = results["off"]["events_per_second"], results["on"]["events_per_second"]
    # A run too short for a busy poll (--smoke) has no span to time: no ratio then.
    results["on_over_off"] = round(on / off, 3) if on and off else None
    return results


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.__dataclass_fields__}


def apply_and_flush(ledger: Any, db: Any, sequence: int, customers: dict[str, Any]) -> None:
    """One customers message through ``ledger``, then its flush written to the rocksdict ``db`` as the worker writes."""
    from streams.customers.outbox import KIND

    ledger.apply({"kind": KIND, "partition": 0, "source": 0, "sequence": sequence, "part": 0, "parts": 1,
                  "customers": customers})
    changes = ledger.take_changes()
    assert changes is not None
    for key, value in (*changes.writes.items(), changes.meta):
        db.put(key.encode(), orjson.dumps(value))
    for key in changes.deletes:
        db.delete(key.encode())


def state_size(customers: int, cache_mb: int, directory: Path) -> dict[str, Any]:
    """Part 2, in this process: ``customers`` distinct customers, one order each, through one ledger on RocksDB."""
    from faust.stores.rocksdb import RocksDBOptions

    from streams.customers.ledger import CustomerConfig, CustomerLedger
    from streams.customers.state import order_state
    from streams.runtime.disk_store import store_options

    db = RocksDBOptions(**store_options(cache_mb), use_rocksdict=True).open(directory / "customers-0.db")

    def lookup(key: str) -> Any:
        value = db.get(key.encode())
        return None if value is None else orjson.loads(value)

    ledger = CustomerLedger(0, CustomerConfig(), lookup)
    rng = random.Random(customers)
    categories = [f"category-{i}" for i in range(12)]
    started = time.monotonic()
    now = time.time()
    for sequence, first in enumerate(range(0, customers, FLUSH_CUSTOMERS), start=1):
        batch = {}
        for i in range(first, min(customers, first + FLUSH_CUSTOMERS)):
            category = rng.choice(categories)
            batch[f"customer-{i:09d}"] = order_state(now - rng.random() * 86400 * 29, category,
                                                     (category,)).to_json()
        apply_and_flush(ledger, db, sequence, batch)
    seconds = time.monotonic() - started
    db.flush()
    db.close()
    disk = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    view = ledger.view()
    return {"customers": customers, "counted": view.totals["customers"], "seconds": round(seconds, 1),
            "customers_per_second": round(customers / seconds),
            # VmHWM, not getrusage: ru_maxrss survives exec, so it would report the parent's peak.
            "peak_rss_mb": round(peak_rss_mb(os.getpid()), 1),
            "disk_mb": round(disk / 2**20, 1), "bytes_per_customer_on_disk": round(disk / customers, 1)}


def expiry_run(customers: int, horizons: int, per_flush: int, expiry_keys: int, cache_mb: int,
               directory: Path) -> dict[str, Any]:
    """``customers`` distinct customers over ``horizons`` horizons through one ledger on RocksDB; keys and disk."""
    from faust.stores.rocksdb import RocksDBOptions

    from streams.customers.ledger import CUSTOMER, CustomerConfig, CustomerLedger
    from streams.customers.state import order_state
    from streams.runtime.disk_store import keys_after, store_options

    db = RocksDBOptions(**store_options(cache_mb), use_rocksdict=True).open(directory / "customers-0.db")

    def lookup(key: str) -> Any:
        value = db.get(key.encode())
        return None if value is None else orjson.loads(value)

    def scan(prefix: str, after: str | None, limit: int) -> list[tuple[str, Any]]:
        return [(key, lookup(key)) for key in keys_after(db, prefix, after, limit)]

    def disk_mb() -> float:
        return round(sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 2**20, 1)

    config = CustomerConfig(expiry_keys=expiry_keys)
    ledger = CustomerLedger(0, config, lookup, scan)
    rng = random.Random(customers)
    categories = [f"category-{i}" for i in range(12)]
    span = horizons * config.horizon
    start = time.time() - span
    per_horizon = customers / horizons
    marks: list[dict[str, Any]] = []
    started = time.monotonic()
    for sequence, first in enumerate(range(0, customers, per_flush), start=1):
        batch = {}
        for i in range(first, min(customers, first + per_flush)):
            category = rng.choice(categories)
            batch[f"customer-{i:09d}"] = order_state(start + span * i / customers, category, (category,)).to_json()
        apply_and_flush(ledger, db, sequence, batch)
        done = min(customers, first + per_flush)
        if int(done // per_horizon) > len(marks) or done == customers:
            db.flush()
            prefix = f"0/{CUSTOMER}/".encode()
            keys = sum(1 for key in db.keys(from_key=prefix) if key.startswith(prefix))
            as_is = disk_mb()
            # Deleted keys leave the files at compaction, which RocksDB runs when it sees fit: compact
            # here to show what the live state takes, after noting the size as it was.
            db.compact_range(None, None)
            marks.append({"horizons": round(done / per_horizon, 2), "customers_seen": done, "customer_keys": keys,
                          "disk_mb": as_is, "compacted_disk_mb": disk_mb()})
    seconds = time.monotonic() - started
    db.close()
    return {"expiry_keys": expiry_keys, "customers": customers, "horizons": horizons, "customers_per_flush": per_flush,
            "expired": ledger.customers_expired, "seconds": round(seconds, 1),
            "counted": ledger.view().totals["customers"], "marks": marks}


def run_expiry(args: argparse.Namespace) -> int:
    from streams.customers.ledger import CustomerConfig

    runs = []
    for expiry_keys in (CustomerConfig().expiry_keys, 0):
        directory = Path(tempfile.mkdtemp(prefix="crosssell-bench-expiry-"))
        try:
            print(f"bench: {args.expiry_customers} customers over {args.horizons} horizons, "
                  f"{args.customers_per_flush} per flush, expiry keys per flush {expiry_keys}", flush=True)
            runs.append(expiry_run(args.expiry_customers, args.horizons, args.customers_per_flush, expiry_keys,
                                   args.cache_mb, directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    on, off = runs
    print("\n| horizons elapsed | customers seen | customer keys, expiry on | off | disk, on | off "
          "| compacted, on | off |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a, b in zip(on["marks"], off["marks"], strict=True):
        print(f"| {a['horizons']} | {a['customers_seen']:,} | {a['customer_keys']:,} | {b['customer_keys']:,} "
              f"| {a['disk_mb']} MB | {b['disk_mb']} MB | {a['compacted_disk_mb']} MB | {b['compacted_disk_mb']} MB |")
    print(f"\ncounted in the horizon at the end: {on['counted']:,} (on), {off['counted']:,} (off); "
          f"expired: {on['expired']:,}; seconds: {on['seconds']} (on), {off['seconds']} (off)")
    output = args.output.with_name(args.output.stem + "-expiry.json")
    write_json(output, {"machine": machine(), "runs": runs, "cache_mb": args.cache_mb})
    print(f"bench: results written to {output}")
    return 0


def run_state_size(customers: int, cache_mb: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="crosssell-bench-customers-"))
    try:
        print(f"bench: state size: {customers} customers", flush=True)
        out = subprocess.run(python_module("bench.customers", "--state-only", str(customers), "--cache-mb",
                                           str(cache_mb), "--dir", str(directory)),
                             check=True, capture_output=True)
        result: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
        return result
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.state_only is not None:
        print(orjson.dumps(state_size(args.state_only, args.cache_mb, args.dir)).decode())
        return 0
    if args.smoke:
        args.events, args.customers, args.expiry_customers = 5000, "20000", 20000
    if args.expiry:
        return run_expiry(args)
    counts = [int(c) for c in args.customers.split(",") if c.strip()]
    log_dir = Path(tempfile.mkdtemp(prefix="crosssell-bench-"))
    speed = throughput(args, log_dir)
    sizes = [run_state_size(n, args.cache_mb) for n in counts]
    print("\n| customer state | events/s | CPU s per million events | peak RSS |\n|---|---:|---:|---:|")
    for mode in ("off", "on"):
        r = speed[mode]
        print(f"| {mode} | {r['events_per_second']:,} | {r['cpu_seconds_per_million']} | {r['peak_rss_mb']} MB |")
    print(f"\non/off: {speed['on_over_off'] or 'not timed (the run was too short for a busy poll)'}\n")
    print("| distinct customers | peak RSS | on disk | bytes per customer | customers/s applied |")
    print("|---:|---:|---:|---:|---:|")
    for r in sizes:
        print(f"| {r['customers']:,} | {r['peak_rss_mb']} MB | {r['disk_mb']} MB | {r['bytes_per_customer_on_disk']} "
              f"| {r['customers_per_second']:,} |")
    if len(sizes) >= 2:
        print(f"\nRSS at {sizes[-1]['customers']:,} / at {sizes[0]['customers']:,}: "
              f"{sizes[-1]['peak_rss_mb'] / sizes[0]['peak_rss_mb']:.2f}")
    write_json(args.output, {"machine": machine(), "throughput": speed, "state_size": sizes,
                             "cache_mb": args.cache_mb, "events": args.events})
    print(f"bench: results written to {args.output}")
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
