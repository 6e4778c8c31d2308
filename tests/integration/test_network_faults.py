"""The network between worker and broker fails; the worker rides it out and the counts stay exact.

The broker advertises the address of a TCP proxy (tests/tcp_proxy.py), so every
Kafka connection of the worker and of the test's producer goes through it.
While orders flow, the proxy drops every connection and then blocks: new
connections are held without being forwarded (as behind a dead link) or reset
at once (as by a host that is down). When it heals, the worker must reconnect
by itself, catch up, and export exactly the offline truth; it never exits.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import (
    SHORT_SESSION,
    Traffic,
    Worker,
    assert_workers_match_truth,
    offline_ledgers,
    proxied_cluster,
    read_partitions,
    wait_for_events,
    wait_until,
)

PARTITIONS = 4
RATE = 100.0
ENV = {"CROSSSELL_PARTITIONS": str(PARTITIONS), **SHORT_SESSION}


def stay_alive(worker: Worker, seconds: float) -> None:
    """The worker process lives (and answers /metrics) for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worker.assert_alive()
        time.sleep(1)


def outage_then_exact_counts(tmp_path: Path, seconds: float, refuse: bool, seed: int) -> None:
    with proxied_cluster(tmp_path, ENV) as (running, proxy):
        settings = running.settings
        worker = running.worker().start().wait_serving()
        wait_until(lambda: worker.sample("crosssell_partitions_assigned") == PARTITIONS, 60,
                   "the worker owns every partition")
        traffic = Traffic(running.bootstrap, settings.orders_topic, PARTITIONS, seed=seed, rate=RATE).start()
        wait_until(lambda: (worker.sample("crosssell_orders_total") or 0) > 200, 60, "orders flow")

        with proxy.outage(refuse=refuse):
            stay_alive(worker, 5)  # what the worker had fetched before the drop is processed by now
            stalled = worker.sample("crosssell_events_total")
            assert stalled is not None, "/metrics must answer during the outage"
            stay_alive(worker, seconds - 5)
            # Proof that the proxy is the worker's only way to the broker.
            assert worker.sample("crosssell_events_total") == stalled, "events were read during the outage"
        assert proxy.stats.dropped > 0

        stay_alive(worker, 3)  # traffic after the heal
        delivered = traffic.stop()
        messages = read_partitions(running.bootstrap, settings.orders_topic, PARTITIONS, at_least=delivered)
        in_topic = sum(len(m) for m in messages.values())
        # A produce request cut by the drop can be retried and stored twice: the topic is the truth.
        assert in_topic >= delivered
        wait_for_events([worker], in_topic, timeout=120, partitions=PARTITIONS)
        assert_workers_match_truth([worker], offline_ledgers(settings, messages), settings)
        worker.assert_alive()


@pytest.mark.slow
def test_the_worker_survives_a_30s_dead_link_and_catches_up_exactly(tmp_path: Path) -> None:
    outage_then_exact_counts(tmp_path, seconds=30, refuse=False, seed=41)


@pytest.mark.slow
def test_the_worker_survives_refused_connections_and_catches_up_exactly(tmp_path: Path) -> None:
    outage_then_exact_counts(tmp_path, seconds=10, refuse=True, seed=43)
