"""Recommendation hit rate: published lists held per worker, and orders checked against them."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from orders import checked_order
from prometheus_client import CollectorRegistry

from streams.orders.config import window_config
from streams.orders.contract import Item
from streams.orders.hit_rate import PublishedLists, hit_figures, listed, published_list
from streams.orders.ledger import PartitionLedger
from streams.orders.snapshot import Snapshot, take_snapshot
from streams.orders.windows import WindowTotals, merge
from streams.pairs.recommendations import Companion, recommendation_message
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings

T0 = 1_800_000_000.0
SETTINGS = Settings(rolling_views=(300.0, 3600.0), retention_seconds=7200.0, pair_horizons=())


def message(product: str, at: float, *companions: tuple[str, float]) -> bytes:
    return orjson.dumps(recommendation_message(
        product, "24h", datetime.fromtimestamp(at, UTC),
        [Companion(c, 5, confidence, 2.0) for c, confidence in companions],
        orders_with_product=10, total_orders=100, exact=True, error_bound=0))


def test_a_published_message_becomes_a_list_with_its_promise_and_best_confidence() -> None:
    found = published_list(message("tv", T0, ("cable", 0.5), ("mount", 0.2)))
    assert found is not None
    product, version = found
    assert (product, version.computed_at, version.companions) == ("tv", T0, frozenset({"cable", "mount"}))
    assert version.promised == pytest.approx(1 - 0.5 * 0.8)
    assert version.best_confidence == 0.5
    for garbage in (b"nope", b"{}", message("tv", T0)):  # no companions: nothing to check against
        assert published_list(garbage) is None


@pytest.mark.parametrize(("products", "hit"), [(("tv",), 0), (("tv", "cable"), 1), (("tv", "mount", "cable"), 1),
                                               (("tv", "pan"), 0)])
def test_an_order_is_a_hit_when_it_holds_at_least_one_listed_companion(products: tuple[str, ...],
                                                                       hit: int) -> None:
    version = listed(T0, [("cable", 0.5), ("mount", 0.2)])
    assert hit_figures(version, products) == (1, hit, pytest.approx(0.6), 0.5)


def test_an_order_uses_the_newest_list_computed_at_or_before_its_event_time() -> None:
    lists = PublishedLists(10)
    old, new = listed(T0, [("cable", 0.5)]), listed(T0 + 60, [("mount", 0.3)])
    lists.publish("tv", new)
    lists.publish("tv", old)
    assert lists.at("tv", T0 - 1) is None
    assert lists.at("tv", T0 + 59) == old
    assert lists.at("tv", T0 + 60) == new
    lists.publish("tv", listed(T0 + 120, [("pan", 0.1)]))  # two versions kept: the oldest goes
    assert lists.at("tv", T0 + 59) is None
    lists.withdraw("tv")
    assert lists.at("tv", T0 + 500) is None


def test_beyond_capacity_the_least_recently_used_product_is_evicted_and_counted() -> None:
    lists = PublishedLists(2)
    for product in ("a", "b"):
        lists.publish(product, listed(T0, [("x", 0.1)]))
    assert lists.at("a", T0) is not None  # a is used: b is now the least recently used
    lists.publish("c", listed(T0, [("x", 0.1)]))
    assert set(lists.lists) == {"a", "c"} and lists.evicted == 1
    assert lists.at("b", T0) is None


def applied_ledger(lists: PublishedLists | None) -> PartitionLedger:
    ledger = PartitionLedger(0, window_config(SETTINGS))
    ledger.lists = lists
    tv, cable, pan, mount = (Item("tv", "electronics", 400.0, 1), Item("cable", "cables", 10.0, 1),
                             Item("pan", "kitchen", 30.0, 1), Item("mount", "electronics", 40.0, 1))
    orders = [(tv, cable, "control"), (tv, pan, "control"), (tv, mount, "treatment"), (pan, cable, "treatment")]
    for n, (primary, other, variant) in enumerate(orders):
        ledger.apply(n, checked_order(primary, other, order_id=f"o{n}", occurred_at=T0 + n, variant=variant),
                     T0 + n)
    return ledger


def test_the_ledger_counts_hits_by_variant_only_for_primaries_with_a_list() -> None:
    lists = PublishedLists(10)
    lists.publish("tv", listed(T0 - 60, [("cable", 0.5), ("mount", 0.2)]))
    [window] = applied_ledger(lists).windows.values()
    hits = window.totals.recommendation_hits
    assert hits == {"control": [2, 1, pytest.approx(1.2), 1.0], "treatment": [1, 1, pytest.approx(0.6), 0.5]}
    assert WindowTotals.from_dict(orjson.loads(orjson.dumps(window.totals.to_dict()))).recommendation_hits == hits
    assert merge([window.totals, window.totals]).recommendation_hits["control"] == [4, 2, pytest.approx(2.4), 2.0]
    [off] = applied_ledger(None).windows.values()
    assert off.totals.recommendation_hits == {}


def test_the_hit_rate_is_in_the_api_and_its_sums_on_metrics() -> None:
    lists = PublishedLists(10)
    lists.publish("tv", listed(T0 - 60, [("cable", 0.5), ("mount", 0.2)]))
    ledger = applied_ledger(lists)

    def snapshot() -> Snapshot:
        taken = take_snapshot([ledger], SETTINGS, dead_letters={})
        taken.lists_held, taken.lists_evicted = 1, 0
        return taken

    report = snapshot().hit_rate_json(SETTINGS)
    assert report["views"]["5m"]["total"] == {"listed_orders": 3, "hit_orders": 2, "hit_rate": pytest.approx(2 / 3),
                                              "promised": pytest.approx(0.6), "best_confidence": 0.5}
    assert report["views"]["5m"]["variants"]["control"]["hit_rate"] == 0.5
    registry = CollectorRegistry()
    registry.register(CrossSellCollector(snapshot, SETTINGS))
    sample = registry.get_sample_value
    assert sample("crosssell_recommendation_listed_orders", {"window": "1h", "variant": "control"}) == 2
    assert sample("crosssell_recommendation_hit_orders", {"window": "1h", "variant": "treatment"}) == 1
    assert sample("crosssell_recommendation_promised", {"window": "1h", "variant": "control"}) == pytest.approx(1.2)
    assert sample("crosssell_recommendation_best_confidence", {"window": "5m", "variant": "treatment"}) == 0.5
    assert sample("crosssell_recommendation_lists_held") == 1
    assert sample("crosssell_recommendation_lists_evicted_total") == 0
