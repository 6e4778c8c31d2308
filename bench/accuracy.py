"""``python -m bench.accuracy``: how close are the published lists to exact counting?

For each catalogue size (default 100, 10,000 and 1,000,000 products) it
generates ``--orders`` orders over ``--hours`` of event time ending now:
product popularity is Zipf (rank^-``--skew``), a basket has one to six
products, and half of them add one or two fixed partners of their first
product (so lists have real leaders, not only ties). The orders go to a fresh
set of topics on one embedded broker (Tansu, 127.0.0.1, a free port) and
through one worker (``python -m streams worker``, its memory budget
``--memory-mb``, default CROSSSELL_PAIR_MEMORY_MB's). Once every order is
applied and the lists stopped changing, every list of ``recommendations.<run>.24h``
(read from offset 0, the newest per product) is compared with exact offline
counting of the same orders:

* lists: products with a list by exact counting / in the worker's topic;
* equal: share of the products with a list on either side whose published
  companions and counts are exactly those of exact counting, in its order;
* precision@10: per product with a list, the share of its companions that are
  among the true top 10 (companions tied with the 10th count too), averaged
  over the *eligible* products: those whose true top 10 all have counts above
  the list's error bound (all products when exact);
* overstated: published companion counts above the true count (must be 0);
* error bound, exact: from the messages; pair state: crosssell_pair_state_bytes
  at its largest during the run; RSS: the worker's peak (VmHWM).

Prints a table (README, "Frequently bought together") and writes JSON to
bench/results/accuracy.json. The default run took 2 min 11 s on two shared
cores (about 50 s for each catalogue, the worker's start included); this
process peaked at 590 MB (the exact counts of the 1,000,000-product run, whose
100,000 orders name about 92,000 of its products), each worker at about 500 MB.
All processes and the broker are stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import orjson
from confluent_kafka import Producer

from bench.procs import Children, children, peak_rss_mb, python_module, wait_until
from bench.soak import rss_mib, scrape
from streams.ops.admin import ensure_topics
from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.reader import current_lists
from streams.ops.traffic import rfc3339
from streams.pairs.outbox import owner_partition
from streams.settings import Settings

CATALOGUES = (100, 10_000, 1_000_000)
TOP_K = 10
MIN_SUPPORT = Settings().min_support
HORIZON = "24h"
PARTITIONS = 4
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "accuracy.json"
PUBLISH_EVERY = 3.0  # seconds between the worker's publications: every change of a list is sent


# --- traffic -------------------------------------------------------------------------


def baskets(products: int, orders: int, seed: int, skew: float) -> Iterator[tuple[str, ...]]:
    """Distinct, sorted product ids per order; popularity is Zipf over ranks, ids are ``p`` + rank."""
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1.0 / (rank + 1) ** skew for rank in range(products)))
    ranks = range(products)
    for _ in range(orders):
        size = rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 5, 6))
        picked = set(rng.choices(ranks, cum_weights=weights, k=size))
        if rng.random() < 0.5:
            first = min(picked)
            for _ in range(rng.choice((1, 1, 2))):
                j = rng.choices((0, 1, 2, 3), (0.5, 0.25, 0.15, 0.1))[0]
                picked.add((first + 1 + (first * 7919 + j * 104_729) % 997) % products)  # its fixed partners
        yield tuple(sorted(f"p{rank:07d}" for rank in picked))


def order_event(number: int, basket: tuple[str, ...], event_time: float) -> tuple[bytes, bytes]:
    order_id = f"acc-{number:09d}"
    return order_id.encode(), orjson.dumps({
        "order_id": order_id, "customer_id": f"c-{number % 50_000:05d}", "occurred_at": rfc3339(event_time),
        "currency": "EUR", "channel": "web", "variant": "control",
        "items": [{"product_id": product, "category": f"c{product[-2:]}", "unit_price": 10.0, "quantity": 1}
                  for product in basket],
    })


# --- exact counting and the comparison -------------------------------------------------


@dataclass(slots=True)
class Exact:
    with_product: Counter[str]
    companions: dict[str, dict[str, int]]  # product -> companion -> orders with both
    orders: int

    @classmethod
    def count(cls, all_baskets: Sequence[tuple[str, ...]]) -> Exact:
        with_product: Counter[str] = Counter()
        companions: dict[str, dict[str, int]] = {}
        for basket in all_baskets:
            with_product.update(basket)
            for a, b in combinations(basket, 2):
                of_a, of_b = companions.setdefault(a, {}), companions.setdefault(b, {})
                of_a[b] = of_a.get(b, 0) + 1
                of_b[a] = of_b.get(a, 0) + 1
        return cls(with_product, companions, len(all_baskets))

    def top(self, product: str) -> list[tuple[str, int]]:
        """The exact list: count, then lift, then id; at least the minimum support."""
        n, n_a = self.orders, self.with_product[product]
        rows = [(b, count, count * n / (n_a * self.with_product[b]))
                for b, count in self.companions.get(product, {}).items() if count >= MIN_SUPPORT]
        rows.sort(key=lambda row: (-row[1], -row[2], row[0]))
        return [(b, count) for b, count, _ in rows[:TOP_K]]


@dataclass(slots=True)
class Comparison:
    exact_lists: int = 0
    published_lists: int = 0
    both: int = 0  # products with a list on both sides
    equal: int = 0
    eligible: int = 0  # with a list, and a true top 10 above its error bound
    eligible_without_list: int = 0  # a true top 10 above the largest error bound, and no list
    precision_sum: float = 0.0
    precision_all_sum: float = 0.0
    listed_counts: int = 0
    overstated: int = 0
    understated: int = 0
    error_bound: int = 0
    exact: bool = True

    @property
    def union(self) -> int:
        return self.exact_lists + self.published_lists - self.both


def compare(truth: Exact, published: dict[str, dict[str, object]]) -> Comparison:
    result = Comparison()
    result.error_bound = max((int(m["error_bound"]) for m in published.values()), default=0)  # type: ignore[call-overload]
    for product in {p for p in truth.companions if truth.top(p)} | set(published):
        expected = truth.top(product)
        tenth = expected[-1][1] if expected else 0  # the 10th true count (or the last, with fewer)
        message = published.get(product)
        result.exact_lists += bool(expected)
        if message is None:
            result.eligible_without_list += bool(expected) and tenth > result.error_bound
            continue
        result.published_lists += 1
        result.both += bool(expected)
        companions = message["companions"]
        assert isinstance(companions, list)
        got = [(str(c["product_id"]), int(c["count"])) for c in companions]
        result.exact = result.exact and bool(message["exact"])
        result.equal += got == expected
        true = truth.companions.get(product, {})
        for companion, count in got:
            result.listed_counts += 1
            result.overstated += count > true.get(companion, 0)
            result.understated += count < true.get(companion, 0)
        precision = sum(1 for companion, _ in got if true.get(companion, 0) >= tenth) / len(got) if got else 0.0
        result.precision_all_sum += precision
        if expected and tenth > int(message["error_bound"]):  # type: ignore[call-overload]
            result.eligible += 1
            result.precision_sum += precision
    return result


# --- one run through the worker --------------------------------------------------------


@dataclass(slots=True)
class Run:
    catalogue: int
    orders: int
    distinct_products: int
    distinct_pairs: int
    lists_exact: int
    lists_published: int
    equal_share: float
    eligible: int
    eligible_without_list: int
    precision_at_10: float
    precision_at_10_all: float
    listed_counts: int
    overstated_counts: int
    understated_counts: int
    exact: bool
    error_bound: int
    pair_state_mb: float
    budget_mb: float
    worker_peak_rss_mb: float
    worker_rss_mb: float  # at the end, once settled
    seconds: float


def run_catalogue(broker: EmbeddedBroker, group: Children, args: argparse.Namespace, products: int,
                  work: Path) -> Run:
    started = time.monotonic()
    tag = f"acc{products}-{uuid.uuid4().hex[:6]}"
    env = {
        "CROSSSELL_BROKER_URL": broker.url, "CROSSSELL_APP_ID": tag, "CROSSSELL_PARTITIONS": str(PARTITIONS),
        "CROSSSELL_ORDERS_TOPIC": f"{tag}-orders", "CROSSSELL_DEAD_LETTER_TOPIC": f"{tag}-dead-letters",
        "CROSSSELL_PAIRS_TOPIC": f"{tag}-pairs", "CROSSSELL_RECOMMENDATIONS_TOPIC": f"{tag}-recommendations",
        "CROSSSELL_WEB_PORT": str(free_port()), "CROSSSELL_DATA_DIR": str(work / tag), "CROSSSELL_LOG_LEVEL": "warning",
        "CROSSSELL_RECOMMENDATION_TOP_K": str(TOP_K), "CROSSSELL_RECOMMENDATION_MIN_CHANGE": "0",
        "CROSSSELL_RECOMMENDATION_INTERVAL_SECONDS": str(PUBLISH_EVERY),
        **({"CROSSSELL_PAIR_MEMORY_MB": str(args.memory_mb)} if args.memory_mb else {}),
    }
    settings = Settings.from_env(env)
    ensure_topics(broker.bootstrap, settings)
    all_baskets = list(baskets(products, args.orders, args.seed, args.skew))
    truth = Exact.count(all_baskets)
    send_orders(broker.bootstrap, settings.orders_topic, all_baskets, args.hours)
    worker = group.start(tag, python_module("streams", "worker"), {**_inherited(), **env})
    port = int(env["CROSSSELL_WEB_PORT"])
    largest_state = 0.0

    def applied() -> bool:
        nonlocal largest_state
        worker.check_alive()
        try:
            metrics = scrape(port)
        except OSError:
            return False
        largest_state = max(largest_state, metrics.get("crosssell_pair_state_bytes", 0.0))
        return bool(metrics.get("crosssell_orders_total") == args.orders)

    if not wait_until(applied, args.timeout, interval=1.0):
        raise RuntimeError(f"{tag}: not every order was applied within {args.timeout}s")
    settle(port, args.orders, worker.check_alive, args.timeout)
    metrics = scrape(port)
    largest_state = max(largest_state, metrics.get("crosssell_pair_state_bytes", 0.0))
    rss, peak = rss_mib(worker.pid), peak_rss_mb(worker.pid)
    group.stop(worker)
    published = read_lists(broker.bootstrap, settings.recommendations_topic_for(HORIZON))
    result = compare(truth, published)
    return Run(
        catalogue=products, orders=args.orders, distinct_products=len(truth.with_product),
        distinct_pairs=sum(len(c) for c in truth.companions.values()) // 2,
        lists_exact=result.exact_lists, lists_published=result.published_lists,
        equal_share=result.equal / max(1, result.union), eligible=result.eligible,
        eligible_without_list=result.eligible_without_list,
        precision_at_10=result.precision_sum / max(1, result.eligible),
        precision_at_10_all=result.precision_all_sum / max(1, result.published_lists),
        listed_counts=result.listed_counts, overstated_counts=result.overstated,
        understated_counts=result.understated, exact=result.exact, error_bound=result.error_bound,
        pair_state_mb=largest_state / 1e6, budget_mb=metrics.get("crosssell_pair_state_budget_bytes", 0.0) / 1e6,
        worker_peak_rss_mb=peak, worker_rss_mb=rss, seconds=time.monotonic() - started)


def _inherited() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}


def send_orders(bootstrap: str, topic: str, all_baskets: Sequence[tuple[str, ...]], hours: float) -> None:
    """Every order, in event-time order, spread over the ``hours`` before now."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                         "queue.buffering.max.messages": 500_000})
    span = hours * 3600
    start = time.time() - span - 60
    for number, basket in enumerate(all_baskets):
        key, value = order_event(number, basket, start + span * number / len(all_baskets))
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the orders were not delivered within 120s")


