"""Before/after markers: what `mark` accepts, how they travel, and which one the comparison uses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.orders.config import window_config
from streams.orders.contract import Limits, Order, Rejection, decode_order
from streams.orders.experiments import GroupSums
from streams.orders.ledger import PartitionLedger
from streams.orders.markers import (
    FUTURE_SKEW_SECONDS,
    Marker,
    MarkerError,
    current_marker,
    decode_marker,
    latest,
    listed,
    new_marker,
)
from streams.orders.snapshot import period_group, take_snapshot
from streams.settings import Settings

NOW = 1_764_000_000.0


@pytest.mark.parametrize(("text", "at", "complaint"), [
    ("", None, "empty"),
    ("   ", None, "empty"),
    ("x" * 201, None, "at most 200"),
    ("launched", NOW + FUTURE_SKEW_SECONDS + 1, "in the future"),
])
def test_a_marker_that_cannot_mean_anything_is_refused_saying_why(text: str, at: float | None,
                                                                   complaint: str) -> None:
    with pytest.raises(MarkerError, match=complaint):
        new_marker(text, at, NOW)


@pytest.mark.parametrize(("at", "expected"), [(None, NOW), (NOW - 86400, NOW - 86400),
                                              (NOW + FUTURE_SKEW_SECONDS, NOW + FUTURE_SKEW_SECONDS)])
def test_a_marker_is_stamped_now_or_at_the_given_time_within_the_clock_skew(at: float | None,
                                                                            expected: float) -> None:
    marker = new_marker("  launched AI assistant ", at, NOW)
    assert (marker.text, marker.at, marker.written_at) == ("launched AI assistant", expected, NOW)


def test_a_marker_reads_back_as_written_and_a_tombstone_or_garbage_is_no_marker() -> None:
    marker = new_marker("launched AI assistant", NOW - 60, NOW)
    assert decode_marker(marker.value()) == marker
    for value in (None, b"", b"not json", b'{"text": ""}', b'{"text": "x", "at_seconds": "soon"}', b"[]"):
        assert decode_marker(value) is None


def test_the_same_marker_written_twice_has_one_key_and_another_text_another() -> None:
    a, b = new_marker("a", NOW - 5, NOW), new_marker("a", NOW - 5, NOW + 3)
    assert a.key() == b.key() != new_marker("b", NOW - 5, NOW).key()


def test_the_latest_marker_is_the_newest_event_time_and_ties_go_to_the_last_written() -> None:
    old = Marker("old", NOW - 100, NOW)
    new = Marker("new", NOW - 10, NOW - 50)
    again = Marker("again", NOW - 10, NOW - 40)
    assert latest([]) is None
    assert latest([new, old]) == new
    assert latest([again, old, new]) == again
    assert [row["text"] for row in listed([again, new, old])] == ["old", "new", "again"]


def test_the_setting_overrides_the_markers_and_without_it_the_latest_marker_counts() -> None:
    markers = [Marker("old", NOW - 100, NOW), Marker("new", NOW - 10, NOW)]
    assert current_marker(markers, "", None) == markers[1]
    pinned = current_marker(markers, "2025-11-24T16:00:00Z", NOW - 1000)
    assert pinned is not None and (pinned.at, pinned.source, pinned.text) == (NOW - 1000, "setting",
                                                                              "2025-11-24T16:00:00Z")
    assert current_marker([], "", None) is None


def _order(n: int, at: float) -> Order | Rejection:
    when = datetime.fromtimestamp(at, UTC).isoformat()
    return decode_order(
        (f'{{"order_id": "o{n}", "customer_id": "c", "occurred_at": "{when}", "currency": "EUR", '
         '"items": [{"product_id": "p", "category": "a", "unit_price": 2, "quantity": 1}]}').encode(), Limits())


def test_the_snapshot_splits_before_and_after_at_the_latest_markers_window() -> None:
    settings = Settings()
    ledger = PartitionLedger(0, window_config(settings))
    base = NOW // 60 * 60
    for n in range(10):  # one order a minute
        ledger.apply(n, _order(n, base + 60 * n), base + 60 * n + 1)
    markers = [Marker("first", base + 120 + 5, NOW), Marker("second", base + 420 + 30, NOW)]
    snap = take_snapshot([ledger], settings, {}, markers=markers)
    assert snap.marker == base + 420 and snap.marker_used == markers[1]
    assert (period_group(snap.periods["before"]).orders, period_group(snap.periods["after"]).orders) == (7, 3)
    report = snap.experiments_json(settings)
    assert report["marker"]["text"] == "second" and report["marker"]["source"] == "topic"
    assert [m["text"] for m in report["markers"]] == ["first", "second"]
    assert GroupSums(*[report["marker"]["after"][k] for k in GroupSums._fields]).orders == 3
    assert take_snapshot([ledger], settings, {}).experiments_json(settings)["marker"] is None
