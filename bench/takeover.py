"""``python -m bench.takeover``: how long a worker restart or a worker death pauses counting.

Starts an embedded broker (Tansu, 127.0.0.1, a free port), two workers of one
group (``python -m streams worker``) and steady traffic (``python -m streams
generate --rate R``). Once both count, and after ``--warmup`` seconds (so the
changelog holds state to recover), each round makes three changes, alternating
between the workers from round to round:

  restart   SIGTERM one worker, and start it again as soon as it has exited
            (same settings, same data directory)
  kill      SIGKILL one worker: its partitions must move to the other
  rejoin    start a worker in place of the killed one

A thread per worker process scrapes its /metrics every ``--every`` seconds for
``crosssell_applied_offset{partition}``, the highest orders offset the worker
has applied per partition. A worker *counts* a partition at a scrape when that
offset is above what the same process reported for it at its previous scrape
(a partition's first report after it arrives is restored state, not counting).
Measured from the signal (from starting the new worker for ``rejoin``):

  restarted counts    until the restarted (or rejoining) process counts any partition
  partitions count    until every partition the faulted worker owned counts again, on any worker
  other pauses        the longest stretch in which the other worker counted nothing
  other paused total  the sum of its stretches longer than --pause-gap (a restart can cause two)

Under steady traffic a worker counts at every scrape, so a stretch is at most
one scrape interval too long. A change is over when every live worker, and
every partition, has counted at every scrape for ``--settle`` seconds (and the
restarted process has counted); ``--timeout`` seconds without that is a
failure (the figures then say "none").

Worker settings come from the CROSSSELL_* variables of the environment (the
broker, app id, web port and data directory are the benchmark's own), so the
same command measures a change of settings:

  CROSSSELL_SESSION_TIMEOUT_SECONDS=3 python -m bench.takeover

Prints a table (median and worst over the rounds) and writes JSON to
bench/results/takeover.json. Exit code 0 when every change settled, 1 when one
did not, 2 for bad arguments or settings. All processes and the broker are
stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.procs import Child, ChildFailed, Children, children, python_module
from bench.report import machine, write_json
from streams.ops.admin import ensure_topics
from streams.ops.broker import LOOPBACK, BrokerError, EmbeddedBroker, free_port
from streams.settings import Settings, SettingsError

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "takeover.json"
# Settings the benchmark sets per cluster or per worker; every other CROSSSELL_* variable passes through.
OWNED_SETTINGS = ("CROSSSELL_BROKER_URL", "CROSSSELL_APP_ID", "CROSSSELL_WEB_PORT", "CROSSSELL_DATA_DIR")
APPLIED = re.compile(rb'^crosssell_applied_offset\{partition="(\d+)"\} (\S+)$', re.MULTILINE)
# The figures of each kind of change, as the table names them.
LABELS: Mapping[str, Mapping[str, str]] = {
    "restart": {"restarted_counts_s": "the restarted worker counts again",
                "partitions_count_s": "all its partitions count again",
                "other_longest_pause_s": "(the other worker's longest pause)",
                "other_paused_total_s": "(the other worker's pauses in total)"},
    "kill": {"partitions_count_s": "all the dead worker's partitions count again",
             "other_longest_pause_s": "(the other worker's longest pause)",
             "other_paused_total_s": "(the other worker's pauses in total)"},
    "rejoin": {"restarted_counts_s": "the new worker counts",
               "other_longest_pause_s": "(the other worker's longest pause)",
               "other_paused_total_s": "(the other worker's pauses in total)"},
}


# -- What the scrapes say (pure) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrape:
    """One successful /metrics scrape: seconds since the change, which process, offsets per partition."""

    t: float
    process: str
    offsets: Mapping[int, int]


def counting(scrapes: Iterable[Scrape], process: str) -> list[tuple[float, frozenset[int]]]:
    """When ``process`` counted, and which partitions: offsets above its own previous scrape's."""
    previous: Mapping[int, int] = {}
    counted = []
    for scrape in sorted((s for s in scrapes if s.process == process), key=lambda s: s.t):
        advanced = frozenset(p for p, offset in scrape.offsets.items() if p in previous and offset > previous[p])
        if advanced:
            counted.append((scrape.t, advanced))
        previous = scrape.offsets
    return counted


def first_count(scrapes: Sequence[Scrape], processes: Iterable[str], partition: int | None = None,
                after: float = 0.0) -> float | None:
    """The first time after ``after`` at which one of ``processes`` counted (``partition``, or any)."""
    times = [t for process in set(processes) for t, advanced in counting(scrapes, process)
             if t > after and (partition is None or partition in advanced)]
    return min(times, default=None)


