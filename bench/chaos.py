"""``python -m bench.chaos --minutes N [--seed S]``: two workers under fire, checked against an offline truth.

One run, on an embedded broker (Tansu on a free 127.0.0.1 port, topics created
first), with two workers (``python -m streams worker``, one app id):

1. **Traffic and a kill loop.** Ordinary orders (with late, invalid and duplicate
   shares) mixed with the hostile corpus of ``bench/hostile.py``, while a seeded
   loop SIGKILLs one worker at a time and restarts it, faster than the group can
   rebalance (the session timeout is 6 s; kills come every few seconds), and
   once kills both at once.
2. **A backlog after downtime.** Both workers are killed, a large batch of
   orders (with the rest of the hostile corpus) is produced, then both start.
3. **The verdict.** With traffic stopped and the workers settled, every
   partition's events are read back from the orders topic and replayed offline
   (``bench/truth.py``). Each worker's counters, invalid counts by reason,
   duplicates, late events, watermark and rolling-window gauges must equal the
   truth of the partitions it owns; together they own all. The dead-letter topic
   must hold a dead letter, with the right reason and a single ``crosssell.*``
   header of each name, for every invalid event (at-least-once: repeats allowed,
   none missing, none for a valid event; a value or key cut to fit says its
   original size); no message on any topic the workers write may exceed
   ``CROSSSELL_MAX_MESSAGE_BYTES``; no worker may exit unless killed.

Exit code 0 when all of that holds, 1 with the differences otherwise (2 for bad
arguments, 130 when interrupted). Every process the run starts is stopped on
exit, Ctrl-C and errors. ``tests/integration/test_chaos.py`` runs the short form.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.hostile import MIB, Event, Hostile, hostile_corpus
from bench.truth import Declared, Record, Samples, Truth, compared, differences, expected_samples, replay
from streams.ops.admin import ensure_topics
from streams.ops.broker import LOOPBACK, EmbeddedBroker, free_port
from streams.ops.supervisor import kill, spawn, stop
from streams.ops.traffic import OrderMaker, TrafficShape
from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent
# The headers a dead letter always carries (README, The event contract); a dead letter whose value
# or key was cut also says so, with the original's size.
DEAD_LETTER_HEADERS = (
    "crosssell.reason", "crosssell.detail", "crosssell.source.topic", "crosssell.source.partition",
    "crosssell.source.offset", "crosssell.source.timestamp", "crosssell.rejected_at",
)
VALUE_BYTES, KEY_BYTES = "crosssell.value.bytes", "crosssell.key.bytes"
# A killed worker leaves the group after the session timeout; kills come faster than that.
WORKER_SETTINGS = {
    "CROSSSELL_SESSION_TIMEOUT_SECONDS": "6",
    "CROSSSELL_REBALANCE_TIMEOUT_SECONDS": "6",
    "CROSSSELL_LOG_LEVEL": "warning",
    # Small, frequent flushes: more kills land between a flush's phases.
    "CROSSSELL_FLUSH_INTERVAL_SECONDS": "250ms",
    "CROSSSELL_FLUSH_MAX_EVENTS": "500",
}
# Clients that send and read events of several MiB; librdkafka's info lines (a disconnect as the broker stops) kept out.
BIG_MESSAGES = {"message.max.bytes": 16 * MIB, "receive.message.max.bytes": 64 * MIB, "log_level": 4}


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int = 1
    partitions: int = 4
    rate: float = 200.0  # ordinary orders per second while the kill loop runs
    traffic_seconds: float = 180.0
    kill_every: tuple[float, float] = (1.5, 5.0)  # seconds between kills, uniform
    backlog_orders: int = 20_000
    backlog_share: float = 0.25  # of the hostile corpus, sent in the backlog
    baskets: int = 300  # orders of 50 distinct products from a 20,000-product catalogue
    big_sizes: tuple[int, ...] = (MIB, 3 * MIB)
    settle_seconds: float = 240.0
    skip: tuple[str, ...] = ()  # hostile cases whose name contains one of these are not sent

    @classmethod
    def for_minutes(cls, minutes: float, seed: int, rate: float = 200.0) -> Scenario:
        """About ``minutes`` of wall time: three quarters traffic, the backlog a quarter's worth of it."""
        traffic = max(30.0, minutes * 60 * 0.75 - 30)
        return cls(seed=seed, rate=rate, traffic_seconds=traffic, backlog_orders=int(rate * traffic / 3))

    @classmethod
    def short(cls, seed: int = 1) -> Scenario:
        """The CI form: about two minutes, a handful of kills, the whole corpus, a small backlog."""
        return cls(seed=seed, rate=100.0, traffic_seconds=45.0, kill_every=(3.0, 7.0), backlog_orders=3_000,
                   settle_seconds=120.0)


