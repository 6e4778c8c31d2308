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

from bench.contenders.progress import Progress, common_arguments


class Order(faust.Record, serializer="json", isodates=True):
    order_id: str
    customer_id: str
    occurred_at: datetime
    currency: str
    items: list[dict[str, Any]]


def main() -> None:
    args = common_arguments(__doc__ or "").parse_args()
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=args.data_dir,
        web_host="127.0.0.1", web_bind="127.0.0.1", web_port=args.web_port,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
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

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def report() -> None:
        progress.write()

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