def pauses(scrapes: Sequence[Scrape], process: str, end: float) -> list[float]:
    """Stretches without counting of ``process`` from its last count before 0 up to ``end``.

    A stretch still open at ``end`` counts up to ``end``.
    """
    times = [t for t, _ in counting(scrapes, process)]
    before = [t for t in times if t <= 0]
    marks = ([before[-1]] if before else [0.0]) + [t for t in times if 0 < t <= end]
    gaps = [b - a for a, b in pairwise(marks)]
    gaps.append(end - marks[-1])
    return gaps


@dataclass
class Change:
    """One change to the fleet and what the scrapes around it say."""

    kind: str  # restart, kill, rejoin
    worker: str  # the worker changed (a, b)
    faulted: str | None  # the process that was stopped or killed
    newcomer: str | None  # the process started by the change
    others: list[str]  # processes that ran throughout
    faulted_partitions: list[int]
    end: float  # seconds after the change at which the observation ended
    settled: bool
    events: dict[str, float] = field(default_factory=dict)  # e.g. exited_s, started_s
    measured: dict[str, Any] = field(default_factory=dict)  # figures(), once observed

    def figures(self, scrapes: Sequence[Scrape], pause_gap: float) -> dict[str, Any]:
        newcomer = [self.newcomer] if self.newcomer else []
        survivors = [p for p in {s.process for s in scrapes} if p != self.faulted]
        per_partition = {p: first_count(scrapes, survivors, p) for p in self.faulted_partitions}
        counted = [t for t in per_partition.values() if t is not None]
        partitions_count = max(counted) if counted and len(counted) == len(per_partition) else None
        longest: float | None = None
        total: float | None = None
        other_pauses = {}
        for other in self.others:
            gaps = pauses(scrapes, other, self.end)
            other_pauses[other] = [round(g, 2) for g in gaps if g > pause_gap]
            longest = max(longest or 0.0, *gaps)
            total = max(total or 0.0, sum(g for g in gaps if g > pause_gap))
        return {
            "restarted_counts_s": first_count(scrapes, newcomer) if newcomer else None,
            "partitions_count_s": partitions_count,
            "other_longest_pause_s": longest,
            "other_paused_total_s": total,
            "partitions": {str(p): t for p, t in per_partition.items()},
            "other_pauses_over_gap_s": other_pauses,
        }