# Sections of a report, causes before consequences.
SECTIONS = (
    "workers that exited without being killed", "sending", "settling", "the hostile corpus against the contract",
    "metrics", "dead letters", "outgoing message sizes", "the truth's own limits",
)


@dataclass
class Report:
    scenario: Scenario
    log_dir: Path
    lines: list[str] = field(default_factory=list)  # what happened
    failures: dict[str, list[str]] = field(default_factory=dict)  # section -> differences

    @property
    def passed(self) -> bool:
        return not any(self.failures.values())

    def note(self, line: str) -> None:
        self.lines.append(line)
        print(f"chaos: {line}", flush=True)

    def fail(self, section: str, lines: Sequence[str]) -> None:
        if lines:
            self.failures.setdefault(section, []).extend(lines)

    def text(self, limit: int = 40, notes: bool = True) -> str:
        out = [f"chaos: {line}" for line in self.lines] if notes else []
        for section, lines in sorted(self.failures.items(), key=lambda kv: SECTIONS.index(kv[0])):
            out.append(f"FAIL {section}: {len(lines)} difference(s)")
            out += [f"  {line}" for line in lines[:limit]]
            if len(lines) > limit:
                out.append(f"  ... and {len(lines) - limit} more")
        out.append(f"chaos: {'PASS' if self.passed else 'FAIL'} (seed {self.scenario.seed}; logs {self.log_dir})")
        return "\n".join(out)


# -- Workers -----------------------------------------------------------------------------


@dataclass
class WorkerSlot:
    """One of the two workers: a process restarted under the same name, each life in its own data dir."""

    name: str
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    lives: int = 0
    started_at: float = 0.0
    crashes: list[str] = field(default_factory=list)  # exits nobody asked for

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.name}.log"

    def start(self) -> None:
        self.lives += 1
        self.port = free_port()
        env = {**self.env, "CROSSSELL_WEB_PORT": str(self.port),
               "CROSSSELL_DATA_DIR": str(self.log_dir / f"data-{self.name}-{self.lives}")}
        with open(self.log_path, "ab") as log:
            log.write(f"=== life {self.lives}, port {self.port}\n".encode())
            log.flush()
            # Its own session (a Ctrl-C reaches this run, which stops the workers), ended if this run dies.
            self.process = spawn([sys.executable, "-m", "streams", "worker"], env, log=log, cwd=REPO)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def kill(self) -> float:
        """SIGKILL; returns how long this life lasted."""
        # An exit of its own before ours is a crash: check() records it.
        if self.check() and self.process is not None:
            kill(self.process)
        return time.monotonic() - self.started_at

    def check(self) -> bool:
        """False (and the exit recorded) when the process ended without being killed by this run."""
        if self.process is None or self.process.poll() is None or self.process.returncode == -signal.SIGKILL:
            return True
        self.crashes.append(f"worker {self.name} life {self.lives} (pid {self.process.pid}) exited with code "
                            f"{self.process.returncode} after {time.monotonic() - self.started_at:.1f}s: "
                            f"{self.first_error()}")
        self.process = None
        return False

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=15)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}{path}", timeout=5) as response:
            return bytes(response.read())

    def metrics(self) -> Samples | None:
        with contextlib.suppress(OSError):
            samples: Samples = {}
            for family in text_string_to_metric_families(self.get("/metrics").decode()):
                for sample in family.samples:
                    samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
            return samples
        return None

    def owned(self) -> list[int] | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return sorted(int(p) for p in orjson.loads(self.get("/api/summary"))["partitions"])
        return None

    def first_error(self) -> str:
        """The first error its current life logged (the cause; what follows is the shutdown), else the last line."""
        with contextlib.suppress(OSError):
            life = self.log_path.read_text(errors="replace").rsplit(f"=== life {self.lives},", 1)[-1].splitlines()
            errors = [line for line in life if "[ERROR]" in line or "[CRITICAL]" in line]
            return (errors or life[-1:] or ["(empty log)"])[0].strip()[:400]
        return "(no log)"


