"""streams.orders.dead_letters: whatever arrived, the dead letter fits one Kafka message and keeps the evidence."""

from __future__ import annotations

import hashlib

import pytest

from streams.orders.dead_letters import DeadLetter, dead_letter_record, record_size

MAX_BYTES = 524_288
MAX_VALUE = 65_536


def letter(value: bytes | None = b"{broken", key: bytes | None = b"k-1",
           headers: list[tuple[str, bytes]] | None = None, reason: str = "not_json") -> DeadLetter:
    return DeadLetter("orders", 3, 41, 1_800_000_000.5, key, value, headers or [], reason, "the event is not JSON")


def headers_of(record: object) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for name, value in record.headers:  # type: ignore[attr-defined]
        found.setdefault(name, []).append(value)
    return found


def test_a_small_rejected_event_is_carried_whole_with_its_headers_and_where_it_came_from() -> None:
    record = dead_letter_record(letter(headers=[("trace", b"abc")]), 1_800_000_001.0, MAX_BYTES, MAX_VALUE)
    headers = headers_of(record)
    assert (record.key, record.value) == (b"k-1", b"{broken")
    assert headers["trace"] == [b"abc"]
    assert headers["crosssell.reason"] == [b"not_json"]
    assert headers["crosssell.source.partition"] == [b"3"] and headers["crosssell.source.offset"] == [b"41"]
    assert "crosssell.value.bytes" not in headers


@pytest.mark.parametrize("size", [MAX_VALUE + 1, 1 << 20, 3 << 20])
def test_an_oversized_value_is_cut_and_its_size_and_digest_kept(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    record = dead_letter_record(letter(value, reason="oversized"), 0.0, MAX_BYTES, MAX_VALUE)
    headers = headers_of(record)
    assert record.value == value[:MAX_VALUE]
    assert headers["crosssell.value.bytes"] == [str(size).encode()]
    assert headers["crosssell.value.sha256"] == [hashlib.sha256(value).hexdigest().encode()]
    assert headers["crosssell.value.truncated_to"] == [str(MAX_VALUE).encode()]
    assert record_size(record) <= MAX_BYTES


def test_the_inputs_own_crosssell_headers_are_renamed_so_the_workers_reason_is_the_only_one() -> None:
    forged = [("crosssell.reason", b"forged"), ("crosssell.detail", b"nothing wrong")]
    headers = headers_of(dead_letter_record(letter(headers=forged), 0.0, MAX_BYTES, MAX_VALUE))
    assert headers["crosssell.reason"] == [b"not_json"]
    assert headers["original.crosssell.reason"] == [b"forged"]
    assert headers["original.crosssell.detail"] == [b"nothing wrong"]


def test_headers_that_do_not_fit_are_dropped_and_counted() -> None:
    huge = [(f"h-{n}", b"v" * 100_000) for n in range(12)]
    record = dead_letter_record(letter(headers=huge), 0.0, MAX_BYTES, MAX_VALUE)
    headers = headers_of(record)
    kept = [name for name in headers if name.startswith("h-")]
    assert 0 < len(kept) < 12
    assert headers["crosssell.headers.dropped"] == [str(12 - len(kept)).encode()]
    assert record_size(record) <= MAX_BYTES


def test_a_huge_key_is_cut_with_its_digest() -> None:
    key = b"k" * 100_000
    record = dead_letter_record(letter(key=key), 0.0, MAX_BYTES, MAX_VALUE)
    assert record.key is not None and len(record.key) == 1024
    assert headers_of(record)["crosssell.key.sha256"] == [hashlib.sha256(key).hexdigest().encode()]


def test_without_its_value_a_dead_letter_keeps_only_the_evidence() -> None:
    record = dead_letter_record(letter(b"x" * 1000, headers=[("trace", b"abc")]), 0.0, MAX_BYTES, MAX_VALUE,
                                keep_value=False)
    headers = headers_of(record)
    assert record.value == b""
    assert headers["crosssell.value.bytes"] == [b"1000"]
    assert "trace" not in headers and headers["crosssell.headers.dropped"] == [b"1"]


def test_a_long_detail_is_shortened() -> None:
    long = DeadLetter("orders", 0, 0, 0.0, None, b"x", [], "price_too_large", "unit_price is " + "9" * 5000)
    headers = headers_of(dead_letter_record(long, 0.0, MAX_BYTES, MAX_VALUE))
    assert len(headers["crosssell.detail"][0].decode()) == 1024
