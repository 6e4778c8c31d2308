"""``python -m bench.soak``: does one worker stay flat under steady traffic?

Starts an embedded broker (Tansu, 127.0.0.1, a free port), one worker
(``python -m streams worker``) and the traffic generator (``python -m streams
generate``) at ``--rate`` events/s for ``--minutes``. Every ``--every`` seconds it
samples the worker's resident memory (VmRSS in /proc/<pid>/status) and
``crosssell_state_windows`` from its /metrics. At the end it reports:

* memory: flat when the mean RSS of the last third of the samples is less than
  3% above the mean of the middle third (the first third is warm-up);
* state: ``crosssell_state_windows`` never above partitions x (retention/window + 2):
  per partition the windows whose end is within the retention of the
  watermark (retention/window closed windows plus the open one), plus one
  opened since the last flush: windows expire when state is flushed, every
  CROSSSELL_FLUSH_INTERVAL_SECONDS, not the moment the watermark passes them.

Every horizon of the worker (retention, dedup horizon, pair horizons) is set
to ``--retention`` so state reaches its steady size within the run. Before the
live traffic, the orders topic gets a backfill whose event times run from
retention + 2 windows ago up to now (sparse at first, at ``--rate`` over the
last retention): the watermark passes the retention and windows expire in the
first seconds, and the state holds a full retention of orders before the first
sample, so even a one-minute run measures the steady state.

``--tracemalloc SECONDS`` has the worker log the allocation sites that grew
most every SECONDS (CROSSSELL_TRACEMALLOC_SECONDS, streams/runtime/allocations.py;
with ``--keep-logs``, in worker.log); tracing slows the worker several times.

Exit code 0 when both hold (and the worker never exited), 1 otherwise. All
processes and the broker are stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.admin import ensure_topics
from streams.ops.broker import LOOPBACK, EmbeddedBroker, free_port
from streams.ops.supervisor import spawn, stop
from streams.ops.traffic import OrderMaker, TrafficShape
from streams.settings import Settings, duration_label

DEFAULT_RATE = 1500.0  # events/s, when no benchmark result says what half of the maximum is
BENCH_RESULTS = Path(__file__).parent / "results" / "latest.json"
RSS_GROWTH_LIMIT = 0.03
SCRAPE_TIMEOUT = 5.0
# A worker tracing its allocations stops for seconds while it takes a snapshot.
TRACING_SCRAPE_TIMEOUT = 120.0
SPARSE_PER_SECOND = 20  # backfilled events per second of event time before the last retention


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    rss_mib: float
    state_windows: float
    events: float
    lag: float


def default_rate() -> tuple[float, str]:
    """Half of the worker's measured maximum (bench/results/latest.json), else DEFAULT_RATE."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        document = orjson.loads(BENCH_RESULTS.read_bytes())
        measured = float(document["results"]["pipeline"]["events_per_second"])
        if measured > 0:
            return measured / 2, f"half of the {measured:.0f}/s measured in {BENCH_RESULTS}"
    return DEFAULT_RATE, "the default; no measured maximum"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the traffic runs (default 10)")
    parser.add_argument("--rate", type=float, default=None,
                        help="events/s (default: half of the measured maximum, else 1500)")
    parser.add_argument("--retention", type=float, default=120.0,
                        help="seconds of state the worker keeps (CROSSSELL_RETENTION_SECONDS; default 120)")
    parser.add_argument("--window", type=float, default=60.0, help="window seconds (default 60)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker's log directory")
    parser.add_argument("--tracemalloc", type=float, default=0.0, metavar="SECONDS",
                        help="the worker logs its most grown allocation sites every SECONDS "
                             "(CROSSSELL_TRACEMALLOC_SECONDS, streams/runtime/allocations.py); slows it down")
    return parser