def supervise(slots: Sequence[WorkerSlot]) -> None:
    """Restart a worker that exited on its own, as a process supervisor would (the exit is recorded)."""
    for slot in slots:
        if not slot.check():
            slot.start()


# -- Traffic -----------------------------------------------------------------------------


class Sender:
    """One producer for ordinary orders and hostile cases, in the order they are sent.

    Ordinary orders go to ``crc32(key) % partitions``, as the README asks producers
    to key them. Delivery reports give each hostile case its (partition, offset),
    which is how the truth finds it in the topic.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, seed: int) -> None:
        self.topic, self.partitions = topic, partitions
        self.rng = random.Random(seed)
        self.maker = OrderMaker(random.Random(seed + 1), TrafficShape(
            late_share=0.02, invalid_share=0.02, duplicate_share=0.02))
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                                  "message.timeout.ms": 300_000, **BIG_MESSAGES})
        self.kinds: Counter[str] = Counter()
        self.declared: dict[tuple[int, int], Declared] = {}
        self.failed: list[str] = []
        self.sent = 0
        self.delivered = 0

    def _produce(self, key: bytes | None, value: bytes | None, partition: int,
                 on_delivery: Callable[[object, object], None], headers: Sequence[tuple[str, bytes]] = (),
                 timestamp_ms: int | None = None) -> None:
        extra: dict[str, object] = {"headers": list(headers)} if headers else {}
        if timestamp_ms is not None:
            extra["timestamp"] = timestamp_ms
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, partition=partition, on_delivery=on_delivery,
                                      **extra)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.sent += 1

    def _counted(self, error: object, message: object) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed.append(str(error))

    def ordinary(self, now: float) -> None:
        kind, key, value = self.maker.event(now)
        self.kinds[kind] += 1
        self._produce(key, value, zlib.crc32(key) % self.partitions, self._counted)

    def hostile(self, case: Hostile, now: float) -> None:
        event: Event = case.build(now)
        if event.partition is not None:
            partition = event.partition % self.partitions
        elif event.key is None:
            partition = self.rng.randrange(self.partitions)
        else:
            partition = zlib.crc32(event.key) % self.partitions

        def delivered(error: object, message: object) -> None:
            self._counted(error, message)
            if error is None:
                where = (message.partition(), message.offset())  # type: ignore[attr-defined]
                self.declared[where] = Declared(case.case, case.expect)

        self.kinds["hostile"] += 1
        self._produce(event.key, event.value, partition, delivered, event.headers, event.timestamp_ms)

    def stream(self, seconds: float, rate: float, cases: Sequence[Hostile], stop: threading.Event) -> None:
        """``rate`` ordinary orders a second for ``seconds``, the hostile ``cases`` at seeded moments among them."""
        # The first tenth has only ordinary orders: every partition has a watermark before the first case.
        moments = sorted(self.rng.uniform(0.1, 0.95) * seconds for _ in cases)
        pending = list(zip(moments, cases, strict=True))
        started = time.monotonic()
        count = 0
        while not stop.is_set() and time.monotonic() - started < seconds:
            while pending and pending[0][0] <= time.monotonic() - started:
                self.hostile(pending.pop(0)[1], time.time())
            self.ordinary(time.time())
            count += 1
            ahead = count / rate - (time.monotonic() - started)
            self.producer.poll(max(0.0, ahead))
        for _, case in pending:  # cut short: send what is left, so that every case is sent
            self.hostile(case, time.time())

    def burst(self, orders: int, cases: Sequence[Hostile]) -> None:
        """``orders`` ordinary orders as fast as the producer takes them, the ``cases`` at seeded places."""
        places = sorted(self.rng.randrange(orders) for _ in cases)
        pending = list(zip(places, cases, strict=True))
        for i in range(orders):
            while pending and pending[0][0] <= i:
                self.hostile(pending.pop(0)[1], time.time())
            self.ordinary(time.time())
            if i % 1000 == 0:
                self.producer.poll(0)

    def flush(self) -> None:
        left = self.producer.flush(120)
        if left or self.failed:
            raise RuntimeError(f"{left} events not delivered, {len(self.failed)} failed: {self.failed[:3]}")


# -- Reading topics back -----------------------------------------------------------------


def read_topic(bootstrap: str, topic: str, at_least: int = 0, timeout: float = 60.0,
               quiet: float = 2.0, strict: bool = True) -> dict[int, list[Record]]:
    """Every message of ``topic``, per partition in offset order.

    Reads until it has ``at_least`` messages and nothing new came for ``quiet``
    seconds: not up to the end offsets, which Tansu 0.6.0 reports short of the
    last record when a partition's last batch holds several. Fewer than
    ``at_least`` within ``timeout`` is an error if ``strict``, else what was read.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "max.partition.fetch.bytes": 16 * MIB, "fetch.max.bytes": 32 * MIB, **BIG_MESSAGES})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        records: dict[int, list[Record]] = {p: [] for p in metadata.partitions}
        count = 0
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while (count < at_least or time.monotonic() - last_new < quiet) and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.2):
                if m.error() is None:
                    records[m.partition()].append(Record(
                        m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()),
                        m.timestamp()[1] / 1000.0))
                    count += 1
                    last_new = time.monotonic()
        if count < at_least and strict:
            raise RuntimeError(f"read {count} of at least {at_least} messages of {topic} within {timeout:g}s")
        for p, got in records.items():
            if [r.offset for r in got] != list(range(len(got))):
                raise RuntimeError(f"{topic} partition {p}: offsets not read once each from 0")
        return records
    finally:
        consumer.close()


