"""A table on disk: Faust's RocksDB store (rocksdict driver), its partition named by each key.

Faust 0.15.3's RocksDB store (``faust.stores.rocksdb``, with the ``rocksdict``
wheel installed it uses rocksdict, no python-rocksdb build) keeps one database
per changelog partition and picks it from the *event being processed*: its
``_set`` asserts that there is a current event. The customer ledger writes once
per flush, from a timer, for any partition it owns, and its keys name their
partition (``b"<partition>/..."``, like every table of the project,
streams/runtime/store.py). This store reads the partition from the key
instead; the rest is Faust's: databases opened on assignment and closed on
revocation, changelog recovery written in batches, the last changelog offset
kept in each database so that a restarted worker reads only the changelog's
tail.

The cache and write buffers are sized by CROSSSELL_CUSTOMER_CACHE_MB per
partition (Faust's defaults are a 2 GiB block cache and three 64 MiB write
buffers per partition).
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.stores.rocksdb import Store as RocksDBStore

from streams.runtime.store import MANIFEST, PartitionedTable


def key_partition(key: bytes) -> int:
    return int(bytes(key).split(b"/", 1)[0])


class KeyPartitionedRocksDB(RocksDBStore):
    def _set(self, key: bytes, value: bytes | None) -> None:
        self._db_for_partition(key_partition(key)).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(key_partition(key)).get(key)
        return value

    def _del(self, key: bytes) -> None:
        self._db_for_partition(key_partition(key)).delete(key)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None


def keys_after(db: Any, prefix: str, after: str | None, limit: int) -> list[str]:
    """Up to ``limit`` keys of a rocksdict database starting with ``prefix``, after ``after`` (None: from the first).

    One seek, then at most ``limit`` + 1 steps in key order: a bounded slice, whatever the number of keys.
    """
    start, begins = (after or prefix).encode(), prefix.encode()
    found: list[str] = []
    for key in db.keys(from_key=start):
        if len(found) == limit or not key.startswith(begins):
            break
        if after is None or key != start:
            found.append(key.decode())
    return found


def store_options(cache_mb: int) -> dict[str, Any]:
    """RocksDB options of one partition's database: a block cache of ``cache_mb`` MiB, write buffers of half."""
    mib = 1024 * 1024
    return {"block_cache_size": cache_mb * mib, "write_buffer_size": max(1, cache_mb // 4) * mib,
            "max_write_buffer_number": 2, "target_file_size_base": 16 * mib}


class DiskTable(PartitionedTable):
    """A :class:`PartitionedTable` kept in :class:`KeyPartitionedRocksDB` whatever the app's store."""

    def _new_store_by_url(self, url: Any) -> Any:
        return KeyPartitionedRocksDB("rocksdb://", self.app, self, table_name=self.name, key_type=self.key_type,
                                     key_serializer=self.key_serializer, value_type=self.value_type,
                                     value_serializer=self.value_serializer, loop=self.loop, options=self.options)

    def scan(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any]]:
        """Up to ``limit`` keys starting with ``prefix``, after ``after`` (None: from the first), with their values."""
        store = self.data
        assert isinstance(store, KeyPartitionedRocksDB)
        db = store._db_for_partition(key_partition(prefix.encode()))
        return [(key, self.lookup(key)) for key in keys_after(db, prefix, after, limit)]

    def lookup(self, key: str) -> Any:
        """The JSON value of ``key`` (joined from its parts if stored in parts), or None."""
        value = self.data.get(key.encode())
        if value is None:
            return None
        if value.startswith(MANIFEST):
            value = b"".join(self.data[name.encode()] for name in orjson.loads(value[len(MANIFEST):]))
        return orjson.loads(value)