def soak_env(broker_url: str, args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    retention = duration_label(args.retention)
    views = sorted({args.window, args.window * max(1, int(args.retention // args.window))})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
    env.update({
        "CROSSSELL_BROKER_URL": broker_url,
        "CROSSSELL_APP_ID": f"soak-{uuid.uuid4().hex[:8]}",
        "CROSSSELL_PARTITIONS": str(args.partitions),
        "CROSSSELL_WEB_PORT": str(free_port()),
        "CROSSSELL_DATA_DIR": str(data_dir / "worker"),
        "CROSSSELL_LOG_LEVEL": "warning",
        "CROSSSELL_WINDOW_SECONDS": duration_label(args.window),
        "CROSSSELL_RETENTION_SECONDS": retention,
        "CROSSSELL_ROLLING_VIEWS": ",".join(duration_label(v) for v in views),
        "CROSSSELL_DEDUP_HORIZON_SECONDS": retention,
        "CROSSSELL_PAIR_HORIZONS": retention,
    })
    if args.tracemalloc:
        env["CROSSSELL_TRACEMALLOC_SECONDS"] = duration_label(args.tracemalloc)
    return env


@contextlib.contextmanager
def child(name: str, args: Sequence[str], env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``python -m ...`` child that is stopped (SIGTERM, then SIGKILL) however the block ends."""
    with open(log_dir / f"{name}.log", "wb") as log:
        process = spawn([sys.executable, "-m", *args], env, log=log)
    try:
        yield process
    finally:
        stop(process, timeout=20)


def scrape(port: int, timeout: float = SCRAPE_TIMEOUT) -> dict[str, float]:
    """crosssell_ samples of /metrics, summed over labels."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def backfill_times(now: float, retention: float, window: float, rate: float) -> Iterator[float]:
    """Event times from retention + 2 windows ago up to ``now``: sparse, then ``rate``/s over the last retention."""
    start, dense = now - retention - 2 * window, now - retention
    sparse = int((dense - start) * SPARSE_PER_SECOND)
    for i in range(sparse):
        yield start + i / SPARSE_PER_SECOND
    count = int(retention * rate)
    for i in range(count):
        yield dense + retention * i / count


def backfill(bootstrap: str, topic: str, args: argparse.Namespace, rate: float) -> int:
    """Seeded orders at the backfill's event times, in event-time order; returns how many."""
    maker = OrderMaker(random.Random(args.seed + 1), TrafficShape())
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                         "queue.buffering.max.messages": 500_000})
    count = 0
    for event_time in backfill_times(time.time(), args.retention, args.window, rate):
        _, key, value = maker.event(event_time)
        count += 1
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the backfill was not delivered within 120s")
    return count


def generated(log: Path) -> int | None:
    """Events the generator reports it sent (its summary line), or None without a summary.

    Not the topic's end offsets: Tansu 0.6.0 reports the base offset of a
    partition's last batch + 1 as its end offset, short whenever that batch holds
    several records.
    """
    match = re.search(r"generated: (\d+) events in .*; (\d+) failed to deliver", log.read_text(errors="replace"))
    return int(match.group(1)) - int(match.group(2)) if match else None


def wait_serving(port: int, worker: subprocess.Popen[bytes], partitions: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode} before serving")
        with contextlib.suppress(OSError):
            if scrape(port).get("crosssell_partitions_assigned") == partitions:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not own {partitions} partitions within {timeout:g}s")


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def thirds(samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
    """The middle and the last third of the samples (the first third is warm-up)."""
    n = len(samples)
    return list(samples[n // 3:2 * n // 3]), list(samples[2 * n // 3:])


def run(args: argparse.Namespace) -> int:
    rate, rate_source = (args.rate, "--rate") if args.rate is not None else default_rate()
    duration = args.minutes * 60
    bound_per_partition = math.ceil(args.retention / args.window) + 2
    bound = args.partitions * bound_per_partition
    log_dir = Path(tempfile.mkdtemp(prefix="crosssell-soak-"))
    samples: list[Sample] = []
    timeout = TRACING_SCRAPE_TIMEOUT if args.tracemalloc else SCRAPE_TIMEOUT
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        env = soak_env(broker.url, args, log_dir)
        settings = Settings.from_env(env)
        port = settings.web_port
        ensure_topics(broker.bootstrap, settings)
        backfilled = backfill(broker.bootstrap, settings.orders_topic, args, rate)
        print(f"soak: broker {broker.bootstrap}; {args.partitions} partitions; window {args.window:g}s, "
              f"retention {args.retention:g}s; {backfilled} backfilled orders over the last "
              f"{args.retention + 2 * args.window:g}s of event time", flush=True)
        worker = stack.enter_context(child("worker", ["streams", "worker"], env, log_dir))
        wait_serving(port, worker, args.partitions)
        print(f"soak: worker pid {worker.pid} serving on :{port}; traffic {rate:g}/s ({rate_source}) for "
              f"{duration:g}s; a sample every {args.every:g}s", flush=True)
        generator = stack.enter_context(child("generator", [
            "streams", "generate", "--rate", str(rate), "--duration", str(duration), "--seed", str(args.seed)],
            env, log_dir))
        started = time.monotonic()
        next_sample = started + args.every
        while next_sample <= started + duration + 0.01:  # the last sample at the end of the traffic
            if worker.poll() is not None:
                print(f"soak: FAIL: the worker exited with code {worker.returncode} (logs: {log_dir})")
                return 1
            if time.monotonic() >= next_sample:
                next_sample += args.every
                metrics = scrape(port, timeout)
                sample = Sample(time.monotonic() - started, rss_mib(worker.pid),
                                metrics.get("crosssell_state_windows", math.nan),
                                metrics.get("crosssell_events_total", math.nan),
                                metrics.get("crosssell_consumer_lag_messages", math.nan))
                samples.append(sample)
                print(f"  t={sample.seconds:5.0f}s  rss={sample.rss_mib:7.1f} MiB  "
                      f"state_windows={sample.state_windows:4.0f}  events={sample.events:9.0f}  "
                      f"lag={sample.lag:6.0f}", flush=True)
            time.sleep(0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            generator.wait(timeout=60)
        live = generated(log_dir / "generator.log")
        if live is None:
            print(f"soak: FAIL: the generator did not report what it sent (logs: {log_dir})")
            return 1
        sent = backfilled + live
        drain_deadline = time.monotonic() + 60
        processed = scrape(port, timeout).get("crosssell_events_total", 0.0)
        while processed < sent and time.monotonic() < drain_deadline and worker.poll() is None:
            time.sleep(0.5)
            processed = scrape(port, timeout).get("crosssell_events_total", 0.0)
        final_windows = scrape(port, timeout).get("crosssell_state_windows", math.nan)
        worker_exit = worker.poll()
    return report(samples, args, rate, sent, backfilled, processed, final_windows, bound, bound_per_partition,
                  worker_exit, log_dir)


def report(samples: list[Sample], args: argparse.Namespace, rate: float, sent: int, backfilled: int,
           processed: float, final_windows: float, bound: int, bound_per_partition: int,
           worker_exit: int | None, log_dir: Path) -> int:
    failures = []
    print(f"soak: {args.minutes:g} min at {rate:g}/s: {sent} events sent ({backfilled} backfilled), "
          f"{processed:.0f} processed by the end (a minute of drain at most)")
    if processed < sent:
        print(f"soak: note: the worker was {sent - processed:.0f} events behind: it does not keep up with "
              f"{rate:g}/s here")
    middle, last = thirds(samples)
    if not middle or not last:
        failures.append(f"too few samples ({len(samples)}) to compare thirds")
    else:
        before, after = mean([s.rss_mib for s in middle]), mean([s.rss_mib for s in last])
        growth = after / before - 1
        flat = growth < RSS_GROWTH_LIMIT
        print(f"rss: middle third mean {before:.1f} MiB, last third mean {after:.1f} MiB: {growth:+.1%} "
              f"(limit +{RSS_GROWTH_LIMIT:.0%}): {'flat' if flat else 'GROWING'}")
        if not flat:
            failures.append(f"RSS grew {growth:+.1%}")
    highest = max([s.state_windows for s in samples] + [final_windows])
    ok = highest <= bound
    print(f"state windows: max {highest:.0f}, at the end {final_windows:.0f}; bound {bound} = {args.partitions} "
          f"partitions x ({args.retention:g}s / {args.window:g}s + the open window + one not yet flushed) = "
          f"{args.partitions} x {bound_per_partition}: {'ok' if ok else 'EXCEEDED'}")
    if not ok:
        failures.append(f"state windows {highest:.0f} > {bound}")
    if worker_exit is not None:
        failures.append(f"the worker exited with code {worker_exit}")
    if failures:
        print(f"soak: FAIL: {'; '.join(failures)} (logs: {log_dir})")
        return 1
    print("soak: PASS")
    if not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes <= 0 or args.every <= 0 or args.retention < args.window or args.partitions < 1:
        print("soak: --minutes and --every must be > 0, --retention >= --window, --partitions >= 1",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children and the broker on SIGTERM too
    try:
        return run(args)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
