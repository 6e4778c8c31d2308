"""A Faust table whose keys name their own changelog partition.

Faust writes a table change to the changelog partition of the event being
processed. This project writes once per flush, for any partition, so the
partition comes from the key instead: ``b"<partition>/..."``, always the
partition the state was computed from. The futures of the changelog writes are
kept, so a flush can wait until the changelog holds them before acking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import faust
import orjson
from faust.types import TP


def right_sized(data: bytes) -> bytes:
    """``data`` copied into an allocation of its own length.

    orjson 3.12+ returns its output buffer, which it never shrinks: ~8 times the
    JSON's length and at least 4 KiB. The table keeps each value as long as the
    state lives (a dedup segment for the whole horizon). Without the copy a
    worker at 3,000 orders/s ended an 8-minute soak at 624 MiB and still crept
    as the untouched pages of those buffers were reused; with it, 358 MiB after
    10 minutes, flat (python -m bench.soak; tests/agents/test_order_agents.py).
    """
    return bytes(memoryview(data))


class PartitionedTable(faust.Table):  # type: ignore[type-arg]
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

    def write(self, writes: dict[str, Any], deletes: Iterable[str] = ()) -> None:
        """Set keys to JSON values and delete keys; the changelog futures join pending_writes."""
        for key, value in writes.items():
            self[key.encode()] = right_sized(orjson.dumps(value))
        for key in deletes:
            self.pop(key.encode(), None)

    async def wait_written(self) -> None:
        """Wait until the changelog holds every write made so far."""
        pending, self.pending_writes = self.pending_writes, []
        if pending:
            await asyncio.gather(*pending)

    def items_of_partition(self, partition: int) -> Iterable[tuple[str, Any]]:
        prefix = f"{partition}/".encode()
        for key, value in list(self.data.items()):
            if key.startswith(prefix):
                yield key.decode(), orjson.loads(value)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        for callback in self.recovered_callbacks:
            callback({tp.partition for tp in active_tps})
