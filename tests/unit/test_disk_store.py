"""Slices of a partition's keys in a real RocksDB database (rocksdict, opened as the worker opens it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.stores.rocksdb import RocksDBOptions

from streams.runtime.disk_store import keys_after, store_options

KEYS = ["0/c/a", "0/c/b", "0/c/c", "0/h/1", "0/meta", "1/c/a"]


@pytest.mark.parametrize(("prefix", "after", "limit", "expected"), [
    ("0/c/", None, 10, ["0/c/a", "0/c/b", "0/c/c"]),  # the prefix only, in key order
    ("0/c/", None, 2, ["0/c/a", "0/c/b"]),  # at most limit
    ("0/c/", "0/c/b", 10, ["0/c/c"]),  # strictly after the cursor
    ("0/c/", "0/c/bb", 10, ["0/c/c"]),  # a cursor deleted since: the next key on
    ("0/c/", "0/c/c", 10, []),  # the end
    ("1/c/", None, 10, ["1/c/a"]),
    ("2/c/", None, 10, []),
])
def test_keys_after_a_cursor(tmp_path: Path, prefix: str, after: str | None, limit: int,
                             expected: list[str]) -> None:
    db = RocksDBOptions(**store_options(1), use_rocksdict=True).open(tmp_path / "t.db")
    try:
        for key in KEYS:
            db.put(key.encode(), b"{}")
        assert keys_after(db, prefix, after, limit) == expected
    finally:
        db.close()
