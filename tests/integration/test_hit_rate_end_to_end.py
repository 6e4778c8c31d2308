"""Recommendation hit rate end to end: known lists, generated orders, exact counts from two real workers.

The test publishes the lists itself, as the system's recommender would (the
same message builder, on the recommendations topic of the first horizon), and
keeps the workers' own recommender quiet (an hour between publications), so
the companions of every primary product are known. Orders are generated with
a primary product from the catalogue (some with a list, one whose list was
computed after every order, one without) and cheaper lines that are a listed
companion or not, at random; the expected figures per variant are worked out
here from the documents and the lists alone. Each worker reads the whole
topic, though it owns only some orders partitions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.orders.hit_rate import BestCompanion
from streams.orders.potential import ProductPotential, opportunities
from streams.pairs.recommendations import Companion, recommendation_message
from tests.harness import Cluster, Worker, cluster, labelled_sum, wait_until

PARTITIONS = 2
ORDERS = 800
LISTS = {  # primary -> (companion, confidence, lift)
    "tv": [("cable", 0.4, 1.2), ("mount", 0.25, 3.0), ("soundbar", 0.1, 0.8)],
    "laptop": [("mouse", 0.5, 2.0), ("bag", 0.3, 2.5)],
    "pan": [("lid", 0.6, 0.9)],  # its best companion sells no better than chance: no opportunity
    "late": [("cable", 0.9, 1.5)],  # computed after every order: no list at their event time
}
BEST = {"tv": ("mount", 3.0, 0.25), "laptop": ("bag", 2.5, 0.3), "pan": ("lid", 0.9, 0.6), "late": ("cable", 1.5, 0.9)}
UNLISTED_PRIMARY = "bike"
OTHERS = ["cable", "mount", "soundbar", "mouse", "bag", "lid", "socks", "batteries"]
FIGURES = ("listed_orders", "hit_orders", "promised", "best_confidence")


def promise(companions: list[tuple[str, float, float]]) -> tuple[float, float]:
    miss = 1.0
    for _, confidence, _ in companions:
        miss *= 1 - confidence
    return 1 - miss, max(c for _, c, _ in companions)


class Truth:
    def __init__(self, base: float) -> None:
        rng = random.Random(21)
        self.lists: list[tuple[bytes, bytes, int | None]] = []
        for product, companions in LISTS.items():
            computed = base + 3600 if product == "late" else base - 120
            value = recommendation_message(
                product, "24h", datetime.fromtimestamp(computed, UTC),
                [Companion(c, 10, confidence, lift) for c, confidence, lift in companions],
                orders_with_product=100, total_orders=1000, exact=True, error_bound=0)
            self.lists.append((product.encode(), orjson.dumps(value), None))
        self.events: list[tuple[bytes, bytes, int | None]] = []
        self.expected: dict[str, list[float]] = {}
        primaries = [*LISTS, UNLISTED_PRIMARY]
        for n in range(ORDERS):
            primary = rng.choice(primaries)
            extras = rng.sample(OTHERS, rng.randint(0, 2))
            variant = "treatment" if n % 2 else "control"
            document = {
                "order_id": f"hit-{n}", "customer_id": f"c-{n}", "currency": "EUR", "variant": variant,
                "occurred_at": datetime.fromtimestamp(base + n * 0.3, UTC).isoformat(),
                "items": [{"product_id": primary, "category": "main", "unit_price": 500.0, "quantity": 1}]
                + [{"product_id": p, "category": "extra", "unit_price": 9.5, "quantity": 1} for p in extras],
            }
            self.events.append((document["order_id"].encode(), orjson.dumps(document), None))
            if primary in LISTS and primary != "late":
                promised, best = promise(LISTS[primary])
                listed = {c for c, _, _ in LISTS[primary]}
                figures = [1, int(bool(listed & set(extras))), promised, best]
                self.expected[variant] = [a + b for a, b in zip(self.expected.get(variant, [0] * 4), figures,
                                                                strict=True)]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, list[Worker], Truth]]:
    tmp: Path = tmp_path_factory.mktemp("hit-rate")
    truth = Truth((time.time() - 600) // 60 * 60)
    env = {"CROSSSELL_PARTITIONS": str(PARTITIONS), "CROSSSELL_RECOMMENDATION_INTERVAL_SECONDS": "1h",
           "CROSSSELL_SESSION_TIMEOUT_SECONDS": "6", "CROSSSELL_REBALANCE_TIMEOUT_SECONDS": "6",
           "CROSSSELL_POTENTIAL_CAPACITY": "32"}
    with cluster(tmp, env) as running_cluster:
        running_cluster.produce(truth.lists, topic=running_cluster.settings.recommendations_topic_for("24h"))
        workers = [running_cluster.worker().start() for _ in range(2)]
        for worker in workers:
            worker.wait_serving()
        # Each worker reads every list, whichever orders partitions it owns.
        wait_until(lambda: all(w.sample("crosssell_recommendation_lists_held") == len(LISTS) for w in workers),
                   60, "both workers to hold every published list")
        running_cluster.produce(truth.events)

        def applied() -> bool:
            counts = [w.sample("crosssell_orders_total") or 0 for w in workers]
            return sum(counts) == ORDERS and all(counts)
        wait_until(applied, 120, f"two workers to apply {ORDERS} orders between them")
        yield running_cluster, workers, truth


def test_the_hit_sums_by_variant_over_the_workers_are_exactly_those_of_the_orders_sent(
        running: tuple[Cluster, list[Worker], Truth]) -> None:
    _, workers, truth = running
    assert set(truth.expected) == {"control", "treatment"}
    scrapes = [w.metrics() for w in workers]
    for variant, expected in truth.expected.items():
        got = [sum(labelled_sum(m, f"crosssell_recommendation_{name}", window="1h", variant=variant) or 0
                   for m in scrapes) for name in FIGURES]
        assert got[:2] == expected[:2], variant
        assert got[2:] == pytest.approx(expected[2:], rel=1e-6), variant
    # Some orders of each variant hit and some do not: the test can tell hits from misses.
    assert all(0 < e[1] < e[0] for e in truth.expected.values())


def test_the_api_gives_the_hit_rate_and_the_promise_per_variant(
        running: tuple[Cluster, list[Worker], Truth]) -> None:
    _, workers, _ = running
    for worker in workers:
        report: dict[str, Any] = orjson.loads(worker.get("/api/hit-rate"))
        assert report["on"] and report["lists_held"] == len(LISTS) and report["horizon"] == "24h"
        metrics = worker.metrics()
        for variant, row in report["views"]["1h"]["variants"].items():
            listed = labelled_sum(metrics, "crosssell_recommendation_listed_orders", window="1h", variant=variant)
            hits = labelled_sum(metrics, "crosssell_recommendation_hit_orders", window="1h", variant=variant)
            promised = labelled_sum(metrics, "crosssell_recommendation_promised", window="1h", variant=variant)
            assert (row["listed_orders"], row["hit_orders"]) == (listed, hits)
            assert row["hit_rate"] == pytest.approx(hits / listed)  # type: ignore[operator]
            assert row["promised"] == pytest.approx(promised / listed)  # type: ignore[operator]
        assert "hit_rate" in orjson.loads(worker.get("/api/summary"))


def test_each_top_primary_product_shows_its_best_companion_by_lift_and_the_opportunities_follow(
        running: tuple[Cluster, list[Worker], Truth]) -> None:
    _, workers, _ = running
    seen = set()
    for worker in workers:
        rows = orjson.loads(worker.get("/api/potential"))["1h"]
        companions = {}
        for row in rows:
            best = row["best_companion"]
            if row["product"] in BEST:
                assert (best["product"], best["lift"], best["confidence"]) == BEST[row["product"]], row
                companions[row["product"]] = BestCompanion(**best)
                seen.add(row["product"])
            else:
                assert best is None, row  # no list published for it
        potentials = [ProductPotential(**{k: v for k, v in r.items() if k != "best_companion"}) for r in rows]
        expected = [o.as_json() for o in opportunities(potentials, companions, 10)]
        got = orjson.loads(worker.get("/api/opportunities"))["1h"]
        assert got == expected
        assert {o["product"] for o in got} == {"tv", "laptop", "late"} & {r.product for r in potentials}
        metrics = worker.metrics()
        for product in companions:
            companion, lift, _ = BEST[product]
            assert labelled_sum(metrics, "crosssell_primary_product_companion_lift", product=product,
                                companion=companion) == lift
    assert seen == set(BEST)
