"""Contender (4): the project's worker (``python -m streams worker``), watched through /metrics."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Event, PacedSend
from bench.procs import Child, ChildFailed, Children, cpu_seconds, peak_rss_mb, python_module
from streams.ops.broker import free_port
from streams.settings import Settings

# One sample per owned orders partition (label partition): the worker's count is their sum.
_EVENTS = re.compile(rb"^crosssell_events_total(?:\{[^}]*\})? ([0-9.e+]+)$", re.MULTILINE)
_ASSIGNED = re.compile(rb"^crosssell_partitions_assigned ([0-9.e+]+)$", re.MULTILINE)


@dataclass
class Worker:
    child: Child
    port: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def scrape(self) -> bytes | None:
        with contextlib.suppress(OSError), urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return bytes(response.read())
        return None

    def counts(self) -> tuple[int, int] | None:
        """(crosssell_events_total, crosssell_partitions_assigned), or None if /metrics did not answer."""
        body = self.scrape()
        if body is None:
            return None
        events, assigned = _EVENTS.findall(body), _ASSIGNED.search(body)
        return int(sum(float(e) for e in events)), int(float(assigned.group(1))) if assigned else 0


def run_settings(broker_url: str, partitions: int, app_id: str) -> Settings:
    """Settings of one run of (4): its own app id and its own topics, so runs do not see each other's messages."""
    return Settings(broker_url=broker_url, partitions=partitions, app_id=app_id, orders_topic=f"{app_id}.orders",
                    dead_letter_topic=f"{app_id}.dead-letters", pairs_topic=f"{app_id}.pairs",
                    recommendations_topic=f"{app_id}.recommendations")


def start_workers(children: Children, count: int, *, name: str, settings: Settings, data_dir: Path,
                  variant: str = "", extra_env: dict[str, str] | None = None) -> list[Worker]:
    workers = []
    for i in range(count):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
        env.update({
            "CROSSSELL_BROKER_URL": settings.broker_url,
            "CROSSSELL_APP_ID": settings.app_id,
            "CROSSSELL_ORDERS_TOPIC": settings.orders_topic,
            "CROSSSELL_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
            "CROSSSELL_PAIRS_TOPIC": settings.pairs_topic,
            "CROSSSELL_RECOMMENDATIONS_TOPIC": settings.recommendations_topic,
            "CROSSSELL_PARTITIONS": str(settings.partitions),
            "CROSSSELL_WEB_PORT": str(port),
            "CROSSSELL_DATA_DIR": str(data_dir / f"{name}-{i}"),
            "CROSSSELL_LOG_LEVEL": "warning",
            **(extra_env or {}),
        })
        if variant:
            env["BENCH_VARIANT"] = variant
            command = python_module("bench.variant_worker")
            if os.environ.get("BENCH_WORKER_SCRIPT"):  # diagnostics: a script that patches, then runs the worker
                command = [sys.executable, os.environ["BENCH_WORKER_SCRIPT"]]
        else:
            command = python_module("streams", "worker")
        child = children.start(f"{name}-{i}", command, env)
        workers.append(Worker(child, port))
    return workers


def wait_assigned(workers: Sequence[Worker], partitions: int, timeout: float) -> None:
    """Until every worker serves /metrics and they own all partitions between them, each some."""
    deadline = time.monotonic() + timeout
    stable = 0
    while time.monotonic() < deadline:
        for worker in workers:
            worker.child.check_alive()
        counts = [worker.counts() for worker in workers]
        ok = all(c is not None and c[1] > 0 for c in counts) and sum(c[1] for c in counts if c) == partitions
        stable = stable + 1 if ok else 0
        if stable >= 6:  # unchanged for ~3 s: the group has settled
            return
        time.sleep(0.5)
    raise ChildFailed(f"the workers did not share the {partitions} partitions within {timeout:g}s; "
                      f"last /metrics counts: {[w.counts() for w in workers]}")


@dataclass
class Sample:
    at: float
    events: int
    cpu: float
    broker_cpu: float = 0.0


