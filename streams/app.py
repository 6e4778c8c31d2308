"""The Faust app: topics, the state table, the agent and the web views.

Thin wiring around the pure modules. The agent reads raw order bytes,
checks them (contract), applies them to the ledger of their partition
(ledger, facts, windows) and, once per flush rather than once per event,
writes the changed keys to a Faust table and acks the events. Only after the
changelog holds the state are the source offsets acked, so Faust commits
nothing that the state does not hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp.web
import faust
import orjson
from faust.types import TP, EventT
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from streams.contract import Limits, decode_order
from streams.ledger import Changes, PartitionLedger, Verdict, WindowConfig, key_partition
from streams.metrics import CrossSellCollector
from streams.settings import Settings
from streams.snapshot import Snapshot, take_snapshot

log = logging.getLogger(__name__)

STATE_TABLE = "state"
LIVE_PAGE = Path(__file__).parent / "static" / "live.html"


class PartitionedTable(faust.Table):  # type: ignore[misc]
    """A table whose keys name their own changelog partition: ``b"<partition>/..."``.

    Faust picks the changelog partition of the event being processed. Our
    writes happen once per flush, for any partition, so the partition comes
    from the key instead; it is always the source partition the key's state
    was computed from. The futures of the changelog writes are kept so a flush
    can wait until the changelog holds them before acking source offsets.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pending_writes: list[asyncio.Future[Any]] = []
        self.recovered_callbacks: list[Callable[[set[int]], None]] = []

    def partition_for_key(self, key: Any) -> int:
        return int(bytes(key).split(b"/", 1)[0])

    def on_key_set(self, key: Any, value: Any) -> None:
        self.pending_writes.append(self.send_changelog(self.partition_for_key(key), key, value))

    def on_key_del(self, key: Any) -> None:
        self.pending_writes.append(
            self.send_changelog(self.partition_for_key(key), key, value=None, value_serializer="raw")
        )

    def take_pending_writes(self) -> list[asyncio.Future[Any]]:
        pending, self.pending_writes = self.pending_writes, []
        return pending

    def items_of_partition(self, partition: int) -> Iterable[tuple[str, Any]]:
        prefix = f"{partition}/".encode()
        for key, value in list(self.data.items()):
            if key.startswith(prefix):
                yield key.decode(), orjson.loads(value)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        for callback in self.recovered_callbacks:
            callback({tp.partition for tp in active_tps})


