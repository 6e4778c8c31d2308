"""CROSSSELL_FAST_PATH=false: the worker on plain Faust (one message per order) counts exactly too.

The fast path (streams/runtime/fastpath.py) relies on Faust internals pinned by
streams/runtime/fence.py; when an upgrade breaks the pin, this is the path to
run on until the fast path is re-checked, so it stays tested.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import (
    Traffic,
    assert_workers_match_truth,
    cluster,
    offline_ledgers,
    read_partitions,
    wait_for_events,
)

PARTITIONS = 2


def test_a_worker_on_plain_faust_counts_every_order_exactly(tmp_path: Path) -> None:
    env = {"CROSSSELL_PARTITIONS": str(PARTITIONS), "CROSSSELL_FAST_PATH": "false"}
    with cluster(tmp_path, env) as running:
        settings = running.settings
        assert not settings.fast_path
        worker = running.worker().start().wait_serving()
        traffic = Traffic(running.bootstrap, settings.orders_topic, PARTITIONS, seed=5, rate=300.0, limit=1500)
        produced = traffic.start().wait().stop()
        wait_for_events([worker], produced, timeout=120, partitions=PARTITIONS)
        messages = read_partitions(running.bootstrap, settings.orders_topic, PARTITIONS, at_least=produced)
        assert_workers_match_truth([worker], offline_ledgers(settings, messages), settings)
