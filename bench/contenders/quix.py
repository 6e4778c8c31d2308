"""The peer framework: Quix Streams on the same topic, in two forms (``--mode``).

- ``stateless``: decode each order (Quix's JSON deserializer), pick its primary
  item (highest unit_price x quantity, ties to the smaller product_id, then
  category) and flag it cross-sell when another line has another category.
- ``windowed``: the same, then Quix's own windowed aggregation: orders grouped
  by primary category (``group_by``, through Quix's repartition topic), a
  one-minute tumbling window on the order's event time, count and revenue sum
  per window (``Count``, ``Sum``), with its RocksDB state and changelog topic.

Quix Streams is a benchmark-only dependency (the ``bench`` extra). On the
embedded broker (Tansu 0.6.0) DescribeConfigs returns no entries, and Quix
derives the retention of its changelog and repartition topics from the source
topic's ``retention.ms`` (a KeyError without it). ``BrokerDefaultsAdmin`` (a
``TopicAdmin`` passed through Quix's own ``topic_manager`` option) fills in
what a Kafka broker reports by default for a topic that has no such entry;
everything else is Quix's defaults except what the embedded broker and a fresh
group need (short session timeout, earliest offset reset, a private state
directory).
"""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import datetime, timedelta
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum
from quixstreams.models import TimestampType, TopicAdmin, TopicConfig, TopicManager

from bench.contenders.progress import Progress, common_arguments

# What a Kafka broker reports for a topic created without these configs (Kafka's defaults).
KAFKA_TOPIC_DEFAULTS = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}
WINDOW = timedelta(minutes=1)
GRACE = timedelta(hours=1)  # as the naive Faust contender's windowed tables: kept an hour


class BrokerDefaultsAdmin(TopicAdmin):
    """A topic admin that completes a broker's topic description with Kafka's defaults.

    Tansu 0.6.0 answers DescribeConfigs with no entries; Quix needs
    ``retention.ms`` of a source topic to derive its changelog and repartition
    topics from it.
    """

    def inspect_topics(self, topic_names: list[str], timeout: float = 30) -> dict[str, TopicConfig | None]:
        configs = super().inspect_topics(topic_names, timeout=timeout)
        for config in configs.values():
            if config is not None:
                for key, value in KAFKA_TOPIC_DEFAULTS.items():
                    config.extra_config.setdefault(key, value)
        return configs


def classify(order: dict[str, Any]) -> dict[str, Any]:
    """Primary item, primary category, cross-sell flag and revenue of one decoded order."""
    items = order["items"]
    primary = min(items, key=lambda i: (-i["unit_price"] * i["quantity"], i["product_id"], i["category"]))
    category = primary["category"]
    return {
        "order_id": order["order_id"],
        "primary_product": primary["product_id"],
        "primary_category": category,
        "cross_sell": any(item["category"] != category for item in items),
        "revenue": sum(item["unit_price"] * item["quantity"] for item in items),
    }


def event_time_ms(value: Any, headers: Any, timestamp: int, timestamp_type: TimestampType) -> int:
    """The order's occurred_at in epoch milliseconds: windows on event time, as the worker's."""
    return int(datetime.fromisoformat(value["occurred_at"]).timestamp() * 1000)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _write_every_second(progress: Progress) -> None:
    stop = threading.Event()
    while not stop.wait(1.0):
        progress.write()


def main() -> None:
    parser = common_arguments(__doc__ or "")
    parser.add_argument("--mode", choices=("stateless", "windowed"), default="stateless")
    args = parser.parse_args()
    progress = Progress(args.progress, args.events)
    app = build(args, progress)
    threading.Thread(target=_write_every_second, args=(progress,), daemon=True).start()
    signal.signal(signal.SIGTERM, _exit)
    app.run()


def build(args: argparse.Namespace, progress: Progress) -> Application:
    admin = BrokerDefaultsAdmin(broker_address=args.bootstrap)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.data_dir or None,
        loglevel="WARNING",
        # As the other contenders: short group timeouts, or joining takes ~a minute on Tansu.
        consumer_extra_config={"session.timeout.ms": 10000, "heartbeat.interval.ms": 3000},
        topic_manager=TopicManager(topic_admin=admin, consumer_group=args.group),
    )

    def seen(_value: Any) -> None:
        progress.seen()

    if args.mode == "stateless":
        topic = app.topic(args.topic, value_deserializer="json")
        app.dataframe(topic).apply(classify).update(seen)
        return app

    def late(*_args: Any) -> bool:
        progress.seen()  # dropped as late: done with it
        return False  # without a log line per late event

    topic = app.topic(args.topic, value_deserializer="json", timestamp_extractor=event_time_ms)
    by_category = app.dataframe(topic).apply(classify).group_by("primary_category")
    windows = by_category.tumbling_window(WINDOW, grace_ms=GRACE, on_late=late)
    windows.agg(orders=Count(), revenue=Sum("revenue")).current().update(seen)
    return app


if __name__ == "__main__":
    main()
