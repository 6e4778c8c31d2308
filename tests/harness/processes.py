"""Worker processes of a test, scraped over HTTP, and waits that fail loudly."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.broker import LOOPBACK
from streams.ops.supervisor import kill, spawn, stop

REPO = Path(__file__).resolve().parents[2]

def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"

def wait_until(condition: object, timeout: float, message: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")

@dataclass
class Worker:
    """One ``python -m streams worker`` process."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = int(self.env["CROSSSELL_WEB_PORT"])

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Worker:
        with open(self.log_path, "ab") as log:
            self.process = spawn([sys.executable, "-m", "streams", "worker"], self.env, log=log, cwd=REPO)
        return self

    def wait_serving(self, timeout: float = 90.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            with contextlib.suppress(OSError):
                if self.get("/metrics", timeout=2):
                    return self
            time.sleep(0.3)
        raise AssertionError(f"worker did not serve /metrics within {timeout}s:\n{self.log_tail()}")

    def assert_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return bytes(response.read())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics as {(name, sorted labels): value}."""
        text = self.get("/metrics").decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def sample(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of ``name`` that carry ``labels`` (and any others, e.g. ``partition``),
        or None when there is none (or the worker does not answer)."""
        with contextlib.suppress(OSError):
            return labelled_sum(self.metrics(), name, **labels)
        return None

    def summary(self) -> dict[str, object]:
        return dict(orjson.loads(self.get("/api/summary")))

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            stop(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None:
            kill(self.process)

    def log_tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

def labelled_sum(metrics: Samples, name: str, **labels: str) -> float | None:
    """Sum of the samples of ``name`` whose labels include ``labels``; None when there is none."""
    wanted = set(labels.items())
    found = [value for (sample, sample_labels), value in metrics.items()
             if sample == name and wanted <= set(sample_labels)]
    return sum(found) if found else None


def total(workers: Iterable[Worker], name: str, **labels: str) -> float | None:
    """Sum of one sample over ``workers``; None if any of them does not answer."""
    values = [worker.sample(name, **labels) for worker in workers]
    if any(value is None for value in values):
        return None
    return sum(v for v in values if v is not None)

def wait_for_lists_to_settle(workers: Iterable[Worker], timeout: float = 150) -> None:
    """Until the recommendation updates the workers published stop changing (two polls alike, some sent)."""
    workers = list(workers)
    seen = [-1.0]

    def settled() -> bool:
        updates = sum(w.sample("crosssell_recommendation_updates_total") or 0 for w in workers)
        quiet = updates == seen[-1] and updates > 0
        seen.append(updates)
        return quiet

    wait_until(settled, timeout, "recommendation updates to settle", interval=2.5)

def wait_for_events(workers: Iterable[Worker], count: int, timeout: float, partitions: int | None = None) -> None:
    """Until the live workers together have read ``count`` events (and own ``partitions``); else say where they are."""
    workers = list(workers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            worker.assert_alive()
        if total(workers, "crosssell_events_total") == count and (
                partitions is None or total(workers, "crosssell_partitions_assigned") == partitions):
            return
        time.sleep(0.5)
    where = "; ".join(
        f"worker :{w.port} events={w.sample('crosssell_events_total')} "
        f"partitions={w.sample('crosssell_partitions_assigned')} lag={_lag_by_partition(w)}" for w in workers)
    logs = "\n".join(f"--- worker :{w.port}\n{w.log_tail(30)}" for w in workers)
    raise AssertionError(f"after {timeout}s the workers have not read {count} events: {where}\n{logs}")

def _lag_by_partition(worker: Worker) -> dict[str, float]:
    with contextlib.suppress(OSError):
        return {dict(labels).get("partition", "?"): value for (name, labels), value in worker.metrics().items()
                if name == "crosssell_consumer_lag_messages"}
    return {}
