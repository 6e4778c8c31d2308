"""SIGKILL the worker at random points while orders of returning customers flow; the customer counts stay exact.

Restarts alternate between a fresh data directory (the customer table is
rebuilt from its changelog on the broker) and the killed worker's own (RocksDB
reopened, only the changelog's tail read), so both recoveries are exercised.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import pytest

from tests.harness import (
    SHORT_SESSION,
    Traffic,
    Worker,
    cluster,
    offline_ledgers,
    read_partitions,
    wait_for_events,
    wait_until,
)
from tests.harness.customers import customer_truth, worker_partitions

PARTITIONS = 4
KILLS = 3
ENV = {
    "CROSSSELL_PARTITIONS": str(PARTITIONS),
    "CROSSSELL_CUSTOMERS": "true",
    "CROSSSELL_CUSTOMER_MAX_CATEGORIES": "12",
    # Frequent, small flushes: more kills land between a flush's steps.
    "CROSSSELL_FLUSH_INTERVAL_SECONDS": "200ms",
    "CROSSSELL_FLUSH_MAX_EVENTS": "97",
    **SHORT_SESSION,
}


def kill_at_random_point(worker: Worker, rng: random.Random) -> None:
    if rng.random() < 0.3:
        time.sleep(rng.uniform(0.2, 6.0))  # starting, joining the group or recovering the tables
    else:
        wait_until(lambda: worker.sample("crosssell_partitions_assigned") == PARTITIONS, 90,
                   "the worker to own every partition")
        time.sleep(rng.uniform(0.0, 3.0))
    worker.assert_alive()
    worker.kill()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 17])
def test_sigkill_at_random_points_keeps_customer_counts_exact(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with cluster(tmp_path, ENV) as running:
        settings = running.settings
        data_dir = str(tmp_path / "kept")
        worker = running.worker(CROSSSELL_DATA_DIR=data_dir).start()
        traffic = Traffic(running.bootstrap, settings.orders_topic, PARTITIONS, seed=seed, rate=120.0,
                          customers=300, return_rate=0.6).start()
        for kill in range(KILLS):
            kill_at_random_point(worker, rng)
            worker = (running.worker(CROSSSELL_DATA_DIR=data_dir) if kill % 2 else running.worker()).start()
        time.sleep(rng.uniform(1.0, 4.0))
        produced = traffic.stop()
        worker.wait_serving()
        wait_for_events([worker], produced, timeout=120, partitions=PARTITIONS)

        messages = read_partitions(running.bootstrap, settings.orders_topic, PARTITIONS, at_least=produced)
        applied = [o for ledger in offline_ledgers(settings, messages).values() for o in ledger.customer_orders]
        truth = customer_truth(applied, settings)
        assert sum(t["repeat"] for t in truth.values()) > 20, truth

        def found() -> dict[int, dict[str, int]]:
            return worker_partitions([orjson.loads(worker.get("/api/customers"))])

        deadline = time.monotonic() + 60
        while found() != truth and time.monotonic() < deadline:
            time.sleep(0.5)
        assert found() == truth
        worker.assert_alive()
