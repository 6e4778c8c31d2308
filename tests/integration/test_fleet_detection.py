"""Two workers run one drop test for the fleet, and it survives stopping the worker that runs it.

Two hours of orders at 2/s laid out before now, then the cross-sell rate of the
total collapses, read as a backlog (a fast event-time replay) by two workers
on the embedded broker. Exactly one worker (the owner of the detection topic's
one partition) exports the drop test; its alarms are those of one test over
every order (streams.orders.detection run in this process on the same events),
within a tick or two, with no order left out. Killed, its test moves to the
other worker, whole: the same baseline and alarm, and it goes on testing the
orders that come after.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.detection import Phase, events
from streams.ops.traffic import Drop, Scenario
from streams.orders.contract import Order, decode_order
from streams.orders.detection import DetectionConfig, DropDetector
from streams.orders.facts import order_facts
from tests.harness.clusters import SHORT_SESSION, cluster
from tests.harness.processes import Worker, wait_for_events, wait_until

HOUR = 3600.0
PARTITIONS = 4
TICK = DetectionConfig().tick


def detection(worker: Worker) -> dict[str, Any]:
    return dict(orjson.loads(worker.get("/api/detection")))


def total_alarm(found: dict[str, Any]) -> bool:
    return any(s["alarm"] for s in found["segments"] if (s["kind"], s["value"]) == ("total", "all"))


def settled_until(worker: Worker) -> float:
    """The owner's tested-until once two reads a second apart agree (its last status messages applied)."""
    seen: list[float | None] = [None]

    def still() -> bool:
        now = detection(worker)["detected_until"]
        same = now is not None and now == seen[0]
        seen[0] = now
        return same

    wait_until(still, 60, "the fleet's test standing still", interval=1.0)
    assert seen[0] is not None
    return seen[0]


def one_test(orders: list[tuple[float, bytes, bytes, int]]) -> DropDetector:
    """The drop test over every order at once: what one worker owning every partition runs."""
    detector = DropDetector(DetectionConfig())
    newest = [0.0] * PARTITIONS
    for at, _, value, partition in orders:
        decoded = decode_order(value)
        assert isinstance(decoded, Order)
        facts = order_facts(decoded)
        detector.observe(facts.event_time, facts.primary_category, facts.channel, facts.variant, facts.cross_sell)
        newest[partition] = max(newest[partition], at)
    detector.advance(min(newest))
    return detector


@pytest.mark.slow
def test_two_workers_run_one_drop_test_that_survives_its_owner(tmp_path: Path) -> None:
    drop = Drop("total", "all", 1.0, 0.0, 900.0)
    phases = [Phase("normal", Scenario(2.0), 2 * HOUR),
              Phase("collapse", Scenario(2.0, drops=(drop,)), 900.0, start=2 * HOUR, drop=drop)]
    origin = time.time() - 2 * HOUR - 900 - 60
    orders = [(at, key, value, zlib.crc32(key) % PARTITIONS) for at, _, key, value in events(phases, origin, seed=5)]
    cut = origin + 2 * HOUR + 600  # ten minutes into the collapse; the rest comes after the owner is killed
    first = [o for o in orders if o[0] < cut]
    expected = one_test(first)
    collapse = origin + 2 * HOUR
    (reference,) = [e for e in expected.episodes if e.kind == "total"]
    assert 0 < reference.started - collapse < 120, reference

    with cluster(tmp_path, {**SHORT_SESSION, "CROSSSELL_PARTITIONS": str(PARTITIONS)}) as running:
        sent = running.produce((key, value, partition) for _, key, value, partition in first)
        workers = [running.worker().start(), running.worker().start()]
        for worker in workers:
            worker.wait_serving()
        wait_for_events(workers, sent, timeout=180, partitions=PARTITIONS)
        wait_until(lambda: any(w.sample("crosssell_drop_owner") == 1 and total_alarm(detection(w)) for w in workers),
                   60, "one worker in alarm for the total")
        (owner,) = [w for w in workers if w.sample("crosssell_drop_owner") == 1]
        (other,) = [w for w in workers if w is not owner]
        assert other.sample("crosssell_drop_owner") == 0
        assert other.sample("crosssell_drop_alarm", segment="total", value="all") is None  # one test, one alarm
        assert detection(other)["segments"] == []
        wait_until(lambda: (detection(owner)["detected_until"] or 0) >= expected.closed_until - TICK, 60,
                   "the fleet's test through the last complete tick")
        # The baseline ends an hour back from the tick tested: compare the new owner's where the old one stood.
        stood = settled_until(owner)
        before = detection(owner)
        assert before["detected_until"] == stood
        assert before["skipped"] == 0, before["skipped"]  # the backlog held the test back: no order left out
        live = [(e["kind"], e["value"], e["started"]) for e in before["episodes"]]
        alone = [(e.kind, e.value, e.started) for e in expected.episodes]
        assert [e[:2] for e in live] == [e[:2] for e in alone], (live, alone)
        for (_, _, started), (_, _, reference_started) in zip(live, alone, strict=True):
            assert abs(started - reference_started) <= 2 * TICK, (live, alone)
        total_before = next(s for s in before["segments"] if s["kind"] == "total")

        owner.kill()
        wait_until(lambda: other.sample("crosssell_drop_owner") == 1, 90, "the other worker owning the test")
        wait_until(lambda: total_alarm(detection(other)), 60, "the alarm on the new owner")
        # It restores the table, then applies again the messages the old owner had not acknowledged.
        wait_until(lambda: (detection(other)["detected_until"] or 0) >= stood, 60, "the new owner where the old stood")
        after = detection(other)
        assert after["detected_until"] == stood, (after["detected_until"], stood)
        total_after = next(s for s in after["segments"] if s["kind"] == "total")
        assert total_after["baseline"] == pytest.approx(total_before["baseline"], abs=1e-9)
        assert total_after["since"] == total_before["since"]
        assert [e["started"] for e in after["episodes"] if e["kind"] == "total"] == \
            [e["started"] for e in before["episodes"] if e["kind"] == "total"]

        rest = [o for o in orders if o[0] >= cut]
        more = running.produce((key, value, partition) for _, key, value, partition in rest)
        wait_for_events([other], sent + more, timeout=120, partitions=PARTITIONS)
        last = min(max(at for at, *_, p in orders if p == q) for q in range(PARTITIONS))
        wait_until(lambda: (detection(other)["detected_until"] or 0) >= last - 2 * TICK, 60,
                   "the new owner testing the orders sent after the kill")
        assert total_alarm(detection(other))
