"""SIGKILL the worker while its flush waits for a slow broker and applying is paused; the counts stay exact.

The orders agent hands a flush to the producer and goes on applying while the
broker acknowledges it, up to 2 x CROSSSELL_FLUSH_MAX_EVENTS pending events;
then it waits for that flush. Here every byte between worker and broker is
delayed (the TCP proxy of tests/tcp_proxy.py in slow mode), so the flush waits
long and the agent reaches that pause. The worker is killed the moment its
/metrics shows both (a flush outstanding, the pending events at twice the
limit), restarted on a healthy link, and must then export exactly the offline
truth of every event the orders topic holds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import (
    SHORT_SESSION,
    Traffic,
    assert_workers_match_truth,
    offline_ledgers,
    proxied_cluster,
    read_partitions,
    wait_for_events,
    wait_until,
)

PARTITIONS = 2
FLUSH_MAX_EVENTS = 40
LATENCY = 0.4  # seconds each way: a flush waits at least two round trips (its keys, then its meta key)
RATE = 300.0  # orders/s: far more than a flush every ~2 s lets through at 2 x FLUSH_MAX_EVENTS
ENV = {
    "CROSSSELL_PARTITIONS": str(PARTITIONS),
    "CROSSSELL_FLUSH_MAX_EVENTS": str(FLUSH_MAX_EVENTS),
    "CROSSSELL_FLUSH_INTERVAL_SECONDS": "200ms",
    **SHORT_SESSION,
}


@pytest.mark.slow
def test_sigkill_while_a_flush_waits_for_a_slow_broker_and_applying_is_paused_keeps_every_count_exact(
        tmp_path: Path) -> None:
    with proxied_cluster(tmp_path, ENV) as (running, proxy):
        settings = running.settings
        worker = running.worker().start().wait_serving()
        wait_until(lambda: worker.sample("crosssell_partitions_assigned") == PARTITIONS, 60,
                   "the worker owns every partition")
        traffic = Traffic(running.bootstrap, settings.orders_topic, PARTITIONS, seed=53, rate=RATE).start()
        wait_until(lambda: (worker.sample("crosssell_orders_total") or 0) > 100, 60, "orders flow")
        proxy.slow(LATENCY)

        paused: list[tuple[float | None, float | None]] = []

        def flush_outstanding_and_applying_paused() -> bool:
            worker.assert_alive()
            state = (worker.sample("crosssell_flush_outstanding"), worker.sample("crosssell_flush_pending_events"))
            paused.append(state)
            return state[0] == 1 and (state[1] or 0) >= 2 * FLUSH_MAX_EVENTS

        wait_until(flush_outstanding_and_applying_paused, 60,
                   "a flush outstanding with 2 x CROSSSELL_FLUSH_MAX_EVENTS pending", interval=0.05)
        worker.kill()  # within one scrape of seeing it: the flush waits for two round trips of 2 x LATENCY

        proxy.slow(0.0)
        time.sleep(2.0)  # more orders while no worker runs
        delivered = traffic.stop()
        worker = running.worker().start().wait_serving()
        messages = read_partitions(running.bootstrap, settings.orders_topic, PARTITIONS, at_least=delivered)
        in_topic = sum(len(m) for m in messages.values())
        assert in_topic >= delivered  # a produce request retried over the slow link may be stored twice
        wait_for_events([worker], in_topic, timeout=120, partitions=PARTITIONS)
        assert_workers_match_truth([worker], offline_ledgers(settings, messages), settings)
