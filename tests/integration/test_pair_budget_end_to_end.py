"""Exact while it fits: pair counts that fit the memory budget give the lists of exact counting, end to end.

A generated catalogue of 640 products, 8,000 orders over six hours of event
time. Some (pairs partition, bucket) holds more distinct pairs than the 3,000
a bucket could hold before the memory budget (the old fixed capacity), so the
old worker would have approximated; together they fit CROSSSELL_PAIR_MEMORY_MB.
The truth is brute force over the orders sent (no project code), and every
list of both horizons on the recommendations topics must equal it, with
``exact`` true, with one worker and with two; and after a restart, the lists
of a worker that restored the buckets from their bases and logs.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from itertools import combinations
from pathlib import Path

import orjson
import pytest

from streams.ops.traffic import OrderMaker, TrafficShape
from streams.pairs.outbox import owner_partition
from tests.harness import Cluster, cluster, read_partitions, wait_for_lists_to_settle, wait_until

ORDERS = 8000
TAIL = 100  # sent after the others were counted and flushed
HOURS = 6
TOP_K = 10
MIN_SUPPORT = 2
OLD_PAIR_CAPACITY = 3000
HORIZONS = ("24h", "7d")
SETTINGS = {
    "CROSSSELL_RECOMMENDATION_INTERVAL_SECONDS": "1",
    "CROSSSELL_RECOMMENDATION_MIN_CHANGE": "0",
    "CROSSSELL_RECOMMENDATION_TOP_K": str(TOP_K),
    "CROSSSELL_MIN_SUPPORT": str(MIN_SUPPORT),
    # About 6 MB of pair state by the budget's accounting.
    "CROSSSELL_PAIR_MEMORY_MB": "16",
}

Lists = dict[str, tuple[int, list[tuple[str, int, float]]]]  # product -> (n_A, [(companion, n_AB, lift)])


def make_orders(seed: int) -> list[dict[str, object]]:
    maker = OrderMaker(random.Random(seed), TrafficShape(cross_sell_propensity=0.7, upsell_propensity=0.5,
                                                          categories=8, products_per_category=80))
    # The six hours start at a 7d bucket's boundary (14 h buckets), so that they all fall in one bucket
    # whatever the time of day: how many pairs one bucket holds must not depend on when the test runs.
    # The bucket started at most 14 h before the hours end, so they are all within the 24h horizon too.
    bucket = 7 * 86400 / 12
    start = (time.time() - 120 - HOURS * 3600) // bucket * bucket
    return [maker.order(start + HOURS * 3600 * i / ORDERS) for i in range(ORDERS)]


def baskets(orders: list[dict[str, object]]) -> list[list[str]]:
    result = []
    for order in orders:
        items = order["items"]
        assert isinstance(items, list)
        result.append(sorted({line["product_id"] for line in items}))
    return result


def truth(orders: list[dict[str, object]]) -> Lists:
    """product -> (n_A, its top companions by count, then lift, then id), by brute force."""
    n = len(orders)
    with_product: Counter[str] = Counter()
    together: Counter[tuple[str, str]] = Counter()
    for basket in baskets(orders):
        for product in basket:
            with_product[product] += 1
        for a, b in combinations(basket, 2):
            together[(a, b)] += 1
            together[(b, a)] += 1
    rows: dict[str, list[tuple[str, int, float]]] = {}
    for (a, b), count in together.items():
        if count >= MIN_SUPPORT:
            rows.setdefault(a, []).append((b, count, count * n / (with_product[a] * with_product[b])))
    return {a: (with_product[a], sorted(r, key=lambda row: (-row[1], -row[2], row[0]))[:TOP_K])
            for a, r in rows.items()}


def most_pairs_in_one_bucket(orders: list[dict[str, object]], partitions: int) -> int:
    """The most distinct (product, companion) pairs one pairs partition holds for one 7d bucket (14 h)."""
    held: dict[tuple[int, float], set[tuple[str, str]]] = {}
    for order, basket in zip(orders, baskets(orders), strict=True):
        occurred = datetime.fromisoformat(str(order["occurred_at"])).timestamp()
        bucket = occurred // (7 * 86400 / 12) * (7 * 86400 / 12)
        for a, b in combinations(basket, 2):
            held.setdefault((owner_partition(a, partitions), bucket), set()).add((a, b))
            held.setdefault((owner_partition(b, partitions), bucket), set()).add((b, a))
    return max(len(pairs) for pairs in held.values())


def latest(running: Cluster, horizon: str, at_least: int) -> dict[str, dict[str, object]]:
    """The newest list of every product on ``recommendations.<horizon>`` (read to its end)."""
    topic = running.settings.recommendations_topic_for(horizon)
    lists: dict[str, dict[str, object]] = {}
    for records in read_partitions(running.bootstrap, topic, running.settings.partitions, at_least=at_least,
                                   quiet=3.0).values():
        for _, value, _ in records:
            assert value is not None, "a tombstone, though no count ever went down"
            message = orjson.loads(value)
            lists[message["product_id"]] = message
    return lists


def assert_lists_are_exact(running: Cluster, expected: Lists) -> None:
    for horizon in HORIZONS:
        published = latest(running, horizon, len(expected))
        assert set(published) == set(expected), horizon
        for product, (_, rows) in expected.items():
            message = published[product]
            assert (message["exact"], message["error_bound"]) == (True, 0), (horizon, product)
            companions = message["companions"]
            assert isinstance(companions, list)
            assert [(c["product_id"], c["count"]) for c in companions] == [(c, n) for c, n, _ in rows], \
                (horizon, product)
    for worker in running.workers:
        for horizon in HORIZONS:
            assert worker.sample("crosssell_pair_counts_exact", horizon=horizon) == 1
            assert worker.sample("crosssell_pair_count_error_bound", horizon=horizon) == 0
        state = worker.sample("crosssell_pair_state_bytes")
        assert state is not None and 0 < state <= int(SETTINGS["CROSSSELL_PAIR_MEMORY_MB"]) * 1_000_000


def assert_live_scores_are_exact(running: Cluster, expected: Lists) -> None:
    """n_A, N, confidence and lift of the live lists.

    A published list keeps those of its publication: it is sent again when its
    companions or counts change, not when only n_A, n_B or N move.
    """
    for worker in running.workers:
        for product, (n_a, rows) in sorted(expected.items())[::20]:
            answer = orjson.loads(worker.get(f"/api/recommendations/{product}"))
            for horizon in HORIZONS:
                message = answer["horizons"][horizon]
                assert (message["orders_with_product"], message["total_orders"]) == (n_a, ORDERS)
                assert (message["exact"], message["error_bound"]) == (True, 0)
                got = message["companions"]
                assert [(c["product_id"], c["count"]) for c in got] == [(c, n) for c, n, _ in rows]
                for companion, (_, count, lift) in zip(got, rows, strict=True):
                    assert companion["confidence"] == pytest.approx(count / n_a, abs=1e-6)
                    assert companion["lift"] == pytest.approx(lift, rel=1e-5)


@pytest.fixture(scope="module")
def orders() -> list[dict[str, object]]:
    return make_orders(seed=16)


@pytest.fixture(scope="module")
def expected(orders: list[dict[str, object]]) -> Lists:
    return truth(orders)


def run_workers(tmp: Path, orders: list[dict[str, object]], workers: int) -> Iterator[Cluster]:
    with cluster(tmp, SETTINGS) as running:
        started = [running.worker().start() for _ in range(workers)]
        for worker in started:
            worker.wait_serving()
        if workers > 1:
            wait_until(lambda: sum(w.sample("crosssell_partitions_assigned") or 0 for w in started) == 4, 60,
                       "partitions split between the workers")
        # Most orders at once, then the last few after a pair flush: flushes write bases, then logs.
        for part, count in ((orders[:-TAIL], len(orders) - TAIL), (orders[-TAIL:], len(orders))):
            running.produce((str(o["order_id"]).encode(), orjson.dumps(o), None) for o in part)
            wait_until(lambda count=count: sum(w.sample("crosssell_orders_total") or 0 for w in started) == count,
                       120, f"{count} orders applied")
            time.sleep(6)  # CROSSSELL_PAIR_FLUSH_INTERVAL_SECONDS (5s) and then some
        wait_for_lists_to_settle(started)
        yield running


def test_the_generated_catalogue_would_not_fit_the_old_fixed_capacity(orders: list[dict[str, object]]) -> None:
    assert most_pairs_in_one_bucket(orders, partitions=4) > OLD_PAIR_CAPACITY


@pytest.mark.parametrize("workers", [1, 2])
def test_pairs_that_fit_the_budget_give_the_lists_of_exact_counting(
        tmp_path_factory: pytest.TempPathFactory, orders: list[dict[str, object]], expected: Lists,
        workers: int) -> None:
    for running in run_workers(tmp_path_factory.mktemp(f"budget{workers}"), orders, workers):
        assert_lists_are_exact(running, expected)
        assert_live_scores_are_exact(running, expected)
        if workers == 1:
            # A new worker restores the buckets from their bases and logs in the changelog.
            changelog = read_partitions(running.bootstrap, f"{running.settings.app_id}-pairs-changelog", 4,
                                        at_least=1)
            logs = [value for records in changelog.values() for _, value, _ in records
                    if value is not None and value.startswith(b'{"messages":')]
            assert logs, "no flush wrote a log: the restart would not read one"
            restart(running)
            assert_live_scores_are_exact(running, expected)


def restart(running: Cluster) -> None:
    """Stop the one worker and start another, until it restored its state."""
    running.workers.pop(0).stop()
    restarted = running.worker().start().wait_serving()
    wait_until(lambda: restarted.sample("crosssell_partitions_assigned") == 4, 90, "partitions assigned")
    wait_until(lambda: (restarted.sample("crosssell_pair_state_bytes") or 0) > 0, 90, "pair state restored")