def settle(port: int, orders: int, check_alive: Callable[[], None], timeout: float) -> None:
    """Until every pairs partition counted every order (N of its 24h view) and the lists stopped changing."""
    probes = {owner_partition(f"p{rank:07d}", PARTITIONS): f"p{rank:07d}" for rank in range(64)}
    assert len(probes) == PARTITIONS

    def counted() -> bool:
        check_alive()
        for product in probes.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/recommendations/{product}", timeout=30) as r:
                if orjson.loads(r.read())["horizons"][HORIZON]["total_orders"] != orders:
                    return False
        return True

    updates: list[float] = []

    def quiet() -> bool:
        check_alive()
        updates.append(scrape(port).get("crosssell_recommendation_updates_total", -1.0))
        return len(updates) >= 3 and updates[-1] == updates[-3]

    if not wait_until(counted, timeout, interval=1.0):
        raise RuntimeError(f"the pairs partitions did not count every order within {timeout}s")
    if not wait_until(quiet, timeout, interval=PUBLISH_EVERY):
        raise RuntimeError(f"the lists did not stop changing within {timeout}s")


def read_lists(bootstrap: str, topic: str) -> dict[str, dict[str, object]]:
    found = current_lists(bootstrap, [topic], PARTITIONS)
    return {key.decode(): orjson.loads(value) for (_, key), value in found.items() if value is not None}