# -- The run -----------------------------------------------------------------------------


def worker_env(broker_url: str, scenario: Scenario) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
    env.update({"CROSSSELL_BROKER_URL": broker_url, "CROSSSELL_APP_ID": f"chaos-{uuid.uuid4().hex[:8]}",
                "CROSSSELL_PARTITIONS": str(scenario.partitions), **WORKER_SETTINGS})
    return env


def run(scenario: Scenario, log_dir: Path) -> Report:
    """The whole scenario; the report says what happened and what differs from the truth."""
    report = Report(scenario, log_dir)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        env = worker_env(broker.url, scenario)
        settings = Settings.from_env(env)
        ensure_topics(broker.bootstrap, settings)
        slots = [WorkerSlot(name, env, log_dir) for name in ("a", "b")]
        for slot in slots:
            stack.callback(slot.stop)
            slot.start()
        report.note(f"seed {scenario.seed}; broker {broker.bootstrap}; {scenario.partitions} partitions; two "
                    f"workers (app id {env['CROSSSELL_APP_ID']}); logs in {log_dir}")
        rng = random.Random(scenario.seed)
        corpus = hostile_corpus(random.Random(scenario.seed + 2), partitions=scenario.partitions,
                                max_event_bytes=settings.max_event_bytes, baskets=scenario.baskets,
                                big_sizes=scenario.big_sizes)
        corpus = [case for case in corpus if not any(text in case.case for text in scenario.skip)]
        rng.shuffle(corpus)
        in_backlog = round(len(corpus) * scenario.backlog_share)
        backlog_cases, traffic_cases = corpus[:in_backlog], corpus[in_backlog:]
        sender = Sender(broker.bootstrap, settings.orders_topic, scenario.partitions, scenario.seed + 3)
        if not wait_for_group(slots, scenario.partitions, timeout=90):
            report.note("the two workers did not share the partitions within 90s; going on")
        report.note(f"phase 1: {scenario.traffic_seconds:g}s of traffic at {scenario.rate:g} orders/s with "
                    f"{len(traffic_cases)} hostile events, SIGKILLs every {scenario.kill_every[0]:g}-"
                    f"{scenario.kill_every[1]:g}s (session timeout {settings.session_timeout_seconds:g}s)")
        stop = threading.Event()
        stack.callback(stop.set)
        errors: list[BaseException] = []
        thread = threading.Thread(target=_guarded, args=(sender.stream, errors, scenario.traffic_seconds,
                                                         scenario.rate, traffic_cases, stop), daemon=True)
        thread.start()
        kill_loop(slots, rng, scenario, report)
        thread.join()
        if errors:
            raise errors[0]

        report.note(f"phase 2: both workers down; a backlog of {scenario.backlog_orders} orders with "
                    f"{len(backlog_cases)} hostile events")
        for slot in slots:
            slot.kill()
            slot.check()
        # What the coming restart will recover (a diagnosis for the counts checked at the end).
        report.note("before the restart, " + meta_beyond_recovery(
            broker.bootstrap, f"{env['CROSSSELL_APP_ID']}-state-changelog"))
        sender.burst(scenario.backlog_orders, backlog_cases)
        sender.flush()
        for slot in slots:
            slot.start()
        report.note(f"sent {sender.delivered} events: {dict(sorted(sender.kinds.items()))}")

        records = read_topic(broker.bootstrap, settings.orders_topic, at_least=sender.delivered)
        produced = sum(len(r) for r in records.values())
        truth = replay(records, sender.declared, settings, time.time())
        report.note(_truth_line(truth))
        settled = settle(slots, produced, scenario, report)
        if not settled:
            report.fail("settling", [where_partitions_stand(broker.bootstrap, env["CROSSSELL_APP_ID"], records,
                                                            slots, settings)])
        report.note(f"phase 3: {'settled' if settled else 'NOT settled'} after "
                    f"{time.monotonic() - began:.0f}s in all")
        check_metrics(slots, truth, settings, report)
        check_dead_letters(broker.bootstrap, records, truth, settings, report)
        check_message_sizes(broker.bootstrap, settings, report)
        report.fail("the hostile corpus against the contract", truth.corpus_disagreements)
        report.fail("the truth's own limits", truth.out_of_range)
        report.fail("workers that exited without being killed", [c for s in slots for c in s.crashes])
        if len(sender.declared) != len(corpus):
            report.fail("sending", [f"{len(sender.declared)} of {len(corpus)} hostile events delivered"])
        if not report.passed:
            save_evidence(log_dir, records, truth, sender.declared, slots)
            report.note(f"evidence in {log_dir}: orders.jsonl (the topic), verdicts.tsv (the truth), "
                        f"metrics-<worker>.txt")
    report.note(f"{time.monotonic() - began:.0f}s; {'PASS' if report.passed else 'FAIL'}")
    return report


