"""The customers agent's state keeper: customer messages → per-partition customer ledgers → the disk table.

A flush writes, per customer partition: the meta key a restore prepared (once,
alone), then every changed customer and bucket, then the meta key, then the
deletions of expired buckets and customers, each step waiting until the changelog holds the
one before; only then are the messages acked (streams/customers/ledger.py says
why that is exact after a crash).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from faust.types import EventT

from streams.customers.ledger import CustomerConfig, CustomerLedger
from streams.customers.summary import CustomerSummary, summarize
from streams.runtime.disk_store import DiskTable
from streams.runtime.processors import forget_partitions
from streams.runtime.store import PartitionedTable
from streams.settings import Settings, duration_label

log = logging.getLogger(__name__)


def customer_config(settings: Settings) -> CustomerConfig:
    return CustomerConfig(settings.customer_horizon_seconds, settings.customer_bucket_seconds,
                          settings.customer_max_categories, settings.customer_expiry_keys)


class CustomerProcessor:
    def __init__(self, settings: Settings, table: DiskTable) -> None:
        self.settings = settings
        self.table: PartitionedTable = table
        self.lookup = table.lookup
        self.scan = table.scan
        self.config = customer_config(settings)
        self.ledgers: dict[int, CustomerLedger] = {}
        self.unacked: list[EventT[Any]] = []
        self.lock = asyncio.Lock()
        self.expired = 0  # customers deleted by this worker's flushes, since it started

    def restore(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.ledgers[partition] = CustomerLedger.restore(partition, self.config, self.lookup, self.scan)
        log.info("customer ledgers restored for partitions %s", sorted(partitions))

    async def revoke(self, partitions: set[int]) -> None:
        async with self.lock:
            forget_partitions(self, partitions)

    def process(self, event: EventT[Any]) -> None:
        ledger = self.ledgers.get(event.message.partition)
        if ledger is None:  # revoked while in flight: the owner replays it
            return
        ledger.apply(orjson.loads(event.value))  # a message applied before (a resent outbox) changes nothing
        self.unacked.append(event)

    async def flush(self) -> None:
        async with self.lock:
            events, self.unacked = self.unacked, []
            ledgers = list(self.ledgers.values())
            burned = dict(b for b in (ledger.burned_flush() for ledger in ledgers) if b is not None)
            if burned:
                self.table.write(burned)
                await self.table.wait_written()
            changes = [c for c in (ledger.take_changes() for ledger in ledgers) if c is not None]
            for change in changes:
                self.table.write(change.writes)
            await self.table.wait_written()
            self.table.write(dict(c.meta for c in changes))
            await self.table.wait_written()
            # Deletions go last: Tansu 0.6.0 ends a recovery at the first record of a partition's
            # last batch + 1 (FACTS.md), which may cut a deletion but never the meta key before it.
            self.table.write({}, [key for c in changes for key in c.deletes])
            await self.table.wait_written()
            self.expired += sum(c.expired_customers for c in changes)
            for event in events:
                event.ack()

    def summary(self) -> CustomerSummary:
        views = {partition: ledger.view() for partition, ledger in list(self.ledgers.items())}
        return summarize(views, duration_label(self.settings.customer_horizon_seconds),
                         self.settings.max_label_values)
