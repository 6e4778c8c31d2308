"""Helpers for tests that run the real thing: Tansu, worker processes, HTTP scrapes.

Every process started here is owned by the test that started it and stopped
by it (streams/ops/supervisor.py); every address is 127.0.0.1 with a free port.
By concern: ``processes`` (workers, waits), ``clusters`` (a broker and its
settings), ``traffic`` (a producer thread), ``truth`` (the offline replay the
workers must match).
"""

from tests.harness.clusters import SHORT_SESSION, Cluster, base_environment, cluster, proxied_cluster
from tests.harness.processes import (
    REPO,
    Samples,
    Worker,
    labelled_sum,
    total,
    unique,
    wait_for_events,
    wait_for_lists_to_settle,
    wait_until,
)
from tests.harness.traffic import Traffic
from tests.harness.truth import (
    NOT_COMPARED,
    Record,
    assert_workers_match_truth,
    crosssell_samples,
    expected_metrics,
    metric_differences,
    offline_ledgers,
    read_partitions,
)

__all__ = [
    "NOT_COMPARED",
    "REPO",
    "SHORT_SESSION",
    "Cluster",
    "Record",
    "Samples",
    "Traffic",
    "Worker",
    "assert_workers_match_truth",
    "base_environment",
    "cluster",
    "crosssell_samples",
    "expected_metrics",
    "labelled_sum",
    "metric_differences",
    "offline_ledgers",
    "proxied_cluster",
    "read_partitions",
    "total",
    "unique",
    "wait_for_events",
    "wait_for_lists_to_settle",
    "wait_until",
]