def _guarded(target: Callable[..., None], errors: list[BaseException], *args: object) -> None:
    try:
        target(*args)
    except BaseException as exc:  # re-raised by the main thread
        errors.append(exc)


def wait_for_group(slots: Sequence[WorkerSlot], partitions: int, timeout: float) -> bool:
    """Until the workers serve and own every partition together (restarting any that crash)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervise(slots)
        owned = [s.owned() for s in slots]
        if all(o is not None for o in owned) and sorted(p for o in owned for p in o or ()) == list(range(partitions)):
            return True
        time.sleep(0.5)
    return False


def kill_loop(slots: Sequence[WorkerSlot], rng: random.Random, scenario: Scenario, report: Report) -> None:
    """Seeded SIGKILLs, one worker at a time and once both, each restarted at once, until the traffic ends."""
    started = time.monotonic()
    end = started + scenario.traffic_seconds
    both_after = started + rng.uniform(0.3, 0.7) * scenario.traffic_seconds
    both_done = False
    kills = []
    next_kill = started + rng.uniform(*scenario.kill_every)
    while time.monotonic() < end:
        supervise(slots)
        if time.monotonic() < next_kill:
            time.sleep(0.1)
            continue
        at = time.monotonic() - started
        if not both_done and time.monotonic() >= both_after:
            victims, both_done = list(slots), True
        else:
            victims = [rng.choice(slots)]
        lives = [f"{s.name}#{s.lives} after {s.kill():.1f}s" for s in victims]
        for slot in victims:
            slot.check()
            slot.start()
        kills.append(f"t={at:.1f}s " + " and ".join(lives))
        next_kill = time.monotonic() + rng.uniform(*scenario.kill_every)
    report.note(f"{len(kills)} kills: {'; '.join(kills)}")


def settle(slots: Sequence[WorkerSlot], produced: int, scenario: Scenario, report: Report) -> bool:
    """Until the workers own every partition and have read every event, twice in a row."""
    deadline = time.monotonic() + scenario.settle_seconds
    steady = 0
    where = ""
    while time.monotonic() < deadline:
        supervise(slots)
        scraped = [s.metrics() for s in slots]
        events = sum(_total(m or {}, "crosssell_events_total") for m in scraped)
        owned = sum((m or {}).get(("crosssell_partitions_assigned", ()), 0.0) for m in scraped)
        where = f"{events:.0f} of {produced} events read, {owned:.0f} of {scenario.partitions} partitions owned; " \
                + "; ".join(_state(slot, m) for slot, m in zip(slots, scraped, strict=True))
        steady = steady + 1 if events == produced and owned == scenario.partitions and None not in scraped else 0
        if steady >= 2:
            return True
        time.sleep(1.0)
    report.fail("settling", [f"after {scenario.settle_seconds:g}s: {where}"])
    return False


def where_partitions_stand(bootstrap: str, group: str, records: Mapping[int, Sequence[Record]],
                           slots: Sequence[WorkerSlot], settings: Settings) -> str:
    """Per partition: events in the topic, the group's committed offset, and the lag its owner reports."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 4})
    try:
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(settings.orders_topic, p) for p in records], timeout=10)}
    except Exception as exc:  # a diagnosis only
        committed = {}
        print(f"chaos: could not read the committed offsets: {exc}", file=sys.stderr)
    finally:
        consumer.close()
    lag: dict[int, float] = {}
    for slot in slots:
        for (name, labels), value in (slot.metrics() or {}).items():
            if name == "crosssell_consumer_lag_messages":
                lag[int(dict(labels)["partition"])] = value
    return "per partition: " + "; ".join(
        f"{p}: {len(events)} events, committed offset {committed.get(p, '?')}, lag reported by its owner "
        f"{lag.get(p, '?')}" for p, events in sorted(records.items()))


