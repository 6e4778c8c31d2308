"""The customers agent's state keeper: customer messages → per-partition customer ledgers → the disk table.

A flush writes, per customer partition: the meta key a restore prepared (once,
alone), then every changed customer and bucket, then the meta key, then the
deletions of expired buckets and customers, each step waiting until the changelog holds the
one before; only then are the messages acked (streams/customers/ledger.py says
why that is exact after a crash, and after a flush the broker fails).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from faust.types import EventT

from streams.customers.ledger import CustomerChanges, CustomerConfig, CustomerLedger
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
        self.flush_failures = 0  # flushes the broker failed, given back to the ledgers (see flush)

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
        """Write what changed, in the order the module docstring gives; ack the messages once it is durable.

        A flush the broker fails (an error from the producer: a refused or timed-out
        write) is given back before the lock is released, so before anything else
        takes; revoke waits for the lock, and process() never takes. Before its meta
        key is known durable, each ledger it took aborts its flush id and gives back
        what it wrote (:meth:`CustomerLedger.give_back`: the next flush writes the
        aborting meta key alone, then those customers and buckets whole), and its
        messages go back to the unacked ones, acked only by a flush whose meta key
        covers them. Failing once the meta key is durable (its deletions), the flush
        is committed: its messages are acked and its deletions carried into the
        next flush. A revoke or a stop after a failure writes nothing more: the
        changelog holds what a crash could leave, and the messages are replayed.
        """
        async with self.lock:
            events, self.unacked = self.unacked, []
            ledgers = list(self.ledgers.values())
            burned = {ledger: b for ledger in ledgers if (b := ledger.burned_flush()) is not None}
            taken: dict[CustomerLedger, CustomerChanges] = {}
            meta_durable = False
            try:
                if burned:
                    self.table.write(dict(burned.values()))
                    await self.table.wait_written()
                taken = {ledger: c for ledger in ledgers if (c := ledger.take_changes()) is not None}
                for change in taken.values():
                    self.table.write(change.writes)
                await self.table.wait_written()
                self.table.write(dict(c.meta for c in taken.values()))
                await self.table.wait_written()
                meta_durable = True
                # Deletions go last: Tansu 0.6.0 ends a recovery at the first record of a partition's
                # last batch + 1 (FACTS.md), which may cut a deletion but never the meta key before it.
                self.table.write({}, [key for c in taken.values() for key in c.deletes])
                await self.table.wait_written()
            except Exception:
                self._flush_failed(events, burned, taken, meta_durable)
                return
            self.expired += sum(c.expired_customers for c in taken.values())
            for event in events:
                event.ack()

    def _flush_failed(self, events: list[EventT[Any]], burned: dict[CustomerLedger, tuple[str, dict[str, Any]]],
                      taken: dict[CustomerLedger, CustomerChanges], meta_durable: bool) -> None:
        """Give a failed flush back to its ledgers: the next flush writes what it did not (see flush)."""
        self.flush_failures += 1
        log.exception("customers flush failed %s", "deleting expired keys; the next flush deletes them"
                      if meta_durable else "before its meta key was durable; the next flush writes it again")
        for ledger in {**burned, **taken}:
            if self.ledgers.get(ledger.partition) is not ledger:
                continue  # revoked (a revoke waits for the lock, so not expected): its new owner restores
            if meta_durable:
                if ledger in taken:
                    ledger.carry_deletes(taken[ledger])
            else:
                ledger.give_back(burned.get(ledger), taken.get(ledger))
        if meta_durable:
            for event in events:
                event.ack()
        else:
            self.unacked = events + self.unacked

    def summary(self) -> CustomerSummary:
        views = {partition: ledger.view() for partition, ledger in list(self.ledgers.items())}
        return summarize(views, duration_label(self.settings.customer_horizon_seconds),
                         self.settings.max_label_values)
