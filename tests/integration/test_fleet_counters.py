"""Counters summed over a fleet stay true through a rebalance, as Prometheus computes them.

Two workers share the partitions; a real Prometheus scrapes both every second.
One worker is stopped (its partitions move to the other) and started again on
the same address within the rate window (they move back). Throughout, ``sum(rate(crosssell_orders_total[2m]))`` must
stay within 20 % of the rate the traffic was sent at: each counter series
belongs to one orders partition and moves with it, so a moved partition's
history appears on no worker as a jump or a reset. (The window is two minutes:
while partitions move, counting pauses for some seconds and then catches up;
that pause is real, and a window of w seconds shows a pause of p seconds as up
to p/w too low and then, once the pause has left it, too high. A moved history
would add its whole count, thousands of orders.)

A partition that returns to the *same* instance (host:port) within the rate
window would be counted twice by rate() if its series resumed there with what
the other instance counted meanwhile: the label ``assignment`` (when the worker
took the partition) makes each spell of ownership a new series instead.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import (
    SHORT_SESSION,
    Traffic,
    assert_workers_match_truth,
    cluster,
    offline_ledgers,
    read_partitions,
    wait_for_events,
    wait_until,
)
from tests.harness.prometheus import PROMETHEUS, start_prometheus

PARTITIONS = 4
RATE = 50.0
QUERY = 'sum(rate(crosssell_orders_total{job="fleet"}[2m]))'


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not on PATH (Debian package: prometheus)")
def test_the_fleets_order_rate_stays_true_while_partitions_move(tmp_path: Path) -> None:
    env = {"CROSSSELL_PARTITIONS": str(PARTITIONS), **SHORT_SESSION}
    with cluster(tmp_path, env) as running:
        first, second = running.worker().start(), running.worker().start()
        for worker in (first, second):
            worker.wait_serving()
        prometheus = start_prometheus(tmp_path, {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "fleet", "static_configs": [
                {"targets": [f"127.0.0.1:{w.port}" for w in (first, second)]}]}],
        })
        # Late, invalid and duplicate events are not orders: the sent order rate is RATE times the valid share.
        traffic = Traffic(running.bootstrap, running.settings.orders_topic, PARTITIONS, seed=3, rate=RATE,
                          late_share=0.0, invalid_share=0.0, duplicate_share=0.0).start()
        try:
            wait_until(lambda: sum(w.sample("crosssell_partitions_assigned") or 0 for w in (first, second))
                       == PARTITIONS, 60, "the two workers to share the partitions")
            time.sleep(125)  # a full rate window of steady traffic

            readings: list[tuple[str, float]] = []

            def read(phase: str, seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    for sample in prometheus.query(QUERY):
                        readings.append((phase, float(sample["value"][1])))
                    time.sleep(1)

            read("steady", 5)
            second.stop()  # its partitions move to the first worker
            read("after a worker stopped", 45)
            second.start()  # the same instance again: its partitions come back to it
            read("after it started again", 60)
        finally:
            sent = traffic.stop()
            prometheus_process = prometheus.process
            if prometheus_process.poll() is None:
                from streams.ops.supervisor import stop

                stop(prometheus_process, timeout=10)
        wait_for_events([first, second], sent, timeout=90, partitions=PARTITIONS)
        messages = read_partitions(running.bootstrap, running.settings.orders_topic, PARTITIONS, at_least=sent)
        assert_workers_match_truth([first, second], offline_ledgers(running.settings, messages), running.settings)
    off = [(phase, round(value, 1)) for phase, value in readings if abs(value - RATE) > 0.2 * RATE]
    assert len(readings) > 40, readings
    assert not off, f"sum(rate(orders)) strayed more than 20 % from {RATE}/s: {off}"
