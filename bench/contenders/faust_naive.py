"""Contender (3): cross-sell monitoring as Faust's documentation teaches it.

A JSON-decoded stream; per event, windowed tables updated in place
(``table[key] += value`` on ``Table(...).tumbling(60, expires=...)``), keyed by
the order's primary category, windows relative to the event's own time
(``relative_to_field``): orders, revenue and, for cross-sell orders,
cross-sell orders per one-minute window. Settings as contender (2).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import faust

from bench.contenders.progress import Progress, common_arguments, faust_app, run_faust


class Order(faust.Record, serializer="json", isodates=True):
    order_id: str
    customer_id: str
    occurred_at: datetime
    currency: str
    items: list[dict[str, Any]]


def main() -> None:
    args = common_arguments(__doc__ or "").parse_args()
    app = faust_app(args)
    orders_topic = app.topic(args.topic, value_type=Order)
    window = timedelta(minutes=1)
    keep = timedelta(hours=1)
    occurred_at = cast(Any, Order.occurred_at)  # the field descriptor, as Faust's docs pass it
    orders = app.Table("orders", default=int).tumbling(window, expires=keep).relative_to_field(occurred_at)
    revenue = app.Table("revenue", default=float).tumbling(window, expires=keep).relative_to_field(occurred_at)
    cross_sell = app.Table("cross_sell", default=int).tumbling(window, expires=keep).relative_to_field(occurred_at)
    progress = Progress(args.progress, args.events)

    @app.agent(orders_topic)
    async def count_cross_sell(stream: faust.StreamT[Order]) -> None:
        async for order in stream:
            values = [item["unit_price"] * item["quantity"] for item in order.items]
            primary = order.items[values.index(max(values))]["category"]
            orders[primary] += 1
            revenue[primary] += sum(values)
            if any(item["category"] != primary for item in order.items):
                cross_sell[primary] += 1
            progress.seen()

    run_faust(app, progress)


if __name__ == "__main__":
    main()
