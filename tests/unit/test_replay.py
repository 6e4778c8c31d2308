"""streams.ops.replay: event-time order in bounded memory, and the late-share warning."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.ops.replay import UNREADABLE, event_time, event_time_order, late_share, late_warning
from streams.ops.traffic import rfc3339

T0 = 1_800_000_000.0


def line(order_id: str, at: float) -> bytes:
    return orjson.dumps({"order_id": order_id, "customer_id": "c", "occurred_at": rfc3339(at), "currency": "EUR",
                         "items": [{"product_id": "p", "category": "c", "unit_price": 1.0, "quantity": 1}]})


@pytest.mark.parametrize("chunk_lines", [1, 7, 100, 10_000])
def test_lines_come_out_in_event_time_order_whatever_the_chunk_size(chunk_lines: int) -> None:
    rng = random.Random(3)
    events = [line(f"o-{n}", T0 + rng.randrange(0, 6 * 3600)) for n in range(600)]
    shuffled = events[:]
    rng.shuffle(shuffled)
    sent = list(event_time_order([e + b"\n" for e in shuffled] + [b"\n", b"  \n"], chunk_lines))
    assert sorted(sent) == sorted(events)  # every line once, blank lines dropped
    times = [event_time(e) for e in sent]
    assert times == sorted(times)


def test_lines_of_one_time_keep_their_order_and_unreadable_lines_go_first() -> None:
    lines = [line("b", T0 + 5), b"{broken", line("a1", T0), line("a2", T0), b"[]", line("a3", T0)]
    assert list(event_time_order(lines, chunk_lines=2)) == [b"{broken", b"[]", line("a1", T0), line("a2", T0),
                                                             line("a3", T0), line("b", T0 + 5)]


def test_late_share_counts_what_arrives_after_its_window_closed() -> None:
    # Window 60 s, grace 120 s: after T0 + 600, an event before T0 + 420 is late.
    found = late_share([T0, T0 + 600, T0 + 419, T0 + 480, UNREADABLE, T0 + 300], window=60, grace=120)
    assert (found.orders, found.late) == (5, 2)


def test_a_noticeable_late_share_warns_naming_the_grace_setting() -> None:
    lateness = late_share([T0 + 3600, *(T0 + n for n in range(10))], window=60, grace=120)
    warning = late_warning(lateness, grace=120, sorted_=False)
    assert warning is not None and "CROSSSELL_GRACE_SECONDS=120s" in warning and "--no-sort" in warning
    assert late_warning(late_share([T0 + n for n in range(100)], 60, 120), 120, sorted_=False) is None
