"""Replay a history of order events (NDJSON) into the orders topic, in event-time order.

A history exported from a shop is rarely in event-time order (by customer, by
store, by day of export). Sent as it is, most of it would arrive after its
window closed and be counted late, not applied. So :func:`event_time_order`
sorts the lines by ``occurred_at`` first, in bounded memory: chunks of
``chunk_lines`` sorted in memory and spilled to temporary files, then merged
(lines with the same time keep their order; lines without a readable time go
first, to be rejected by the worker as they would anyway). :func:`late_share`
tells how much of what is sent would be late, so a replay sent as it is
(``--no-sort``) warns and names the grace setting.
"""

from __future__ import annotations

import heapq
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from streams.ops.generator import Sender, SendReport, pace
from streams.orders.contract import Order, decode_order
from streams.orders.windows import is_late

DEFAULT_CHUNK_LINES = 200_000
UNREADABLE = float("-inf")  # lines without an event time go first
LATE_WARNING_SHARE = 0.01


def event_time(line: bytes) -> float:
    """The ``occurred_at`` of an order line in unix seconds, or UNREADABLE."""
    decoded = decode_order(line)
    return decoded.occurred_at if isinstance(decoded, Order) else UNREADABLE


def event_time_order(lines: Iterable[bytes], chunk_lines: int = DEFAULT_CHUNK_LINES,
                     out: IO[str] | None = None) -> Iterator[bytes]:
    """The non-blank ``lines`` sorted by event time (stable), holding at most ``chunk_lines`` in memory."""
    return (line for _, line in _timed_in_order(lines, chunk_lines, out))


def _timed_in_order(lines: Iterable[bytes], chunk_lines: int, out: IO[str] | None) -> Iterator[tuple[float, bytes]]:
    """(event time, line) of the non-blank ``lines`` sorted by event time: each line decoded once."""
    with tempfile.TemporaryDirectory(prefix="crosssell-replay-") as spill:
        chunks: list[Path] = []
        chunk: list[tuple[float, int, bytes]] = []
        for read, line in enumerate(_events(lines), start=1):
            chunk.append((event_time(line), read, line))
            if len(chunk) >= chunk_lines:
                chunks.append(_spill(chunk, Path(spill) / f"{len(chunks)}.ndjson"))
                chunk = []
                if out is not None:
                    print(f"  sorted {read} lines by event time", file=out, flush=True)
        chunk.sort()
        if not chunks:
            yield from ((time_, line) for time_, _, line in chunk)
            return
        merged = heapq.merge(*(_read_spilled(path) for path in chunks), iter(chunk))
        yield from ((time_, line) for time_, _, line in merged)


def _timed(lines: Iterable[bytes]) -> Iterator[tuple[float, bytes]]:
    return ((event_time(line), line) for line in _events(lines))


def _events(lines: Iterable[bytes]) -> Iterator[bytes]:
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield line


def _spill(chunk: list[tuple[float, int, bytes]], path: Path) -> Path:
    chunk.sort()
    with open(path, "wb") as spilled:
        for time_, index, line in chunk:
            spilled.write(b"%r\t%d\t%s\n" % (time_, index, line))
    return path


def _read_spilled(path: Path) -> Iterator[tuple[float, int, bytes]]:
    with open(path, "rb") as spilled:
        for record in spilled:
            time_, index, line = record.rstrip(b"\n").split(b"\t", 2)
            yield float(time_), int(index), line


@dataclass(slots=True)
class Lateness:
    """Orders that would reach the worker after their window closed, in the order they are sent.

    One watermark for the whole stream: the worker keeps one per partition, so
    this counts at most what the worker will (an upper bound), which is what a warning needs.
    """

    window: float
    grace: float
    orders: int = 0
    late: int = 0
    watermark: float | None = None

    def see(self, time_: float) -> None:
        if time_ == UNREADABLE:
            return
        self.orders += 1
        watermark = self.watermark
        if watermark is not None and is_late(time_, watermark, self.window, self.grace):
            self.late += 1
        elif watermark is None or time_ > watermark:
            self.watermark = time_

    @property
    def share(self) -> float:
        return self.late / self.orders if self.orders else 0.0


def late_share(times: Iterable[float], window: float, grace: float) -> Lateness:
    """How many of the event ``times``, in this order, would be late against the newest time before them."""
    found = Lateness(window, grace)
    for time_ in times:
        found.see(time_)
    return found


def late_warning(lateness: Lateness, grace: float, sorted_: bool) -> str | None:
    """What to tell the person replaying when a noticeable share would be late; None otherwise."""
    if lateness.share <= LATE_WARNING_SHARE:
        return None
    advice = ("raise CROSSSELL_GRACE_SECONDS, or send them in event-time order (replay without --no-sort)"
              if not sorted_ else "raise CROSSSELL_GRACE_SECONDS")
    return (f"crosssell: warning: about {lateness.late} of {lateness.orders} orders ({lateness.share:.1%}) reach "
            f"the worker after their window closed (CROSSSELL_GRACE_SECONDS={grace:g}s) and will be counted "
            f"late, not applied: {advice}.")


def replay(bootstrap: str, topic: str, lines: Iterable[bytes], *, security: Mapping[str, str], rate: float = 0.0,
           window: float = 60.0, grace: float = 120.0, sort: bool = True, chunk_lines: int = DEFAULT_CHUNK_LINES,
           out: IO[str] = sys.stderr) -> tuple[SendReport, Lateness]:
    """Send each non-blank NDJSON line as one event keyed by its order_id, in event-time order unless not ``sort``."""
    events = _timed_in_order(lines, chunk_lines, out) if sort else _timed(lines)
    sender = Sender(bootstrap, security, topic, out)
    lateness = Lateness(window, grace)
    start = time.monotonic()
    for n, (time_, line) in enumerate(events, start=1):
        sender.send("line", _order_key(line), line)
        lateness.see(time_)
        pace(sender.producer, start, n, rate)
    return sender.finish(), lateness


def _order_key(line: bytes) -> bytes | None:
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    order_id = document.get("order_id") if isinstance(document, dict) else None
    return order_id.encode() if isinstance(order_id, str) else None
