"""bench.growth: the orders of each point are what the point says, and the memory model is the fitted line."""

from __future__ import annotations

import time

import pytest

from bench.growth import basket_orders, dedup_model, orders_for, shape_for
from bench.load import order_maker
from streams.orders.contract import Order, decode_order


@pytest.mark.parametrize("size", [1, 2, 7, 50])
def test_every_order_of_a_basket_point_has_exactly_that_many_distinct_valid_lines(size: int) -> None:
    now = time.time()
    values = basket_orders(order_maker(3, shape_for(20_000)), 50, size, now - 60, now)
    for value in values:
        order = decode_order(value)
        assert isinstance(order, Order), order
        assert len({item.product_id for item in order.items}) == len(order.items) == size


def test_a_catalogue_point_draws_from_that_many_products() -> None:
    values, partitions = orders_for("catalogue", 1_000, 3000, 1, time.time())
    products = {p for v in values if isinstance(o := decode_order(v), Order) for p in (i.product_id for i in o.items)}
    assert partitions == 4
    assert 100 < len(products) <= 1_000


def test_the_dedup_model_is_the_line_through_the_smallest_and_largest_point() -> None:
    rows = [{"ids": 1_000_000, "rss_growth_mb": 110.0}, {"ids": 10_000, "rss_growth_mb": 11.0},
            {"ids": 100_000, "rss_growth_mb": 20.0}]
    per_id, fixed = dedup_model(rows)
    assert per_id == pytest.approx(99 * 1024 * 1024 / 990_000)
    assert fixed + per_id * 10_000 == pytest.approx(11.0 * 1024 * 1024)