# --- the report ----------------------------------------------------------------------------


def table(runs: Sequence[Run]) -> str:
    lines = [
        "| catalogue | orders | distinct pairs | lists (exact / published) | equal to exact | precision@10"
        " (eligible) | overstated counts | exact | error bound | pair state MB (budget) | worker peak RSS MB |"
        " seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.catalogue:,} | {r.orders:,} | {r.distinct_pairs:,} | {r.lists_exact:,} / {r.lists_published:,}"
            f" | {r.equal_share:.1%} | {r.precision_at_10:.3f} ({r.eligible:,}) | {r.overstated_counts} of"
            f" {r.listed_counts:,} | {'yes' if r.exact else 'no'} | {r.error_bound} | {r.pair_state_mb:.1f}"
            f" ({r.budget_mb:.0f}) | {r.worker_peak_rss_mb:.0f} | {r.seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalogues", default=",".join(str(c) for c in CATALOGUES),
                        help="catalogue sizes, comma-separated (default 100,10000,1000000)")
    parser.add_argument("--orders", type=int, default=100_000, help="orders per catalogue (default 100000)")
    parser.add_argument("--hours", type=float, default=12.0, help="hours of event time they cover (default 12)")
    parser.add_argument("--skew", type=float, default=1.0, help="Zipf exponent of popularity (default 1.0)")
    parser.add_argument("--memory-mb", type=int, default=0,
                        help="the worker's CROSSSELL_PAIR_MEMORY_MB (default: the setting's default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each run may take (default 600)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default %(default)s)")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.catalogues.split(",") if size.strip()]
    work = Path(tempfile.mkdtemp(prefix="crosssell-accuracy-"))
    runs: list[Run] = []
    try:
        with EmbeddedBroker() as broker, children(work) as group:
            for products in sizes:
                print(f"accuracy: {products:,} products, {args.orders:,} orders ...", file=sys.stderr, flush=True)
                runs.append(run_catalogue(broker, group, args, products, work))
                print(table(runs[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("accuracy: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(runs))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps({"arguments": {k: str(v) for k, v in vars(args).items()},
                                          "runs": [asdict(r) for r in runs]}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
