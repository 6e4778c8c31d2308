"""Partitions move between workers of one app id while orders flow; the counts stay exact.

Two cases on one broker with 4 partitions: a worker is SIGKILLed and the
survivor must take over its partitions within a bounded time (then a new
worker joins); and a second worker joins a running one (graceful scale-out).
After the traffic stops, every live worker must export exactly what the
offline ledgers of the partitions it owns say, and together they own all.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import (
    SHORT_SESSION,
    Cluster,
    Traffic,
    Worker,
    assert_workers_match_truth,
    cluster,
    offline_ledgers,
    read_partitions,
    total,
    wait_for_events,
    wait_until,
)

PARTITIONS = 4
RATE = 150.0
TAKEOVER_SECONDS = 45.0
ENV = {"CROSSSELL_PARTITIONS": str(PARTITIONS), **SHORT_SESSION}


def assigned(worker: Worker) -> int:
    return int(worker.sample("crosssell_partitions_assigned") or 0)


def share_all_partitions(workers: list[Worker]) -> bool:
    """Every worker owns some partitions, and together exactly all of them."""
    counts = [assigned(w) for w in workers]
    return all(counts) and sum(counts) == PARTITIONS


def assert_exact(running: Cluster, workers: list[Worker], traffic: Traffic) -> None:
    produced = traffic.stop()
    wait_for_events(workers, produced, timeout=90, partitions=PARTITIONS)
    settings = running.settings
    messages = read_partitions(running.bootstrap, settings.orders_topic, PARTITIONS, at_least=produced)
    assert sum(len(m) for m in messages.values()) == produced
    assert_workers_match_truth(workers, offline_ledgers(settings, messages), settings)


@pytest.mark.slow
def test_the_survivor_takes_over_a_killed_workers_partitions_and_counts_stay_exact(tmp_path: Path) -> None:
    with cluster(tmp_path, ENV) as running:
        survivor = running.worker().start().wait_serving()
        doomed = running.worker().start().wait_serving()
        wait_until(lambda: share_all_partitions([survivor, doomed]), 60, "two workers share the partitions")
        traffic = Traffic(running.bootstrap, running.settings.orders_topic, PARTITIONS, seed=5, rate=RATE).start()
        wait_until(lambda: (total([survivor, doomed], "crosssell_orders_total") or 0) > 300, 60, "orders flow")

        doomed.kill()
        killed = time.monotonic()
        wait_until(lambda: assigned(survivor) == PARTITIONS, TAKEOVER_SECONDS,
                   f"the survivor owns all {PARTITIONS} partitions within {TAKEOVER_SECONDS:g}s of the kill")
        print(f"takeover after {time.monotonic() - killed:.1f}s")

        newcomer = running.worker().start().wait_serving()
        wait_until(lambda: share_all_partitions([survivor, newcomer]), 60, "the new worker is given partitions")
        time.sleep(2)  # traffic on the new assignment
        assert_exact(running, [survivor, newcomer], traffic)


@pytest.mark.slow
def test_a_second_worker_joining_splits_the_partitions_and_counts_stay_exact(tmp_path: Path) -> None:
    with cluster(tmp_path, ENV) as running:
        first = running.worker().start().wait_serving()
        wait_until(lambda: assigned(first) == PARTITIONS, 60, "the first worker owns every partition")
        traffic = Traffic(running.bootstrap, running.settings.orders_topic, PARTITIONS, seed=6, rate=RATE,
                          explicit_partitions=False).start()
        wait_until(lambda: (first.sample("crosssell_orders_total") or 0) > 300, 60, "orders flow")

        second = running.worker().start().wait_serving()
        wait_until(lambda: share_all_partitions([first, second]), 60, "the partitions are split between two workers")
        time.sleep(2)
        assert_exact(running, [first, second], traffic)
