"""Dead letters: a rejected event as it goes to the dead-letter topic, bounded in size.

A dead letter carries the original key, value and headers, plus headers
saying why it was rejected and where it came from. Whatever arrived, the
dead letter fits in one Kafka message: a value over the limit is cut and a
header gives its size and digest, input headers that do not fit are dropped
and counted, and the input's own ``crosssell.*`` headers are renamed
(``original.crosssell.*``) so the worker's reason is the only one.

Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

HEADER_PREFIX = "crosssell."
RENAMED_PREFIX = "original."
# Room for a record's framing and the lengths of its fields.
RECORD_OVERHEAD = 512
MAX_KEY_BYTES = 1024
MAX_DETAIL_CHARS = 1024


@dataclass(slots=True)
class DeadLetter:
    """A rejected order event, as read, with the reason it was rejected."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str
    detail: str


class DeadLetterRecord(NamedTuple):
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def header_list(headers: Any) -> list[tuple[str, bytes]]:
    """Kafka headers as a list of (name, bytes), from a list or a mapping."""
    return list(headers.items()) if isinstance(headers, dict) else list(headers or [])


def dead_letter_record(letter: DeadLetter, rejected_at: float, max_bytes: int, max_value_bytes: int,
                       keep_value: bool = True) -> DeadLetterRecord:
    """The record to publish for ``letter``: at most ``max_bytes`` in all, its value at most ``max_value_bytes``.

    ``keep_value=False`` leaves the value out (headers still give its size and
    digest): the form sent when the broker refused the full one.
    """
    value = letter.value or b""
    own = [
        ("crosssell.reason", letter.reason.encode()),
        ("crosssell.detail", _shortened(letter.detail).encode()),
        ("crosssell.source.topic", letter.topic.encode()),
        ("crosssell.source.partition", str(letter.partition).encode()),
        ("crosssell.source.offset", str(letter.offset).encode()),
        ("crosssell.source.timestamp", str(letter.timestamp).encode()),
        ("crosssell.rejected_at", str(rejected_at).encode()),
    ]
    cut = max_value_bytes if keep_value else 0
    if len(value) > cut:
        own += [
            ("crosssell.value.bytes", str(len(value)).encode()),
            ("crosssell.value.sha256", hashlib.sha256(value).hexdigest().encode()),
            ("crosssell.value.truncated_to", str(cut).encode()),
        ]
        value = value[:cut]
    key = letter.key
    if key is not None and len(key) > MAX_KEY_BYTES:
        own += [("crosssell.key.bytes", str(len(key)).encode()),
                ("crosssell.key.sha256", hashlib.sha256(key).hexdigest().encode())]
        key = key[:MAX_KEY_BYTES]
    budget = max_bytes - RECORD_OVERHEAD - len(value) - len(key or b"") - _size(own)
    kept: list[tuple[str, bytes]] = []
    dropped = 0
    for name, header_value in letter.headers:
        if name.startswith(HEADER_PREFIX):
            name = RENAMED_PREFIX + name
        header = (name, header_value if header_value is not None else b"")
        size = _size([header])
        if keep_value and size <= budget - 64:  # 64: room for the count of dropped headers
            kept.append(header)
            budget -= size
        else:
            dropped += 1
    if dropped:
        own.append(("crosssell.headers.dropped", str(dropped).encode()))
    return DeadLetterRecord(key, value, [*kept, *own])


def record_size(record: DeadLetterRecord) -> int:
    return len(record.key or b"") + len(record.value) + _size(record.headers)


def _size(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(name.encode()) + len(value) + 8 for name, value in headers)


def _shortened(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[:MAX_DETAIL_CHARS - 1] + "…"
