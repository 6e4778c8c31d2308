"""Frequently bought together, end to end: orders in, recommendations out on Kafka.

The truth is computed here by brute force over the orders the test sent
(nested loops, no project code), and compared with what the worker publishes
on the recommendations topic, with one worker and with two.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams.ops.traffic import OrderMaker, TrafficShape
from streams.pairs.outbox import owner_partition
from streams.runtime.app import recommendations_path
from tests.harness import REPO, Cluster, cluster, wait_for_lists_to_settle, wait_until

ORDERS = 1200
TOP_K = 5
MIN_SUPPORT = 2
SETTINGS = {
    "CROSSSELL_RECOMMENDATION_INTERVAL_SECONDS": "1",
    "CROSSSELL_RECOMMENDATION_MIN_CHANGE": "0",
    "CROSSSELL_RECOMMENDATION_TOP_K": str(TOP_K),
    "CROSSSELL_MIN_SUPPORT": str(MIN_SUPPORT),
}


def make_orders(seed: int) -> list[dict[str, object]]:
    maker = OrderMaker(random.Random(seed), TrafficShape(cross_sell_propensity=0.7, upsell_propensity=0.5,
                                                          categories=4, products_per_category=15))
    now = time.time()
    return [maker.order(now - 60 + i * 0.01) for i in range(ORDERS)]


def truth(orders: list[dict[str, object]]) -> dict[str, list[tuple[str, int, float, float]]]:
    """product -> top companions [(companion, count, confidence, lift)] by brute force."""
    n = len(orders)
    with_product: Counter[str] = Counter()
    together: Counter[tuple[str, str]] = Counter()
    for order in orders:
        items = order["items"]
        assert isinstance(items, list)
        basket = sorted({line["product_id"] for line in items})
        for product in basket:
            with_product[product] += 1
        for a, b in combinations(basket, 2):
            together[(a, b)] += 1
            together[(b, a)] += 1
    result: dict[str, list[tuple[str, int, float, float]]] = {}
    for product in with_product:
        rows = []
        for (a, b), count in together.items():
            if a == product and count >= MIN_SUPPORT:
                conf = count / with_product[a]
                rows.append((b, count, conf, conf / (with_product[b] / n)))
        rows.sort(key=lambda r: (-r[1], -r[3], r[0]))
        if rows:
            result[product] = rows[:TOP_K]
    return result


def latest_recommendations(running: Cluster, expected_keys: int) -> dict[str, dict[str, object] | None]:
    topic = running.settings.recommendations_topic_for("24h")
    latest: dict[str, dict[str, object] | None] = {}
    for message in running.read_topic(topic, expected_keys, timeout=20):
        value = message.value()  # type: ignore[attr-defined]
        latest[message.key().decode()] = orjson.loads(value) if value else None  # type: ignore[attr-defined]
    return latest


def as_rows(message: dict[str, object]) -> list[tuple[str, int, float, float]]:
    companions = message["companions"]
    assert isinstance(companions, list)
    return [(c["product_id"], c["count"], c["confidence"], c["lift"]) for c in companions]


def assert_matches_truth(latest: dict[str, dict[str, object] | None],
                         expected: dict[str, list[tuple[str, int, float, float]]]) -> None:
    """Same products, same companions in the same order with the same counts.

    Confidence and lift of a published list are as of its publication: a list is
    republished when its companions or counts change, not when only n_A or n_B
    moves, so they are compared on the live HTTP view instead.
    """
    published = {k: v for k, v in latest.items() if v is not None}
    assert set(published) == set(expected)
    for product, rows in expected.items():
        got = as_rows(published[product])
        assert [(c, n) for c, n, _, _ in got] == [(c, n) for c, n, _, _ in rows], product


def assert_scores_match_truth(answer: dict[str, object], rows: list[tuple[str, int, float, float]]) -> None:
    horizons = answer["horizons"]
    assert isinstance(horizons, dict)
    got = as_rows(horizons["24h"])
    assert [(c, n) for c, n, _, _ in got] == [(c, n) for c, n, _, _ in rows]
    for (_, _, conf, lift), (_, _, want_conf, want_lift) in zip(got, rows, strict=True):
        assert conf == pytest.approx(want_conf, abs=1e-6)
        assert lift == pytest.approx(want_lift, rel=1e-5)


@pytest.fixture(scope="module")
def orders_and_truth() -> tuple[list[dict[str, object]], dict[str, list[tuple[str, int, float, float]]]]:
    orders = make_orders(seed=7)
    return orders, truth(orders)


def run_workers(tmp: Path, orders: list[dict[str, object]], workers: int) -> Iterator[Cluster]:
    with cluster(tmp, SETTINGS) as running:
        started = [running.worker().start() for _ in range(workers)]
        for worker in started:
            worker.wait_serving()
        if workers > 1:
            wait_until(lambda: sum(w.sample("crosssell_partitions_assigned") or 0 for w in started) == 4, 60,
                       "partitions split between the workers")
        running.produce((str(o["order_id"]).encode(), orjson.dumps(o), None) for o in orders)
        wait_until(lambda: sum(w.sample("crosssell_orders_total") or 0 for w in started) == len(orders), 90,
                   "every order applied")
        # Lists stop changing once every delta is in; wait for two quiet intervals.
        wait_for_lists_to_settle(started)
        yield running


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory,
               orders_and_truth: tuple[list[dict[str, object]], dict[str, list[tuple[str, int, float, float]]]]
               ) -> Iterator[Cluster]:
    yield from run_workers(tmp_path_factory.mktemp("pairs1"), orders_and_truth[0], workers=1)


def test_recommendations_equal_the_brute_force_truth(
        one_worker: Cluster,
        orders_and_truth: tuple[list[dict[str, object]], dict[str, list[tuple[str, int, float, float]]]]) -> None:
    expected = orders_and_truth[1]
    assert_matches_truth(latest_recommendations(one_worker, len(expected)), expected)


def test_every_recommendation_message_follows_the_schema(one_worker: Cluster) -> None:
    schema = json.loads((REPO / "schemas" / "recommendation.schema.json").read_text())
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    messages = one_worker.read_topic(one_worker.settings.recommendations_topic_for("24h"), 1)
    assert messages
    for message in messages:
        value = message.value()  # type: ignore[attr-defined]
        if value is not None:
            document = orjson.loads(value)
            assert list(validator.iter_errors(document)) == []
            assert document["product_id"] == message.key().decode()  # type: ignore[attr-defined]


def test_recommendations_are_queryable_over_http(
        one_worker: Cluster,
        orders_and_truth: tuple[list[dict[str, object]], dict[str, list[tuple[str, int, float, float]]]]) -> None:
    worker = one_worker.workers[0]
    for product, rows in sorted(orders_and_truth[1].items()):
        assert_scores_match_truth(orjson.loads(worker.get(f"/api/recommendations/{product}")), rows)


def test_top_product_pairs_are_exported_within_the_configured_limit(one_worker: Cluster) -> None:
    metrics = one_worker.workers[0].metrics()
    pairs = [labels for (name, labels) in metrics if name == "crosssell_product_pair_orders"]
    assert 0 < len([p for p in pairs if ("horizon", "24h") in p]) <= one_worker.settings.top_pairs


def test_two_workers_publish_the_same_recommendations_as_the_truth(
        tmp_path_factory: pytest.TempPathFactory,
        orders_and_truth: tuple[list[dict[str, object]], dict[str, list[tuple[str, int, float, float]]]]) -> None:
    orders, expected = orders_and_truth
    for running in run_workers(tmp_path_factory.mktemp("pairs2"), orders, workers=2):
        assert_matches_truth(latest_recommendations(running, len(expected)), expected)
        # Either worker answers for any product: the owner's answer, through a redirect if needed.
        for worker in running.workers:
            for product, rows in sorted(expected.items())[:10]:
                assert_scores_match_truth(orjson.loads(worker.get(f"/api/recommendations/{product}")), rows)
        # Ids with characters that mean something in a URL stay one id through the redirect.
        odd = ["tv/55", "a?b", "100%", "..", "x/../y", "a#b", "é"]
        owners = {owner_partition(product, running.settings.partitions) for product in odd}
        assert len(owners) > 1, "the odd ids should live on more than one pairs partition"
        for worker in running.workers:
            for product in odd:
                answer = orjson.loads(worker.get(recommendations_path(product)))
                assert answer["product_id"] == product, (worker.port, product, answer)