class Processor:
    """Keeps one ledger per assigned partition and flushes them to the table."""

    def __init__(self, settings: Settings, table: PartitionedTable, dead_letters: faust.TopicT,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.table = table
        self.dead_letters = dead_letters
        self.clock = clock
        self.limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
        self.window_config = WindowConfig(
            size=settings.window_seconds,
            grace=settings.grace_seconds,
            retention=settings.retention_seconds,
            dedup_horizon=settings.dedup_horizon_seconds,
            max_future=settings.max_future_seconds,
            max_tracked=settings.max_tracked_values,
        )
        self.ledgers: dict[int, PartitionLedger] = {}
        self.unacked: list[EventT] = []
        self.dead_letter_queue: list[tuple[EventT, str, str]] = []
        self.dead_letters_sent: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.last_flush = time.monotonic()

    # -- rebalancing ---------------------------------------------------------
    def restore(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.ledgers[partition] = PartitionLedger.restore(
                partition, self.window_config, self.table.items_of_partition(partition)
            )
        log.info("ledgers restored for partitions %s", sorted(partitions))

    async def revoke(self, partitions: set[int]) -> None:
        async with self.lock:
            for partition in partitions:
                self.ledgers.pop(partition, None)
            self.unacked = [e for e in self.unacked if e.message.partition not in partitions]

    # -- the hot path --------------------------------------------------------
    def process(self, event: EventT) -> None:
        message = event.message
        ledger = self.ledgers.get(message.partition)
        if ledger is None:  # assigned without recovery callback (first start): empty state
            ledger = self.ledgers[message.partition] = PartitionLedger(message.partition, self.window_config)
        outcome = ledger.apply(message.offset, decode_order(event.value, self.limits), self.clock())
        if outcome.verdict is Verdict.INVALID:
            self.dead_letter_queue.append((event, outcome.reason, outcome.detail))
        self.unacked.append(event)

    def flush_due(self) -> bool:
        return len(self.unacked) >= self.settings.flush_max_events

    async def flush(self) -> None:
        """Write what changed, wait until the changelog holds it, then ack the events."""
        async with self.lock:
            self.last_flush = time.monotonic()
            events, self.unacked = self.unacked, []
            dead, self.dead_letter_queue = self.dead_letter_queue, []
            changes = [c for c in (ledger.take_changes() for ledger in self.ledgers.values()) if c is not None]
            if not events and not changes:
                return
            sends = [self._send_dead_letter(event, reason, detail) for event, reason, detail in dead]
            for change in changes:
                self._write(change)
            await asyncio.gather(*sends, *self.table.take_pending_writes())
            # The meta key goes last: its offset says "everything up to here is applied".
            for change in changes:
                key, meta = change.meta
                self.table[key.encode()] = orjson.dumps(meta)
            await asyncio.gather(*self.table.take_pending_writes())
            for event in events:
                event.ack()

    def _write(self, change: Changes) -> None:
        table = self.table
        for key, value in change.writes.items():
            table[key.encode()] = orjson.dumps(value)
        for key in change.deletes:
            table.pop(key.encode(), None)

    def _send_dead_letter(self, event: EventT, reason: str, detail: str) -> asyncio.Future[Any]:
        message = event.message
        headers = list((event.headers or {}).items()) if isinstance(event.headers, dict) else list(event.headers or [])
        headers += [
            ("crosssell.reason", reason.encode()),
            ("crosssell.detail", detail.encode()),
            ("crosssell.source.topic", message.topic.encode()),
            ("crosssell.source.partition", str(message.partition).encode()),
            ("crosssell.source.offset", str(message.offset).encode()),
            ("crosssell.source.timestamp", str(message.timestamp).encode()),
            ("crosssell.rejected_at", str(self.clock()).encode()),
        ]
        self.dead_letters_sent[reason] = self.dead_letters_sent.get(reason, 0) + 1
        fut: asyncio.Future[Any] = self.dead_letters.send_soon(
            key=message.key, value=event.value if event.value is not None else b"", headers=headers,
            key_serializer="raw", value_serializer="raw",
        )
        return fut

    def snapshot(self) -> Snapshot:
        return take_snapshot(
            list(self.ledgers.values()), self.settings, dead_letters=dict(self.dead_letters_sent)
        )


def create_app(settings: Settings) -> tuple[faust.App, Processor]:
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,  # memory store: a standby copy would not shorten recovery
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
    )
    orders = app.topic(settings.orders_topic, key_type=bytes, value_type=bytes, partitions=settings.partitions,
                       key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(settings.dead_letter_topic, partitions=settings.partitions,
                             key_serializer="raw", value_serializer="raw")
    table = app.tables.add(PartitionedTable(
        app=app, name=STATE_TABLE, default=None, partitions=settings.partitions,
        key_type=bytes, value_type=bytes,
        help="Per-partition event-time windows, counters and offsets (see streams/ledger.py).",
    ))
    processor = Processor(settings, table, dead_letters)
    table.recovered_callbacks = [processor.restore]

    @app.agent(orders, name="orders")
    async def process_orders(stream: faust.StreamT) -> None:
        async for event in stream.noack().events():
            processor.process(event)
            if processor.flush_due():
                await processor.flush()

    @app.timer(settings.flush_interval_seconds)
    async def flush_on_time() -> None:
        await processor.flush()

    @app.on_partitions_revoked.connect
    async def drop_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        await processor.revoke({tp.partition for tp in revoked if tp.topic == settings.orders_topic})

    registry = CollectorRegistry(auto_describe=True)
    registry.register(CrossSellCollector(processor.snapshot, settings))
    for standard in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
        registry.register(standard)

    @app.page("/metrics")
    async def metrics(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # A plain aiohttp response: Faust's helper cannot carry the charset parameter.
        return aiohttp.web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/summary")
    async def summary(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.bytes(orjson.dumps(processor.snapshot().as_json()), content_type="application/json")

    @app.page("/")
    async def live_page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return aiohttp.web.Response(body=LIVE_PAGE.read_bytes(), content_type="text/html", charset="utf-8")

    return app, processor
