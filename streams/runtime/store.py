"""A Faust table whose keys name their own changelog partition.

Faust writes a table change to the changelog partition of the event being
processed. This project writes once per flush, for any partition, so the
partition comes from the key instead: ``b"<partition>/..."``, always the
partition the state was computed from. The futures of the changelog writes are
kept, so a flush can wait until the changelog holds them before acking.

A value too large for one Kafka message (a flush's pair deltas after a
backlog, a busy pair bucket) is stored in parts: keys
``<partition>/~/<key>/<digest>/<i>`` each hold a slice, written first, and the
key itself holds a manifest naming them. The parts of the value a key held
before are deleted only once the changelog holds the new manifest, so a crash
at any point leaves every manifest with all of its parts; parts that no
manifest names (a flush that crashed before its manifest) are deleted after
recovery.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import faust
import orjson
from faust.types import TP

log = logging.getLogger(__name__)

# A manifest value starts with a byte no JSON value starts with.
MANIFEST = b"\x00parts:"
PARTS = b"~"
# Room for the record's own framing besides its key and value.
RECORD_OVERHEAD = 512


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
        # Set by the app from CROSSSELL_MAX_MESSAGE_BYTES: no changelog record is larger.
        self.max_record_bytes = 524_288
        self._parts: dict[bytes, list[bytes]] = {}  # key -> the part keys of its current value
        self._stale_parts: list[bytes] = []  # parts of replaced values whose new manifest is not durable yet
        self._replaced_parts: list[bytes] = []  # parts no durable manifest names: deleted at the end of a flush

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
            self._set(key.encode(), orjson.dumps(value))
        for key in deletes:
            encoded = key.encode()
            self._stale_parts.extend(self._parts.pop(encoded, ()))
            self.pop(encoded, None)

    def _set(self, key: bytes, body: bytes) -> None:
        old = self._parts.pop(key, ())
        room = self.max_record_bytes - RECORD_OVERHEAD - len(key)
        if len(body) <= room:
            self._stale_parts.extend(old)
            self[key] = right_sized(body)
            return
        names, size = part_keys(key, body, room)
        for index, name in enumerate(names):
            self[name] = body[index * size:(index + 1) * size]
        kept = set(names)
        self._stale_parts.extend(name for name in old if name not in kept)
        self._parts[key] = names
        self[key] = MANIFEST + orjson.dumps([name.decode() for name in names])

    async def wait_written(self) -> None:
        """Wait until the changelog holds every write made so far.

        Then the parts of values replaced before this call are no longer named by
        any manifest in the changelog: :meth:`delete_replaced_parts` may delete them.
        """
        pending, self.pending_writes = self.pending_writes, []
        if pending:
            await asyncio.gather(*pending)
        self._replaced_parts += self._stale_parts
        self._stale_parts = []

    def delete_replaced_parts(self) -> None:
        """Delete the parts that no durable manifest names; called last in a flush.

        Not earlier: Tansu 0.6.0 ends a partition at the first record of its last
        batch + 1 (FACTS.md), so a deletion sharing a batch with the meta key
        written after it would cut the meta key out of a recovery. Last, a cut
        deletion only leaves an orphan part, which the next recovery deletes.
        """
        replaced, self._replaced_parts = self._replaced_parts, []
        for name in replaced:
            self.pop(name, None)

    def forget(self, partitions: set[int]) -> None:
        """Drop the bookkeeping of partitions this worker no longer owns (their new owner deletes)."""
        prefixes = tuple(f"{p}/".encode() for p in partitions)
        self._parts = {k: v for k, v in self._parts.items() if not k.startswith(prefixes)}
        self._stale_parts = [k for k in self._stale_parts if not k.startswith(prefixes)]
        self._replaced_parts = [k for k in self._replaced_parts if not k.startswith(prefixes)]

    def items_of_partition(self, partition: int) -> Iterable[tuple[str, Any]]:
        """The keys of ``partition`` with their JSON values, values stored in parts joined."""
        prefix = f"{partition}/".encode()
        parts_prefix = prefix + PARTS + b"/"
        data = self.data
        named: set[bytes] = set()
        orphans: list[bytes] = []
        for key, value in list(data.items()):
            if not key.startswith(prefix):
                continue
            if key.startswith(parts_prefix):
                orphans.append(key)
                continue
            if value.startswith(MANIFEST):
                names = [name.encode() for name in orjson.loads(value[len(MANIFEST):])]
                missing = [name for name in names if name not in data]
                if missing:  # cannot happen while parts are written before their manifest
                    log.error("table %s: key %r names %d missing parts; skipped", self.name, key, len(missing))
                    continue
                named.update(names)
                self._parts[key] = names
                value = b"".join(data[name] for name in names)
            yield key.decode(), orjson.loads(value)
        self._replaced_parts.extend(name for name in orphans if name not in named)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        for callback in self.recovered_callbacks:
            callback({tp.partition for tp in active_tps})


def part_keys(key: bytes, body: bytes, room: int) -> tuple[list[bytes], int]:
    """The keys of the parts that hold ``body`` for ``key``, and the size of their slices.

    A part's key and slice together take at most ``room`` bytes plus ``len(key)``.
    """
    partition, _, rest = key.partition(b"/")
    digest = hashlib.blake2b(body, digest_size=8).hexdigest().encode()
    prefix = b"%s/%s/%s/%s/" % (partition, PARTS, rest, digest)
    # The key grows with the index: size the slices for the longest part key.
    longest = len(prefix) + len(str(len(body)))
    size = room - (longest - len(key))
    if size <= 0:
        raise ValueError(f"table key {key!r} leaves no room for a value within {room} bytes")
    count = -(-len(body) // size)
    return [prefix + str(i).encode() for i in range(count)], size
