"""Drop detection in a real worker survives a crash: baselines and alarms are rebuilt from the changelog.

Two hours of orders at 2/s (event times laid out before now), then the
cross-sell rate of the total collapses for ten minutes. The worker must be in
alarm for the total, export it on /metrics, and after a kill a new worker
must hold the same baseline and the same alarm, rebuilt from the fleet test's
table (streams/orders/fleet_detection.py: nothing of the test lives only in memory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.detection import Phase, events
from streams.ops.traffic import Drop, Scenario
from tests.harness.clusters import SHORT_SESSION, cluster
from tests.harness.processes import Worker, wait_for_events, wait_until

HOUR = 3600.0


def total_segment(worker: Worker) -> dict[str, Any]:
    found = orjson.loads(worker.get("/api/detection"))
    (segment,) = [s for s in found["segments"] if (s["kind"], s["value"]) == ("total", "all")]
    return {**segment, "episodes": [e for e in found["episodes"] if e["kind"] == "total"]}


def total_in_alarm(worker: Worker) -> bool:
    """Whether the fleet's test holds an alarm for the total; before its first tested tick it lists no segment."""
    found = orjson.loads(worker.get("/api/detection"))
    return any(s["alarm"] for s in found["segments"] if (s["kind"], s["value"]) == ("total", "all"))


@pytest.mark.slow
def test_a_restarted_worker_keeps_the_baseline_and_the_alarm(tmp_path: Path) -> None:
    drop = Drop("total", "all", 1.0, 0.0, 600.0)
    phases = [Phase("normal", Scenario(2.0), 2 * HOUR), Phase("collapse", Scenario(2.0, drops=(drop,)), 600.0,
                                                            start=2 * HOUR, drop=drop)]
    origin = time.time() - 2 * HOUR - 600 - 60
    with cluster(tmp_path, SHORT_SESSION) as running:
        sent = running.produce((key, value, None) for _, _, key, value in events(phases, origin, seed=3))
        first = running.worker().start().wait_serving()
        wait_for_events([first], sent, timeout=120)
        # The counts reach the test one flush later, through the detection topic.
        wait_until(lambda: total_in_alarm(first), 30, "the alarm of the total")
        before = total_segment(first)
        assert before["alarm"] and before["baseline"] is not None, before
        assert first.sample("crosssell_drop_alarm", segment="total", value="all") == 1.0
        (episode,) = before["episodes"]
        assert 0 < episode["started"] - (origin + 2 * HOUR) <= 120, episode
        first.kill()

        second = running.worker().start().wait_serving()
        wait_for_events([second], sent, timeout=120)
        wait_until(lambda: total_in_alarm(second), 30, "the alarm of the total on the new worker")
        after = total_segment(second)
        assert after["alarm"], after
        assert after["baseline"] == pytest.approx(before["baseline"], abs=0.01)
        # The CUSUMs and alarms come back from the table as they were: the same alarm, from the same tick.
        assert after["episodes"][0]["started"] == episode["started"], (after, episode)