def _state(slot: WorkerSlot, metrics: Samples | None) -> str:
    if not slot.alive():
        return f"worker {slot.name} is down"
    if metrics is None:
        return f"worker {slot.name} (pid {slot.pid}, up {slot.uptime:.0f}s) does not serve /metrics"
    return (f"worker {slot.name} has read {_total(metrics, 'crosssell_events_total'):.0f} events and owns "
            f"{metrics.get(('crosssell_partitions_assigned', ()), 0):.0f} partitions")


def check_metrics(slots: Sequence[WorkerSlot], truth: Truth, settings: Settings, report: Report) -> None:
    """Each worker exports exactly the truth of the partitions it owns; together they own all."""
    owned_all: list[int] = []
    for slot in slots:
        for _ in range(5):  # the partition list and the scrape must describe one assignment
            before, scraped, after = slot.owned(), slot.metrics(), slot.owned()
            if before is not None and before == after and scraped is not None:
                break
            time.sleep(1)
        if before is None or scraped is None or before != after:
            report.fail("metrics", [f"worker {slot.name}: no consistent /metrics and /api/summary"])
            continue
        owned_all += before
        expected = expected_samples([truth.partitions[p] for p in before], settings)
        lines = differences(compared(scraped), expected)
        report.fail("metrics", [f"worker {slot.name} (partitions {before}): {line}" for line in lines])
    if sorted(owned_all) != sorted(truth.partitions):
        report.fail("metrics", [f"partitions owned by the workers: {sorted(owned_all)}, "
                                f"not each of {sorted(truth.partitions)} once"])


