"""The detection agent's state keeper: the fleet's tick counts → one drop test → the `drop-detection` table.

The detection topic has one partition, so one worker owns it and tests the
orders of every partition (streams/orders/fleet_detection.py); the others hold
nothing. A flush writes the tested ticks, waits until the changelog holds them,
then the meta key alone, then the deletions, and only then acks the messages: a
crash replays the unacked messages against the state of the last meta key, and
each (source, sequence) applies once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.types import EventT

from streams.orders.config import detection_config
from streams.orders.detection import Episode, SegmentReport
from streams.orders.fleet_detection import PARTITION, FleetDetector
from streams.runtime.store import PartitionedTable
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DropTestView:
    """What /metrics and /api/detection show of the fleet's test: nothing on a worker that does not own it."""

    owner: bool = False
    segments: list[SegmentReport] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    tested_until: float | None = None
    skipped: int = 0
    partitions_reported: int = 0


class DetectionProcessor:
    def __init__(self, settings: Settings, table: PartitionedTable) -> None:
        self.settings = settings
        self.table = table
        self.config = detection_config(settings)
        self.fleet: FleetDetector | None = None
        self.unacked: list[EventT[Any]] = []
        self.lock = asyncio.Lock()
        self.flush_failures = 0  # flushes the broker failed, given back to the fleet's test (see flush)

    def restore(self, partitions: set[int]) -> None:
        if PARTITION not in partitions:
            return
        self.fleet = FleetDetector.restore(self.config, self.settings.partitions,
                                           self.table.items_of_partition(PARTITION))
        closed = self.fleet.detector.closed_until
        log.info("fleet drop test restored: %d segments, tested until %s, %d orders partitions reported",
                 len(self.fleet.detector.segments), "none" if closed == -math.inf else f"{closed:.0f}",
                 len(self.fleet.sources))

    async def revoke(self, partitions: set[int]) -> None:
        if PARTITION not in partitions:
            return
        async with self.lock:
            self.fleet = None
            self.unacked = []  # replayed by the new owner
            self.table.forget({PARTITION})

    def process(self, event: EventT[Any]) -> None:
        fleet = self.fleet
        if fleet is None or event.message.partition != PARTITION:  # revoked while in flight: the owner replays it
            return
        fleet.apply(orjson.loads(event.value))
        self.unacked.append(event)

    async def flush(self) -> None:
        async with self.lock:
            fleet = self.fleet
            if fleet is None:
                return
            events, self.unacked = self.unacked, []
            ticks, meta, deletes = fleet.take_changes()
            try:
                if ticks:
                    self.table.write(ticks)
                    await self.table.wait_written()
                if meta:
                    # Alone, last: Tansu 0.6.0 ends a recovery at the first record of a partition's last
                    # batch + 1 (FACTS.md), which may cut a batch's later records but not a one-record batch.
                    self.table.write(meta)
                    await self.table.wait_written()
                if deletes:
                    self.table.write({}, deletes)
                self.table.delete_replaced_parts()
            except Exception:
                # Given back before the lock is released, so before anything else takes: the next flush
                # writes it (FleetDetector.give_back), and acks these messages.
                log.exception("drop test flush failed; the next flush writes it again")
                self.flush_failures += 1
                fleet.give_back(ticks, deletes)
                self.unacked = events + self.unacked
                return
            for event in events:
                event.ack()

    def view(self) -> DropTestView:
        fleet = self.fleet
        if fleet is None:
            return DropTestView()
        detector = fleet.detector
        return DropTestView(True, detector.report(), list(detector.episodes),
                            None if detector.closed_until == -math.inf else detector.closed_until,
                            detector.dropped, len(fleet.sources))
