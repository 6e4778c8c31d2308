"""Customer-level counts end to end: orders with returning customers, one worker and two, exact against the truth.

The truth (tests/harness/customers.py) folds the orders the orders ledger
applied (valid, on time, not duplicates: an offline replay of the orders topic)
per customer, apart from streams/customers/. The horizon is two minutes of
one-minute buckets, so the run sees buckets come and go.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.harness import SHORT_SESSION, Traffic, cluster, offline_ledgers, read_partitions, wait_for_events
from tests.harness.customers import customer_truth, worker_partitions

PARTITIONS = 4
ENV = {
    "CROSSSELL_PARTITIONS": str(PARTITIONS),
    "CROSSSELL_CUSTOMERS": "true",
    "CROSSSELL_CUSTOMER_HORIZON_SECONDS": "2m",
    "CROSSSELL_CUSTOMER_BUCKET_SECONDS": "1m",
    # the traffic has 12 categories: every customer's categories are kept by name
    "CROSSSELL_CUSTOMER_MAX_CATEGORIES": "12",
    "CROSSSELL_FLUSH_INTERVAL_SECONDS": "300ms",
    **SHORT_SESSION,
}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_customer_counts_equal_the_truth(tmp_path: Path, workers: int) -> None:
    with cluster(tmp_path, ENV) as running:
        settings = running.settings
        started = [running.worker().start() for _ in range(workers)]
        for worker in started:
            worker.wait_serving()
        traffic = Traffic(running.bootstrap, settings.orders_topic, PARTITIONS, seed=workers, rate=150.0,
                          limit=4000, customers=400, return_rate=0.6).start()
        produced = traffic.wait().stop()
        wait_for_events(started, produced, timeout=120, partitions=PARTITIONS)
        messages = read_partitions(running.bootstrap, settings.orders_topic, PARTITIONS, at_least=produced)
        applied = [o for ledger in offline_ledgers(settings, messages).values() for o in ledger.customer_orders]
        truth = customer_truth(applied, settings)
        assert sum(t["repeat"] for t in truth.values()) > 50, truth  # returning customers did return
        assert sum(t["later_7d"] for t in truth.values()) > 10, truth

        def found() -> dict[int, dict[str, int]]:
            return worker_partitions(orjson.loads(w.get("/api/customers")) for w in started)

        # the customer partitions count what the orders partitions' last flushes sent
        deadline = time.monotonic() + 60
        while found() != truth and time.monotonic() < deadline:
            time.sleep(0.5)
        assert found() == truth
        customers = sum(t["customers"] for t in truth.values())
        assert sum((w.sample("crosssell_customers", horizon="2m") or 0.0) for w in started) == customers
        # the live page's source, /api/summary, carries the same counts
        summaries = [orjson.loads(w.get("/api/summary")) for w in started]
        assert sum(s["customers"]["totals"]["customers"] for s in summaries) == customers
        for worker in started:
            worker.assert_alive()