def check_dead_letters(bootstrap: str, orders: Mapping[int, Sequence[Record]], truth: Truth, settings: Settings,
                       report: Report) -> None:
    """A dead letter for every invalid event, with its reason and key; none for anything else."""
    due = {(p, offset): reason for p, state in truth.partitions.items() for offset, reason in state.rejected.items()}
    originals = {(r.partition, r.offset): r for records in orders.values() for r in records}
    # Missing dead letters are a finding, not an error: read what is there.
    letters = [r for records in read_topic(bootstrap, settings.dead_letter_topic, at_least=len(due), timeout=30,
                                           quiet=3, strict=False).values() for r in records]
    problems: list[tuple[str, int, int]] = []  # (what is wrong, source partition, source offset)
    found: Counter[tuple[int, int]] = Counter()
    for letter in letters:
        names = Counter(name for name, _ in letter.headers)
        repeated = sorted(n for n, count in names.items() if n.startswith("crosssell.") and count > 1)
        headers = dict(letter.headers)  # the last of a repeated name: the worker's own, appended last
        try:
            source = (int(headers["crosssell.source.partition"]), int(headers["crosssell.source.offset"]))
        except (KeyError, ValueError):
            problems.append(("no crosssell.source.partition/offset header (partition, offset of the dead "
                             "letter itself)", letter.partition, letter.offset))
            continue
        found[source] += 1
        reason = headers.get("crosssell.reason", b"").decode(errors="replace")
        if source not in due:
            problems.append((f"a dead letter ({reason}) for an event the truth does not reject", *source))
            continue
        if repeated:
            problems.append((f"headers {repeated} more than once (forged input headers kept under their own "
                             f"name)", *source))
        if reason != due[source]:
            problems.append((f"reason {reason!r} where the truth says {due[source]!r}", *source))
        missing_headers = [n for n in DEAD_LETTER_HEADERS if n not in names]
        if missing_headers:
            problems.append((f"no {missing_headers} header", *source))
        original = originals[source]
        for part, kept, whole, size_header in (("key", letter.key, original.key, KEY_BYTES),
                                               ("value", letter.value or b"", original.value or b"", VALUE_BYTES)):
            if kept == whole:
                continue
            if kept is None or whole is None or not whole.startswith(kept):
                problems.append((f"a {part} that is neither the original nor a prefix of it", *source))
            elif headers.get(size_header) != str(len(whole)).encode():
                problems.append((f"a {part} cut from {len(whole)} bytes without {size_header}: {len(whole)}",
                                 *source))
    missing = sorted(set(due) - set(found))
    for partition in sorted({p for p, _ in missing}):
        reasons = Counter(due[(p, o)] for p, o in missing if p == partition)
        problems += [(f"no dead letter (truth: {dict(reasons)})", p, o) for p, o in missing if p == partition]
    report.fail("dead letters", grouped(problems))
    repeats = sum(count - 1 for count in found.values())
    report.note(f"dead letters: {len(letters)} for {len(due)} invalid events ({repeats} repeated, "
                f"{len(missing)} missing)")


def grouped(problems: Sequence[tuple[str, int, int]]) -> list[str]:
    """One line per kind of problem and partition, with the offsets it concerns."""
    offsets: dict[tuple[str, int], list[int]] = {}
    for what, partition, offset in problems:
        offsets.setdefault((what, partition), []).append(offset)
    lines = []
    for (what, partition), found in offsets.items():
        found.sort()
        shown = ", ".join(map(str, found[:4])) + (f", ... {found[-1]}" if len(found) > 4 else "")
        lines.append(f"{what}: partition {partition}, {len(found)} event(s) at offsets {shown}")
    return lines


def check_message_sizes(bootstrap: str, settings: Settings, report: Report) -> None:
    """No message on a topic the workers write is larger than CROSSSELL_MAX_MESSAGE_BYTES."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    problems = []
    largest = (0, "")
    for topic in sorted(t for t in topics if t != settings.orders_topic and not t.startswith("__")):
        for records in read_topic(bootstrap, topic, timeout=120, quiet=1.0).values():
            for record in records:
                if record.size > largest[0]:
                    largest = (record.size, topic)
                if record.size > settings.max_message_bytes:
                    problems.append(f"{topic} partition {record.partition} offset {record.offset}: "
                                    f"{record.size} bytes of key, value and headers (CROSSSELL_MAX_MESSAGE_BYTES "
                                    f"{settings.max_message_bytes})")
    report.fail("outgoing message sizes", problems)
    report.note(f"largest outgoing message: {largest[0]} bytes on {largest[1]}")


def meta_beyond_recovery(bootstrap: str, changelog: str) -> str:
    """Per partition of the state changelog: is its newest meta key at or past the end offset the broker reports?

    Faust recovers a table up to that end offset; Tansu 0.6.0 reports the base
    offset of a partition's last batch + 1, so a meta key that is not the first
    record of that batch is not recovered. If the source offsets it covered were
    committed, a restarted worker never counts those events again.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{uuid.uuid4().hex[:8]}",
                         "log_level": 4})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(changelog, p), timeout=10)[1]
                for p in consumer.list_topics(changelog, timeout=10).topics[changelog].partitions}
    finally:
        consumer.close()
    at_risk = []
    for p, records in sorted(read_topic(bootstrap, changelog, quiet=1.0).items()):
        metas = [r.offset for r in records if (r.key or b"").endswith(b"/meta")]
        if metas and metas[-1] >= ends[p]:
            tail = ", ".join(f"{r.offset}={(r.key or b'').decode(errors='replace')}"
                             f"{'' if r.value is not None else ' (deleted)'}" for r in records[ends[p] - 1:][:6])
            at_risk.append(f"partition {p}: newest meta at offset {metas[-1]}, end offset reported {ends[p]} "
                           f"(records from there: {tail})")
    if not at_risk:
        return f"every partition's newest meta key in {changelog} is before the end offset the broker reports"
    return f"{changelog}: a restart will NOT recover the newest meta of " + "; ".join(at_risk)


