"""End to end on the embedded broker: known orders in, exact metrics out over HTTP.

The expected numbers are computed here from the orders the test builds, by
plain arithmetic, not by the project's code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.harness import Cluster, Worker, cluster, labelled_sum, wait_until

PARTITIONS = 4
MINUTES = 10
ORDERS_PER_MINUTE = 6


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Expected:
    events: int = 0
    orders: int = 0
    cross_sell_orders: int = 0
    items: int = 0
    revenue: float = 0.0
    cross_sell_revenue: float = 0.0
    late: int = 0
    duplicates: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    by_window: dict[float, list[int]] = field(default_factory=dict)  # start -> [orders, cross-sell]
    watermark: float = 0.0
    dead_letters: list[tuple[bytes, str]] = field(default_factory=list)


def order(order_id: str, t: float, cross_sell: bool, n: int) -> dict[str, object]:
    primary = {"product_id": f"p-main-{n % 5}", "category": "electronics", "unit_price": 50.0 + n % 3,
               "quantity": 1 + n % 2}
    lines = [primary]
    if n % 4 == 0:  # same category, cheaper: upsell, not cross-sell
        lines.append({"product_id": "p-case", "category": "electronics", "unit_price": 5.0, "quantity": 1})
    if cross_sell:
        lines.append({"product_id": f"p-book-{n % 3}", "category": "books", "unit_price": 12.5, "quantity": 2})
    return {"order_id": order_id, "customer_id": f"c-{n}", "occurred_at": rfc3339(t), "currency": "EUR",
            "channel": "web" if n % 2 else "app", "items": lines}


def build_traffic(now: float) -> tuple[list[tuple[bytes | None, bytes, int | None]], Expected]:
    base = (now - 600) // 60 * 60
    expected = Expected()
    events: list[tuple[bytes | None, bytes, int | None]] = []

    def valid(p: int, document: dict[str, object], t: float) -> None:
        raw = orjson.dumps(document)
        events.append((str(document["order_id"]).encode(), raw, p))
        expected.events += 1
        expected.orders += 1
        items = document["items"]
        assert isinstance(items, list)
        categories = {line["category"] for line in items}
        cross = len(categories) > 1
        expected.cross_sell_orders += cross
        expected.items += sum(line["quantity"] for line in items)
        expected.revenue += sum(line["unit_price"] * line["quantity"] for line in items)
        expected.cross_sell_revenue += sum(
            line["unit_price"] * line["quantity"] for line in items if line["category"] != "electronics")
        window = expected.by_window.setdefault(t // 60 * 60, [0, 0])
        window[0] += 1
        window[1] += cross
        expected.watermark = max(expected.watermark, t)

    def rejected(p: int, raw: bytes, reason: str) -> None:
        events.append((b"bad", raw, p))
        expected.events += 1
        expected.invalid[reason] = expected.invalid.get(reason, 0) + 1
        expected.dead_letters.append((raw, reason))

    n = 0
    for p in range(PARTITIONS):
        first = None
        for minute in range(MINUTES):
            for k in range(ORDERS_PER_MINUTE):
                t = base + minute * 60 + 5 + k
                document = order(f"o-{p}-{minute}-{k}", t, cross_sell=(n % 3 == 0), n=n)
                first = first or document
                valid(p, document, t)
                n += 1
        # Out of order but within the grace period: lands in its window.
        t = base + 8 * 60 + 30
        valid(p, order(f"o-{p}-ooo", t, cross_sell=True, n=n), t)
        # Late: its window closed long ago; counted as late, not applied.
        late = order(f"o-{p}-late", base + 60 + 10, cross_sell=True, n=n)
        events.append((b"late", orjson.dumps(late), p))
        expected.events += 1
        expected.late += 1
        # An upstream retry of the first order: counted once.
        assert first is not None
        events.append((str(first["order_id"]).encode(), orjson.dumps(first), p))
        expected.events += 1
        expected.duplicates += 1
        rejected(p, b"{not json", "not_json")
        rejected(p, b"", "empty")
        negative = order(f"o-{p}-neg", base + 9 * 60, cross_sell=False, n=n)
        negative["items"][0]["unit_price"] = -3  # type: ignore[index]
        rejected(p, orjson.dumps(negative), "non_positive_price")
    return events, expected


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Worker, Expected]]:
    tmp: Path = tmp_path_factory.mktemp("e2e")
    with cluster(tmp, {"CROSSSELL_PARTITIONS": str(PARTITIONS)}) as running_cluster:
        events, expected = build_traffic(time.time())
        worker = running_cluster.worker().start().wait_serving()
        running_cluster.produce(events)
        wait_until(lambda: worker.sample("crosssell_events_total") == expected.events, 90,
                   f"worker to read {expected.events} events")
        yield running_cluster, worker, expected


def test_counters_equal_the_orders_sent(running: tuple[Cluster, Worker, Expected]) -> None:
    _, worker, expected = running
    metrics = worker.metrics()
    assert labelled_sum(metrics, "crosssell_orders_total") == expected.orders
    assert labelled_sum(metrics, "crosssell_cross_sell_orders_total") == expected.cross_sell_orders
    assert labelled_sum(metrics, "crosssell_items_total") == expected.items
    assert labelled_sum(metrics, "crosssell_revenue_total") == pytest.approx(expected.revenue)
    assert labelled_sum(metrics, "crosssell_cross_sell_revenue_total") == pytest.approx(expected.cross_sell_revenue)
    assert labelled_sum(metrics, "crosssell_events_late_total") == expected.late
    assert labelled_sum(metrics, "crosssell_events_duplicate_total") == expected.duplicates


def test_invalid_events_are_counted_by_reason(running: tuple[Cluster, Worker, Expected]) -> None:
    _, worker, expected = running
    metrics = worker.metrics()
    for reason, count in expected.invalid.items():
        assert labelled_sum(metrics, "crosssell_events_invalid_total", reason=reason) == count
    assert sum(v for (name, _), v in metrics.items() if name == "crosssell_events_invalid_total") == sum(
        expected.invalid.values())


def test_rolling_rates_cover_the_event_time_windows(running: tuple[Cluster, Worker, Expected]) -> None:
    _, worker, expected = running
    newest = expected.watermark // 60 * 60
    for label, seconds in (("5m", 300), ("1h", 3600), ("24h", 86400)):
        included = [counts for start, counts in expected.by_window.items() if start > newest - seconds]
        orders = sum(c[0] for c in included)
        cross = sum(c[1] for c in included)
        assert worker.sample("crosssell_window_orders", window=label) == orders
        assert worker.sample("crosssell_window_cross_sell_orders", window=label) == cross
        assert worker.sample("crosssell_rate_ratio", window=label) == pytest.approx(cross / orders)
    assert worker.sample("crosssell_event_time_watermark_seconds") == pytest.approx(expected.watermark)


def test_invalid_events_reach_the_dead_letter_topic_with_reason(running: tuple[Cluster, Worker, Expected]) -> None:
    cluster_, _, expected = running
    messages = cluster_.read_topic(cluster_.settings.dead_letter_topic, len(expected.dead_letters))
    got = sorted(((m.value() or b""), dict(m.headers())["crosssell.reason"].decode())  # type: ignore[attr-defined]
                 for m in messages)
    assert got == sorted(expected.dead_letters)
    for message in messages:
        headers = dict(message.headers())  # type: ignore[attr-defined]
        assert headers["crosssell.source.topic"] == cluster_.settings.orders_topic.encode()
        assert int(headers["crosssell.source.offset"]) >= 0
        assert headers["crosssell.detail"]


def test_graceful_restart_keeps_every_count_exact(running: tuple[Cluster, Worker, Expected]) -> None:
    cluster_, worker, expected = running
    def compared(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        # Without ``assignment``: the restarted worker took its partitions at another time.
        return {(name, tuple(label for label in labels if label[0] != "assignment")): value
                for (name, labels), value in worker.metrics().items() if name.startswith("crosssell_")
                and name not in ("crosssell_dead_letters_total", "crosssell_consumer_lag_messages")}

    before = compared(worker)
    worker.stop()
    restarted = cluster_.worker(CROSSSELL_APP_ID=cluster_.base_env["CROSSSELL_APP_ID"]).start().wait_serving()
    wait_until(lambda: restarted.sample("crosssell_events_total") == expected.events, 90, "state recovered")
    # The pairs table recovers on its own, after the orders' state.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: {k: v for k, v in compared(restarted).items() if k in before} == before, 60,
                   "every sample as before the restart")
    after = {k: v for k, v in compared(restarted).items() if k in before}
    assert after == before