@dataclass
class Throughput:
    events: int  # events counted inside the measured span
    seconds: float
    cpu_seconds: float
    peak_rss_mb: list[float]
    samples: int
    broker_cpu_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_seconds_per_million(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0


def _sample(workers: Sequence[Worker], broker_pid: int | None) -> Sample | None:
    before = time.time()
    counts = [worker.counts() for worker in workers]
    after = time.time()
    if any(c is None for c in counts):
        return None
    return Sample((before + after) / 2, sum(c[0] for c in counts if c),
                  sum(cpu_seconds(w.child.pid) for w in workers),
                  cpu_seconds(broker_pid) if broker_pid is not None else 0.0)


def measure_throughput(workers: Sequence[Worker], target: int, timeout: float, interval: float = 0.25,
                       progress: bool = True, ready: Callable[[], bool] = lambda: True,
                       broker_pid: int | None = None) -> Throughput:
    """Poll /metrics from the first event counted until ``target`` events are counted.

    The span runs from the first poll that counts an event to the last poll
    that does not count them all yet: between those two the workers were busy
    all the time, while the last events were done somewhere in the interval
    before the final poll (counting that interval made a 3 s span up to 8 %
    slow). With fewer than three busy polls the final one ends the span. The
    span starts no earlier than ``ready()`` is true (events still being sent
    share the CPU with the workers). With ``broker_pid``, the broker's CPU over
    the span is measured too.
    """
    deadline = time.monotonic() + timeout
    first: Sample | None = None
    busy: Sample | None = None  # the latest poll that counted some but not all events
    busy_polls = 0
    last_note = time.monotonic()
    samples = 0
    while time.monotonic() < deadline:
        for worker in workers:
            worker.child.check_alive()
        sample = _sample(workers, broker_pid)
        samples += 1
        if sample is not None:
            if first is None and sample.events > 0 and ready():
                first = sample
            if sample.events >= target and first is not None:
                if sample.events > target:
                    raise ChildFailed(f"the workers counted {sample.events} events, more than the {target} sent")
                end = busy if busy is not None and busy_polls >= 3 else sample
                return Throughput(end.events - first.events, end.at - first.at, end.cpu - first.cpu,
                                  [peak_rss_mb(w.child.pid) for w in workers], samples,
                                  end.broker_cpu - first.broker_cpu)
            if first is not None:
                busy = sample
                busy_polls += 1
            if progress and time.monotonic() - last_note > 5:
                last_note = time.monotonic()
                print(f"bench:   ... {sample.events}/{target} events", flush=True)
        time.sleep(interval)
    raise ChildFailed(f"the workers did not count {target} events within {timeout:g}s")


@dataclass
class Latency:
    rate: float
    seconds: float
    sent: int
    measured: int
    p50: float
    p99: float
    max: float
    scrape_interval: float
    lost: int = 0
    polls: list[tuple[float, int]] = field(default_factory=list, repr=False)
    # How long each /metrics answer took (request to last byte): part of every measured latency.
    scrape_p50: float = 0.0
    scrape_p99: float = 0.0
    # p99 of the events sent in each second of the phase: a backlog that grows (too little CPU)
    # rises steadily, a stall (a long step of the event loop) shows as a spike.
    p99_by_second: list[float] = field(default_factory=list)


def measure_latency(worker: Worker, *, bootstrap: str, topic: str, events: Sequence[Event], rate: float,
                    base: int, interval: float = 0.05, drain_timeout: float = 60.0) -> Latency:
    """Send ``events`` at ``rate``/s and see when /metrics first counts each of them.

    Event j (0-based) is reflected once crosssell_events_total >= base + j + 1;
    its latency is the time that scrape answered minus the time it was handed
    to the producer. A scrape every ``interval`` seconds adds up to that much.
    """
    polls: list[tuple[float, int]] = []
    scrapes: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            asked = time.time()
            counts = worker.counts()
            if counts is not None:
                answered = time.time()
                polls.append((answered, counts[0]))
                scrapes.append(answered - asked)
            stop.wait(interval)

    poller = threading.Thread(target=poll, name="metrics-poll", daemon=True)
    poller.start()
    sender = PacedSend(bootstrap, topic, events, rate).start()
    try:
        sender.join()
        if sender.error is not None:
            raise sender.error
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and not (polls and polls[-1][1] >= base + len(events)):
            worker.child.check_alive()
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join(5)
    latencies = []
    p = 0
    for j, sent_at in enumerate(sender.sent_at):
        target = base + j + 1
        while p < len(polls) and polls[p][1] < target:
            p += 1
        if p == len(polls):
            break
        latencies.append(max(0.0, polls[p][0] - sent_at))
    if not latencies:
        raise ChildFailed("no live event was reflected in /metrics")
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    by_second: dict[int, list[float]] = {}
    start = sender.sent_at[0]
    for sent_at, latency in zip(sender.sent_at, latencies, strict=False):  # the unreflected tail: none
        by_second.setdefault(int(sent_at - start), []).append(latency)
    p99_by_second = [statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]
                     for _, values in sorted(by_second.items())]
    return Latency(rate=rate, seconds=len(events) / rate, sent=len(sender.sent_at), measured=len(latencies),
                   p50=statistics.median(latencies), p99=quantiles[98], max=max(latencies),
                   scrape_interval=interval, lost=len(sender.sent_at) - len(latencies), polls=polls,
                   scrape_p50=statistics.median(scrapes),
                   scrape_p99=statistics.quantiles(scrapes, n=100, method="inclusive")[98] if len(scrapes) > 1
                   else scrapes[0],
                   p99_by_second=p99_by_second)
