"""The worker's memory: where large blocks come from, and where the memory goes.

:func:`pin_mmap_threshold` keeps glibc from moving large blocks into its heap,
where each one freed would stay resident.

With ``CROSSSELL_TRACEMALLOC_SECONDS`` set, the worker traces Python's
allocations (:mod:`tracemalloc`, one frame per allocation). The first snapshot,
that many seconds after the start, is the baseline; every later one logs the
allocation sites that grew most since it: file and line, bytes and blocks
added (in all and since the previous report), and what they hold now. Only
these per-site totals are kept between reports, never a snapshot's traces (one
per live block). A block counts what was asked of the allocator, not what an
object reports: a bytes object in a buffer larger than its length (orjson's
output, see streams/store.py) shows its whole buffer.

A snapshot walks every live block: seconds with the GIL held in a busy worker,
and tracing itself costs CPU on every allocation. Use it to find a leak, with
reports minutes apart, not in production. Allocations made by C code with its
own ``malloc`` (outside Python's allocators) are not traced: the report shows
the traced total next to the process's resident memory for that reason.
"""

from __future__ import annotations

import ctypes
import linecache
import logging
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faust

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value
FRAMES = 1  # one frame per allocation: the site, at the least cost
TOP_SITES = 15
_IGNORED = (tracemalloc.__file__, linecache.__file__, "<unknown>")


@dataclass(frozen=True, slots=True)
class SiteGrowth:
    """One allocation site: what it holds now, what of that is new since the baseline and since the last report."""

    site: str  # "path/to/file.py:123"
    size: int  # bytes held now
    count: int  # blocks held now
    size_diff: int  # bytes since the baseline
    count_diff: int
    recent_diff: int  # bytes since the previous report


Totals = dict[str, tuple[int, int]]  # site -> (bytes, blocks)


def site_totals(statistics: Iterable[tracemalloc.Statistic]) -> Totals:
    """Bytes and blocks per site ("file:line"), from ``Snapshot.statistics("lineno")``.

    The tracer's own allocations are left out (filtered here, on a few thousand
    sites, rather than with ``Snapshot.filter_traces`` on millions of traces).
    """
    totals: Totals = {}
    for statistic in statistics:
        frame = statistic.traceback[0]
        if frame.filename not in _IGNORED:
            totals[f"{frame.filename}:{frame.lineno}"] = (statistic.size, statistic.count)
    return totals


def growth(baseline: Totals, previous: Totals, now: Totals, top: int = TOP_SITES) -> list[SiteGrowth]:
    """The ``top`` sites whose held bytes grew most from ``baseline`` to ``now`` (only growing ones)."""
    grown = []
    for site, (size, count) in now.items():
        size_before, count_before = baseline.get(site, (0, 0))
        if size > size_before:
            recent = size - previous.get(site, (0, 0))[0]
            grown.append(SiteGrowth(site, size, count, size - size_before, count - count_before, recent))
    grown.sort(key=lambda g: (-g.size_diff, g.site))
    return grown[:top]


def format_report(elapsed: float, traced: int, rss: int | None, grown: list[SiteGrowth]) -> str:
    rss_text = f"{rss / 2**20:.1f} MiB" if rss is not None else "unknown"
    lines = [f"allocations: {elapsed:.0f}s after the baseline, traced {traced / 2**20:.1f} MiB, RSS {rss_text}; "
             "the sites that grew most (KiB and blocks since the baseline, KiB since the last report, held now):"]
    for g in grown:
        lines.append(f"  {g.size_diff / 1024:+10.1f} KiB {g.count_diff:+9d} blocks {g.recent_diff / 1024:+10.1f} KiB"
                     f"  now {g.size / 1024:10.1f} KiB in {g.count:8d}  {_short(g.site)}")
    if not grown:
        lines.append("  none")
    return "\n".join(lines)


def _short(site: str) -> str:
    """A site relative to site-packages or the project, so the report stays readable."""
    for marker, keep in (("site-packages/", ""), ("/streams/", "streams/")):
        index = site.rfind(marker)
        if index >= 0:
            return keep + site[index + len(marker):]
    return site


def resident_bytes() -> int | None:
    """This process's resident memory (VmRSS), or None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc give every block of ``threshold`` bytes or more its own mapping, for good.

    glibc starts at 128 KiB but raises the threshold to the size of each mapped
    block that is freed (up to 32 MiB). From then on, a smaller block that the
    heap has no room for grows the heap, and its space stays resident once it
    is freed. Each dedup dict reallocates its table (15 MiB per partition at
    3,000 orders/s) every ten minutes or so as deleted entries fill it: RSS rose
    in steps of tens of MiB over a 30-minute soak while the state was flat.
    Fixing the threshold (mallopt M_MMAP_THRESHOLD, which also ends the
    adjustment) maps such blocks, and they go back to the system when freed.

    Returns False where there is no glibc ``mallopt`` to call (macOS, musl).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


class AllocationReport:
    """Traces allocations from :meth:`start`; each :meth:`report` logs the growth since the first one."""

    def __init__(self, top: int = TOP_SITES) -> None:
        self.top = top
        self.baseline: Totals | None = None
        self.previous: Totals = {}
        self.baseline_at = 0.0

    def start(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(FRAMES)

    def totals(self) -> Totals:
        return site_totals(tracemalloc.take_snapshot().statistics("lineno"))

    def report(self, now: float) -> list[SiteGrowth]:
        """Take a snapshot; the first one is the baseline, later ones are compared with it and logged."""
        started = time.monotonic()
        totals = self.totals()
        took = time.monotonic() - started
        previous, self.previous = self.previous, totals
        if self.baseline is None:
            self.baseline, self.baseline_at = totals, now
            log.warning("allocations: baseline taken in %.1fs, traced %.1f MiB; the next reports show growth since now",
                        took, tracemalloc.get_traced_memory()[0] / 2**20)
            return []
        grown = growth(self.baseline, previous, totals, self.top)
        traced = tracemalloc.get_traced_memory()[0]
        log.warning("%s\n  (the snapshot took %.1fs)",
                    format_report(now - self.baseline_at, traced, resident_bytes(), grown), took)
        return grown


def trace_allocations(app: faust.App, interval: float) -> AllocationReport:
    """Start tracing now and report every ``interval`` seconds from a timer of ``app``."""
    allocations = AllocationReport()
    allocations.start()

    async def report_allocations() -> None:
        allocations.report(time.monotonic())

    app.timer(interval, name="allocations.report")(report_allocations)
    return allocations
