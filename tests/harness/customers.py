"""The customer-level truth, straight from the applied orders, written apart from streams/customers/.

For each customer partition (crc32 of the customer id modulo the partitions),
the watermark is the newest event time of its customers' orders, and an event
time is inside the horizon when its bucket (event time floored to the bucket
size) is one of the newest horizon/bucket buckets up to the watermark's.
A customer's orders after a gap of more than the horizon start it afresh.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from streams.settings import Settings

Order = tuple[str, float, str, tuple[str, ...]]  # customer, event time, primary category, categories
WITHIN = {"later_7d": 7 * 86400.0, "later_30d": 30 * 86400.0}


def customer_truth(orders: Iterable[Order], settings: Settings) -> dict[int, dict[str, int]]:
    """Customer partition -> counts per series, from every applied order."""
    size, horizon = settings.customer_bucket_seconds, settings.customer_horizon_seconds
    by_partition: dict[int, dict[str, list[Order]]] = {}
    for order in orders:
        q = zlib.crc32(order[0].encode()) % settings.partitions
        by_partition.setdefault(q, {}).setdefault(order[0], []).append(order)
    truth: dict[int, dict[str, int]] = {}
    for q, customers in by_partition.items():
        watermark = max(o[1] for history in customers.values() for o in history)
        oldest = watermark // size * size - horizon + size

        def inside(at: float, oldest: float = oldest) -> bool:
            return at // size * size >= oldest

        counts = dict.fromkeys(("customers", "multi", "repeat", "single_first", *WITHIN), 0)
        for history in customers.values():
            history.sort(key=lambda o: (o[1], o[3], o[2]))
            # after a gap of more than the horizon the customer starts afresh
            afresh = max((i for i in range(1, len(history)) if history[i][1] > history[i - 1][1] + horizon), default=0)
            del history[:afresh]
            times = [o[1] for o in history]
            last_of_category: dict[str, float] = {}
            for _, at, _, categories in history:
                for category in categories:
                    last_of_category[category] = max(at, last_of_category.get(category, at))
            counts["customers"] += inside(times[-1])
            counts["repeat"] += len(times) >= 2 and inside(times[-2])
            counts["multi"] += sum(inside(at) for at in last_of_category.values()) >= 2
            _, first_at, _, first_categories = history[0]
            if len(first_categories) == 1 and inside(first_at):
                counts["single_first"] += 1
                later = [at for _, at, _, categories in history if set(categories) - set(first_categories)]
                for series, within in WITHIN.items():
                    counts[series] += bool(later) and min(later) - first_at <= within
        truth[q] = counts
    return truth


def worker_partitions(summaries: Iterable[dict[str, Any]]) -> dict[int, dict[str, int]]:
    """Customer partition -> counts per series, from the workers' /api/customers."""
    found: dict[int, dict[str, int]] = {}
    for summary in summaries:
        for partition, data in summary["partitions"].items():
            assert int(partition) not in found, f"customer partition {partition} owned by two workers"
            found[int(partition)] = data["totals"]
    return found