def summarize(changes: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per kind of change and figure: median and worst over the rounds; a round without the figure
    (it never happened within the timeout) makes the worst None."""
    summary: dict[str, dict[str, dict[str, float | None]]] = {}
    for kind, labels in LABELS.items():
        values_of = [c["figures"] for c in changes if c["kind"] == kind]
        if not values_of:
            continue
        summary[kind] = {}
        for key in labels:
            values = [figures[key] for figures in values_of]
            known = [v for v in values if v is not None]
            summary[kind][key] = {
                "median": round(statistics.median(known), 2) if known else None,
                "worst": None if None in values else round(max(known), 2),
            }
    return summary


def table(summary: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> str:
    def cell(value: float | None) -> str:
        return "none" if value is None else f"{value:.1f}"

    header = f"{'change':<8} {'seconds from the change until':<42} {'median':>7} {'worst':>7}"
    lines = [header, "-" * len(header)]
    for kind, figures in summary.items():
        for key, value in figures.items():
            lines.append(f"{kind:<8} {LABELS[kind][key]:<42} {cell(value['median']):>7} {cell(value['worst']):>7}")
    return "\n".join(lines)


# -- Running the fleet ----------------------------------------------------------------


def applied_offsets(body: bytes) -> dict[int, int]:
    return {int(p): int(float(v)) for p, v in APPLIED.findall(body)}


class Scraper:
    """A thread per worker process, scraping its applied offsets every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.scrapes: list[tuple[float, str, dict[int, int]]] = []  # monotonic time, process, offsets
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def watch(self, process: str, port: int, child: Child) -> None:
        thread = threading.Thread(target=self._run, args=(process, port, child), name=f"scrape-{process}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, process: str, port: int, child: Child) -> None:
        url = f"http://{LOOPBACK}:{port}/metrics"
        next_at = time.monotonic()
        while not self._stop.is_set() and child.alive():
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                body = response.read()
                # The time the answer arrived: the offsets are at least this fresh.
                with self._lock:
                    self.scrapes.append((time.monotonic(), process, applied_offsets(body)))
            next_at = max(next_at + self.every, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def since(self, origin: float, start: float | None = None) -> list[Scrape]:
        """Scrapes (from ``start``, monotonic) with times relative to ``origin``."""
        with self._lock:
            taken = list(self.scrapes)
        return [Scrape(t - origin, process, offsets) for t, process, offsets in taken
                if start is None or t >= start]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


@dataclass
class WorkerSlot:
    """A worker of the fleet (a, b) and its current process."""

    name: str
    env: dict[str, str]
    port: int
    generation: int = 0
    child: Child | None = None

    @property
    def process(self) -> str:
        return f"{self.name}{self.generation}"


class Fleet:
    def __init__(self, group: Children, base_env: dict[str, str], data_dir: Path, scraper: Scraper) -> None:
        self.group = group
        self.scraper = scraper
        self.slots = {
            name: WorkerSlot(name, {**base_env, "CROSSSELL_WEB_PORT": str(port),
                                    "CROSSSELL_DATA_DIR": str(data_dir / name)}, port)
            for name, port in (("a", free_port()), ("b", free_port()))
        }

    def start(self, name: str) -> str:
        slot = self.slots[name]
        slot.generation += 1
        slot.child = self.group.start(f"worker-{slot.process}", python_module("streams", "worker"), slot.env)
        self.scraper.watch(slot.process, slot.port, slot.child)
        return slot.process

    def live(self) -> list[str]:
        return [slot.process for slot in self.slots.values() if slot.child is not None and slot.child.alive()]

    def check_alive(self, names: Iterable[str]) -> None:
        for name in names:
            child = self.slots[name].child
            if child is None:
                raise ChildFailed(f"worker {name} is not running")
            child.check_alive()


def settled(scrapes: Sequence[Scrape], processes: Sequence[str], partitions: int, now: float,
            settle: float, every: float) -> bool:
    """Every process, and every partition, counted at each scrape of the last ``settle`` seconds."""
    window_start = now - settle
    counted_partitions: set[int] = set()
    for process in processes:
        times = [t for t, _ in counting(scrapes, process)]
        recent = [t for t in times if t >= window_start]
        # Counting throughout: a count near each end of the window and no gap of more than 3 intervals.
        marks = [t for t in times if t >= window_start - 3 * every]
        if not recent or recent[0] > window_start + 3 * every or now - recent[-1] > 3 * every:
            return False
        if any(b - a > 3 * every for a, b in pairwise(marks)):
            return False
        for t, advanced in counting(scrapes, process):
            if t >= window_start:
                counted_partitions |= advanced
    return len(counted_partitions) == partitions


def wait_settled(fleet: Fleet, scraper: Scraper, names: Sequence[str], origin: float, partitions: int,
                 args: argparse.Namespace, must_count: str | None = None) -> tuple[float, bool]:
    """Until the workers ``names`` have settled (see :func:`settled`); returns (end, settled)."""
    deadline = origin + args.timeout
    while time.monotonic() < deadline:
        fleet.check_alive(names)
        now = time.monotonic() - origin
        scrapes = scraper.since(origin)
        processes = [fleet.slots[n].process for n in names]
        if (settled(scrapes, processes, partitions, now, args.settle, args.every)
                and (must_count is None or first_count(scrapes, [must_count]) is not None)):
            return now, True
        time.sleep(args.every)
    return time.monotonic() - origin, False


def owned(scraper: Scraper, process: str) -> list[int]:
    """The partitions in the latest scrape of ``process``."""
    latest = [s for s in scraper.since(0.0) if s.process == process]
    return sorted(latest[-1].offsets) if latest else []


def run_change(kind: str, name: str, fleet: Fleet, scraper: Scraper, partitions: int,
               args: argparse.Namespace) -> Change:
    other = "a" if name == "b" else "b"
    slot = fleet.slots[name]
    before = slot.process if kind != "rejoin" else None
    faulted_partitions = owned(scraper, before) if before else []
    others = [fleet.slots[other].process]
    events: dict[str, float] = {}
    origin = time.monotonic()
    if kind == "restart":
        assert slot.child is not None
        fleet.group.stop(slot.child, timeout=60)  # SIGTERM, wait
        events["exited_s"] = round(time.monotonic() - origin, 2)
        newcomer: str | None = fleet.start(name)
        events["started_s"] = round(time.monotonic() - origin, 2)
        names = [name, other]
    elif kind == "kill":
        assert slot.child is not None
        slot.child.process.kill()
        slot.child.process.wait()
        newcomer = None
        names = [other]
    else:
        newcomer = fleet.start(name)
        names = [name, other]
    end, ok = wait_settled(fleet, scraper, names, origin, partitions, args, must_count=newcomer)
    change = Change(kind, name, before, newcomer, others, faulted_partitions, round(end, 2), ok, events)
    # From a few seconds before the change: each process's last count before it.
    change.measured = change.figures(scraper.since(origin, start=origin - 5), args.pause_gap)
    return change


def worker_env(broker_url: str, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OWNED_SETTINGS}
    env.setdefault("CROSSSELL_LOG_LEVEL", "info")  # the logs tell what a pause was made of
    env.update({
        "CROSSSELL_BROKER_URL": broker_url,
        "CROSSSELL_APP_ID": f"takeover-{uuid.uuid4().hex[:8]}",
        "CROSSSELL_PARTITIONS": str(args.partitions),
    })
    return env


def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    scraper = Scraper(args.every)
    with EmbeddedBroker() as broker, children(log_dir) as group:
        env = worker_env(broker.url, args)
        settings = Settings.from_env({**env, "CROSSSELL_WEB_PORT": "1"})
        ensure_topics(broker.bootstrap, settings)
        fleet = Fleet(group, env, log_dir, scraper)
        try:
            started = time.monotonic()
            fleet.start("a")
            fleet.start("b")
            group.start("generator", python_module("streams", "generate", "--rate", str(args.rate),
                                                   "--duration", "0", "--seed", str(args.seed)), env)
            end, ok = wait_settled(fleet, scraper, ["a", "b"], started, args.partitions, args)
            if not ok:
                raise ChildFailed(f"the two workers did not both count within {args.timeout:g}s")
            print(f"takeover: two workers count {args.rate:g} orders/s on {args.partitions} partitions "
                  f"after {end:.1f}s; warming up for {args.warmup:g}s", flush=True)
            time.sleep(args.warmup)
            for number in range(1, args.rounds + 1):
                name = "b" if number % 2 else "a"
                for kind in ("restart", "kill", "rejoin"):
                    change = run_change(kind, name, fleet, scraper, args.partitions, args)
                    document = {"round": number, "kind": kind, "worker": name, "faulted": change.faulted,
                                "newcomer": change.newcomer, "others": change.others,
                                "faulted_partitions": change.faulted_partitions, "settled": change.settled,
                                "end_s": change.end, "run_time_s": round(time.monotonic() - started, 1),
                                **change.events, "figures": change.measured}
                    rounds.append(document)
                    print(f"takeover: round {number} {kind} {name}: " + ", ".join(
                        f"{label} {_seconds(change.measured[key])}" for key, label in LABELS[kind].items())
                        + ("" if change.settled else f"; NOT settled within {args.timeout:g}s"), flush=True)
                    if not change.settled:
                        return _document(args, env, rounds)
                    time.sleep(args.pause_between)
        finally:
            scraper.stop()
    return _document(args, env, rounds)


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}s"


def _document(args: argparse.Namespace, env: Mapping[str, str], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "benchmark": "takeover",
        "machine": machine(),
        "parameters": {k: v for k, v in vars(args).items() if k != "output"} | {"output": str(args.output)},
        "settings": {k: v for k, v in sorted(env.items())
                     if k.startswith("CROSSSELL_") and k not in OWNED_SETTINGS},
        "summary": summarize(rounds),
        "changes": rounds,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.takeover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="restart + kill + rejoin rounds (default 2)")
    parser.add_argument("--rate", type=float, default=200.0, help="orders/s of the steady traffic (default 200)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds both workers count before the first change (default 20)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds every worker and partition must count for a change to be over (default 5)")
    parser.add_argument("--pause-between", type=float, default=3.0, help="seconds between changes (default 3)")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between scrapes of a worker (default 0.2)")
    parser.add_argument("--pause-gap", type=float, default=1.0,
                        help="a stretch without counting longer than this is a pause (default 1)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a change may take to settle (default 120)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rounds < 1 or args.rate <= 0 or args.partitions < 2 or args.every <= 0 or args.settle <= 0:
        print("takeover: --rounds >= 1, --rate > 0, --partitions >= 2, --every > 0 and --settle > 0",
              file=sys.stderr)
        return 2
    try:
        Settings.from_env({k: v for k, v in os.environ.items() if k not in OWNED_SETTINGS})
    except SettingsError as exc:
        print(f"takeover: bad setting: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    log_dir = Path(tempfile.mkdtemp(prefix="crosssell-takeover-"))
    try:
        document = run(args, log_dir)
    except KeyboardInterrupt:
        print(f"takeover: interrupted; everything stopped. Logs: {log_dir}", file=sys.stderr)
        return 130
    except (ChildFailed, BrokerError, RuntimeError) as exc:
        print(f"takeover: failed: {exc}\ntakeover: logs of every process: {log_dir}", file=sys.stderr)
        return 1
    write_json(args.output, document)
    print(table(document["summary"]))
    print(f"takeover: results written to {args.output}")
    ok = all(change["settled"] for change in document["changes"]) and len(document["changes"]) == 3 * args.rounds
    if args.keep_logs or not ok:
        print(f"takeover: logs of every process: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0 if ok else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