def save_evidence(log_dir: Path, records: Mapping[int, Sequence[Record]], truth: Truth,
                  declared: Mapping[tuple[int, int], Declared], slots: Sequence[WorkerSlot]) -> None:
    """What a failed run leaves to look into (the broker keeps nothing): the orders topic as read, the
    truth's verdict on every event, and each worker's last /metrics and /api/summary."""
    with open(log_dir / "orders.jsonl", "wb") as out:
        for events in records.values():
            for r in events:
                out.write(orjson.dumps({
                    "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
                    "key": base64.b64encode(r.key).decode() if r.key is not None else None,
                    "value": base64.b64encode(r.value).decode() if r.value is not None else None,
                    "headers": [[k, base64.b64encode(v or b"").decode()] for k, v in r.headers]}) + b"\n")
    with open(log_dir / "verdicts.tsv", "w") as out:
        out.write("partition\toffset\tverdict\thostile case\n")
        for p, state in sorted(truth.partitions.items()):
            for offset, verdict in state.verdicts:
                case = declared.get((p, offset))
                out.write(f"{p}\t{offset}\t{verdict}\t{case.case if case else ''}\n")
    for slot in slots:
        with contextlib.suppress(OSError):
            (log_dir / f"metrics-{slot.name}.txt").write_bytes(slot.get("/metrics"))
            (log_dir / f"summary-{slot.name}.json").write_bytes(slot.get("/api/summary"))


def _truth_line(truth: Truth) -> str:
    invalid = dict(sorted(truth.invalid().items()))
    return (f"truth: {truth.total('events'):.0f} events, {truth.total('orders'):.0f} orders "
            f"({truth.total('cross_sell_orders'):.0f} cross-sell, {truth.total('items'):.0f} items, revenue "
            f"{truth.total('revenue'):.2f}), {truth.total('late'):.0f} late, {truth.total('duplicates'):.0f} "
            f"duplicates, invalid {invalid}")


# -- Command line ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="about how long the run takes (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the traffic, the corpus order and the kills")
    parser.add_argument("--rate", type=float, default=200.0, help="ordinary orders/s during the kill loop")
    parser.add_argument("--short", action="store_true", help="the CI form (about two minutes; ignores --minutes)")
    parser.add_argument("--skip", action="append", default=[], metavar="TEXT",
                        help="leave out the hostile cases whose name contains TEXT (repeatable), to tell "
                             "failures apart")
    parser.add_argument("--keep-logs", action="store_true", help="keep the log directory after a pass")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        print("chaos: --minutes and --rate must be > 0", file=sys.stderr)
        return 2
    scenario = Scenario.short(args.seed) if args.short else Scenario.for_minutes(args.minutes, args.seed, args.rate)
    scenario = replace(scenario, skip=tuple(args.skip))
    log_dir = Path(tempfile.mkdtemp(prefix="crosssell-chaos-"))
    signal.signal(signal.SIGTERM, _interrupt)  # stop the workers and the broker on SIGTERM too
    try:
        report = run(scenario, log_dir)
    except KeyboardInterrupt:
        print(f"chaos: interrupted (logs: {log_dir})", file=sys.stderr)
        return 130
    print(report.text(notes=False))
    if report.passed and not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())


def _total(metrics: Samples, name: str) -> float:
    """A counter summed over its series (the cumulative counters carry their orders partition)."""
    return sum(value for (sample, _), value in metrics.items() if sample == name)
