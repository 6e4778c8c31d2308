"""streams.runtime.allocations: the allocation-growth report behind CROSSSELL_TRACEMALLOC_SECONDS."""

from __future__ import annotations

import ctypes
import logging
import tracemalloc
from collections.abc import Iterator

import pytest

from streams.runtime.allocations import AllocationReport, SiteGrowth, format_report, growth, pin_mmap_threshold


@pytest.mark.parametrize(
    ("baseline", "previous", "now", "expected"),
    [
        pytest.param({}, {}, {}, [], id="nothing traced"),
        pytest.param({"a.py:1": (100, 1)}, {"a.py:1": (100, 1)}, {"a.py:1": (100, 1)}, [], id="flat is not growth"),
        pytest.param({"a.py:1": (500, 5)}, {}, {"a.py:1": (100, 1)}, [], id="shrinking is not growth"),
        pytest.param({}, {}, {"a.py:1": (300, 3)}, [SiteGrowth("a.py:1", 300, 3, 300, 3, 300)], id="a new site"),
        pytest.param(
            {"a.py:1": (100, 1), "b.py:2": (100, 1)},
            {"a.py:1": (150, 2), "b.py:2": (400, 4)},
            {"a.py:1": (200, 2), "b.py:2": (1100, 11)},
            [SiteGrowth("b.py:2", 1100, 11, 1000, 10, 700), SiteGrowth("a.py:1", 200, 2, 100, 1, 50)],
            id="most grown first, with the growth since the previous report",
        ),
    ],
)
def test_growth_lists_the_sites_that_hold_more_than_at_the_baseline(
    baseline: dict[str, tuple[int, int]], previous: dict[str, tuple[int, int]], now: dict[str, tuple[int, int]],
    expected: list[SiteGrowth],
) -> None:
    assert growth(baseline, previous, now) == expected


def test_growth_keeps_only_the_top_sites() -> None:
    now = {f"a.py:{line}": (line * 10, 1) for line in range(1, 30)}
    assert [g.site for g in growth({}, {}, now, top=3)] == ["a.py:29", "a.py:28", "a.py:27"]


def test_a_report_names_each_site_relative_to_site_packages() -> None:
    grown = [SiteGrowth("/x/site-packages/aiokafka/fetcher.py:9", 4096, 2, 2048, 1, 0)]
    text = format_report(60.0, 2**20, 2**21, grown)
    assert "60s after the baseline, traced 1.0 MiB, RSS 2.0 MiB" in text
    assert "+2.0 KiB" in text and "aiokafka/fetcher.py:9" in text and "/x/" not in text


@pytest.fixture
def tracing() -> Iterator[None]:
    was_tracing = tracemalloc.is_tracing()
    yield
    if not was_tracing:
        tracemalloc.stop()


def test_the_report_after_the_baseline_finds_the_line_that_keeps_memory(
    tracing: None, caplog: pytest.LogCaptureFixture
) -> None:
    report = AllocationReport()
    report.start()
    assert report.report(0.0) == []  # the baseline
    kept = [bytes(10_000) + bytes([i % 256]) for i in range(500)]  # the leak: ~5 MB held at this line
    with caplog.at_level(logging.WARNING, logger="streams.runtime.allocations"):
        grown = report.report(30.0)
    assert grown[0].site.endswith(f"test_allocations.py:{_line_of('kept = [bytes(10_000)')}")
    assert grown[0].size_diff >= 500 * 10_000 and grown[0].count_diff >= 500
    assert "30s after the baseline" in caplog.text and "test_allocations.py" in caplog.text
    del kept


def _line_of(text: str) -> int:
    with open(__file__) as source:
        return next(number for number, line in enumerate(source, 1) if text in line and "_line_of" not in line)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> _MallInfo2:
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _MallInfo2
    return mallinfo2()


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc 2.33 or later")
def test_a_large_block_gets_its_own_mapping_even_after_a_larger_one_was_freed() -> None:
    assert pin_mmap_threshold() is True
    # Larger than all the free space of the heap, so that it must grow (glibc serves a block
    # from free heap space whatever its size): then the threshold decides heap or mapping.
    size = _mallinfo2().fordblks + 2**20
    freed = bytearray(size + 2**20)  # glibc's own rule would raise the threshold above `size` when freed
    del freed
    before = _mallinfo2().hblks
    block = bytearray(size)
    assert _mallinfo2().hblks == before + 1, "the block came from the heap"
    del block
