"""``python -m bench.detection``: how fast does the worker detect a drop of the cross-sell rate?

One timeline of generated orders (streams/ops/traffic.py), laid out in event
time over the days before now and sent as fast as possible (a fast event-time
replay) through one worker on the embedded broker (Tansu, 127.0.0.1, a free
port, 4 partitions):

1. a normal week: diurnal 0.2-20 orders/s (trough at midnight), 3 channels,
   2 variants, 12 categories; every alarm in it is a false alarm;
2. at 50, 5 and 0.2 orders/s in turn, drops of 100 %, 50 % and 25 % of the
   cross-sell rate, in the total and in one category (the busiest,
   ``electronics``, about a quarter of the orders), each for 2.5x its limit plus
   5 minutes, then normal traffic long enough for the test to settle (3,000
   orders of the category, at least 15 minutes; at most 16 h).

The limit of a drop: z = (p0 - p1) / sqrt(p0 (1 - p0) / n) reaching 4, n the
orders of the segment after the drop at the scenario's rate, p0 the segment's
rate measured on the normal week's first 200,000 orders. The goal: every drop
detected within 2x its limit plus one evaluation interval (15 s); 0 false
alarms over the week. detect_s is the event time the worker's alarm for the
segment went on (its /api/detection episodes) minus the drop's start.

Prints a table and writes bench/results/detection.json (a JSON list: one
object per drop with scenario, rate_per_s, drop, segment, detect_s, limit_s,
target_s; one per normal run with false_alarms). ``--offline`` runs the same
timeline through the detector alone, without broker or worker (seconds, for
tuning). ``--simulate N`` draws N runs of the timeline per tick from the
generator's order mix (no events built, no broker; ~30 s a run) and prints
the spread of detection / goal per scenario and the false alarms per normal
week: how the thresholds were chosen (streams/orders/detection.py), with
``--thresholds`` and ``--total-thresholds`` to try others. ``--quick`` is the
integration test's short run; ``--week-days`` and ``--rates`` make others.
All processes and the broker are stopped on exit, Ctrl-C and errors included.

The default run sends 6.66 million orders (12.1 days of event time) and took
11 min 55 s on two shared cores (4 min 12 s to send them; the worker applies
them and runs the fleet's drop test through its detection topic); the embedded
broker keeps every message in memory (about 6 GB at its peak in an earlier run;
2.9 GB seen half-way through sending in this one). ``--offline`` takes about 3
minutes for the same timeline.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import math
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from bench.procs import children, python_module, wait_until
from streams.ops.admin import ensure_topics
from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.generator import Sender
from streams.ops.traffic import DAY, Drop, OrderMaker, Scenario, TrafficShape
from streams.orders.contract import Order, decode_order
from streams.orders.detection import DetectionConfig, DropDetector, count_in, low_watermark
from streams.orders.facts import order_facts
from streams.settings import Settings

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "detection.json"
PARTITIONS = 4
CATEGORY = "electronics"  # the busiest category of the generated catalogue
DROPS = (1.0, 0.5, 0.25)
RATES = (50.0, 5.0, 0.2)
EVALUATION = 15.0  # Prometheus' evaluation interval: the goal allows one
Z = 4.0
TRUTH_ORDERS = 200_000


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    scenario: Scenario
    seconds: float
    start: float = 0.0  # offset on the timeline
    drop: Drop | None = None


@dataclass(slots=True)
class Baseline:
    """p0 and the share of orders of each tested segment, from the normal week."""

    rate: dict[str, float]
    share: dict[str, float]

    def limit(self, segment: str, drop: float, orders_per_s: float) -> float:
        p0 = self.rate[segment]
        orders = Z * Z * p0 * (1 - p0) / (p0 * drop) ** 2
        return orders / (orders_per_s * self.share[segment])


def segment_label(kind: str, value: str) -> str:
    return "total" if kind == "total" else f"{kind}={value}"


def timeline(week_days: float, rates: Sequence[float], baseline: Baseline,
             drops: Sequence[float] = DROPS, quick: bool = False) -> list[Phase]:
    if quick:  # the integration test's: half an hour at 5 orders/s, then collapses at 5 orders/s
        phases = [Phase("normal 30 min at 5/s", Scenario(5.0), 1800.0)]
    else:
        phases = [Phase("normal week" if week_days == 7 else f"normal {week_days:g} days",
                        Scenario(diurnal=(0.2, 20.0)), week_days * DAY)] if week_days > 0 else []
    for rate in rates:
        settle = min(16 * 3600.0, max(900.0, 3000 / (rate * baseline.share["category"])))
        for kind, value, segment in (("total", "all", "total"), ("primary_category", CATEGORY, "category")):
            for fraction in drops:
                limit = baseline.limit(segment, fraction, rate)
                drop = Drop(kind, value, fraction, 0.0, 2.5 * limit + 300)
                phases.append(Phase(f"drop {fraction:.0%} {segment_label(kind, value)} at {rate:g}/s",
                                    Scenario(rate, drops=(drop,)), drop.seconds + settle, drop=drop))
    laid: list[Phase] = []
    offset = 0.0
    for phase in phases:
        laid.append(Phase(phase.name, phase.scenario, phase.seconds, offset, phase.drop))
        offset += phase.seconds
    return laid


def events(phases: Sequence[Phase], origin: float, seed: int) -> Iterator[tuple[float, str, bytes, bytes]]:
    """(event time, kind, key, value) of every order of the timeline, in event-time order."""
    maker = OrderMaker(random.Random(seed), TrafficShape())
    arrivals, drops = random.Random(seed + 1), random.Random(seed + 2)
    for phase in phases:
        for offset in phase.scenario.arrivals(arrivals, phase.seconds):
            at = origin + phase.start + offset
            kind, key, value = maker.event(at, functools.partial(phase.scenario.apply, drops, offset))
            yield at, kind, key, value


def measure_baseline(seed: int) -> Baseline:
    """The segments' rates and shares in normal traffic (the generator's, whatever the rate)."""
    maker = OrderMaker(random.Random(seed), TrafficShape())
    n = {"total": 0, "category": 0}
    c = {"total": 0, "category": 0}
    for _ in range(TRUTH_ORDERS):
        _, _, value = maker.event(1.7e9)
        decoded = decode_order(value)
        assert isinstance(decoded, Order)
        facts = order_facts(decoded)
        for segment, member in (("total", True), ("category", facts.primary_category == CATEGORY)):
            if member:
                n[segment] += 1
                c[segment] += facts.cross_sell
    return Baseline({s: c[s] / n[s] for s in n}, {s: n[s] / n["total"] for s in n})


# --- running it --------------------------------------------------------------------------


# --- many runs, simulated ------------------------------------------------------------------
Cell = tuple[str, str, str]  # (primary category, channel, variant)


@dataclass(frozen=True, slots=True)
class OrderMix:
    """The generator's orders as cells with their share and cross-sell rate (from ``TRUTH_ORDERS`` orders)."""

    cells: list[Cell]
    cumulative: list[float]
    cross_sell: list[float]

    @classmethod
    def measure(cls, seed: int) -> OrderMix:
        maker = OrderMaker(random.Random(seed), TrafficShape())
        orders: dict[Cell, list[int]] = {}
        for _ in range(TRUTH_ORDERS):
            decoded = decode_order(maker.event(1.7e9)[2])
            assert isinstance(decoded, Order)
            facts = order_facts(decoded)
            entry = orders.setdefault((facts.primary_category, facts.channel, facts.variant), [0, 0])
            entry[0] += 1
            entry[1] += facts.cross_sell
        cells = sorted(orders)
        running, cumulative = 0, []
        for cell in cells:
            running += orders[cell][0]
            cumulative.append(running / TRUTH_ORDERS)
        return cls(cells, cumulative, [orders[cell][1] / orders[cell][0] for cell in cells])


def dropped(drop: Drop | None, offset: float, cell: Cell) -> float:
    """The fraction of cross-sells ``drop`` takes from an order of ``cell`` at ``offset`` (0: none)."""
    if drop is None or not drop.at <= offset < drop.at + drop.seconds:
        return 0.0
    if drop.kind == "total" or (drop.kind, drop.value) in (("primary_category", cell[0]), ("channel", cell[1]),
                                                             ("variant", cell[2])):
        return drop.fraction
    return 0.0


def simulated_episodes(phases: Sequence[Phase], origin: float, mix: OrderMix, seed: int,
                       config: DetectionConfig) -> list[dict[str, Any]]:
    """The timeline's orders drawn from ``mix`` (same arrivals, cells and drops as the generator's,
    without building events), counted per tick and tested tick by tick: ~20x faster than --offline."""
    rng = random.Random(seed)
    detector = DropDetector(config)
    tick = config.tick
    current, counts = -math.inf, {}  # type: float, dict[tuple[str, str], list[int]]

    def test() -> None:
        if counts:
            detector.add_tick(current, ((kind, value, n, c) for (kind, value), (n, c) in counts.items()))
        detector.advance(current + tick)

    for phase in phases:
        for offset in phase.scenario.arrivals(rng, phase.seconds):
            start = (origin + phase.start + offset) // tick * tick
            if start != current:
                test()
                current, counts = start, {}
            index = min(bisect.bisect_right(mix.cumulative, rng.random() * mix.cumulative[-1]), len(mix.cells) - 1)
            cell = mix.cells[index]
            x = 1 if rng.random() < mix.cross_sell[index] * (1.0 - dropped(phase.drop, offset, cell)) else 0
            count_in(counts, (("total", "all"), ("primary_category", cell[0]), ("channel", cell[1]),
                              ("variant", cell[2])), x)
    test()
    return [asdict(e) for e in detector.episodes]


def simulate(phases: Sequence[Phase], origin: float, baseline: Baseline, seeds: int, config: DetectionConfig) -> str:
    """Per scenario over ``seeds`` simulated runs: the worst and mean detection / goal, and the runs late."""
    mix = OrderMix.measure(1)
    ratios: dict[str, list[float]] = {}
    false_alarms: list[int] = []
    alarms: list[str] = []
    for seed in range(seeds):
        episodes = simulated_episodes(phases, origin + seed * 0.7, mix, 1000 + seed, config)
        for row in results(phases, episodes, origin + seed * 0.7, baseline):
            if row["drop"] is None:
                false_alarms.append(row["false_alarms"])
                alarms.extend(f"run {seed + 1}: {alarm}" for alarm in row["alarms"])
            else:
                ratios.setdefault(row["scenario"], []).append(
                    math.inf if row["detect_s"] is None else row["detect_s"] / row["target_s"])
        print(f"detection: simulated run {seed + 1} of {seeds}", file=sys.stderr, flush=True)
    lines = [f"false alarms per normal run: {false_alarms}; drops later than the goal: "
             f"{sum(r > 1 for rs in ratios.values() for r in rs)} of {sum(len(rs) for rs in ratios.values())}",
             "| scenario | worst detected / goal | mean | runs late |", "|---|---|---|---|"]
    for scenario, rs in ratios.items():
        finite = [r for r in rs if r < math.inf]
        mean = f"{sum(finite) / len(finite):.2f}" if finite else "-"
        lines.append(f"| {scenario} | {max(rs):.2f} | {mean} | {sum(r > 1 for r in rs)} |")
    lines.extend(f"false alarm, {alarm}" for alarm in alarms)
    return "\n".join(lines)


def run_offline(phases: Sequence[Phase], origin: float, seed: int,
                config: DetectionConfig | None = None) -> list[dict[str, Any]]:
    """The timeline through the detector alone: four partitions' watermarks, the worker's clock."""
    detector = DropDetector(config or DetectionConfig(episodes_kept=100_000))
    watermarks: list[float | None] = [None] * PARTITIONS
    for n, (at, _, key, value) in enumerate(events(phases, origin, seed)):
        decoded = decode_order(value)
        assert isinstance(decoded, Order)
        facts = order_facts(decoded)
        detector.observe(at, facts.primary_category, facts.channel, facts.variant, facts.cross_sell)
        watermarks[hash(key) % PARTITIONS] = at
        if n % 50 == 0:
            clock = low_watermark([(w, True) for w in watermarks], detector.config.idle)
            if clock is not None:
                detector.advance(clock)
    return [asdict(e) for e in detector.episodes]


def run_worker(phases: Sequence[Phase], origin: float, seed: int, timeout: float) -> tuple[list[dict[str, Any]], int]:
    work = Path(tempfile.mkdtemp(prefix="crosssell-detection-"))
    tag = f"det-{uuid.uuid4().hex[:6]}"
    try:
        with EmbeddedBroker() as broker, children(work) as group:
            port = free_port()
            env = {
                "CROSSSELL_BROKER_URL": broker.url, "CROSSSELL_APP_ID": tag, "CROSSSELL_PARTITIONS": str(PARTITIONS),
                "CROSSSELL_ORDERS_TOPIC": f"{tag}-orders", "CROSSSELL_DEAD_LETTER_TOPIC": f"{tag}-dead-letters",
                "CROSSSELL_PAIRS_TOPIC": f"{tag}-pairs", "CROSSSELL_RECOMMENDATIONS_TOPIC": f"{tag}-recommendations",
                "CROSSSELL_WEB_PORT": str(port), "CROSSSELL_DATA_DIR": str(work / tag),
                "CROSSSELL_LOG_LEVEL": "warning",
            }
            settings = Settings.from_env(env)
            ensure_topics(broker.bootstrap, settings)
            inherited = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
            worker = group.start(tag, python_module("streams", "worker"), {**inherited, **env})
            sender = Sender(broker.bootstrap, {}, settings.orders_topic, sys.stderr)
            for _, kind, key, value in events(phases, origin, seed):
                sender.send(kind, key, value)
            report = sender.finish(120.0)
            sent = sum(report.sent.values())
            print(f"detection: sent {sent:,} orders in {report.seconds:.0f}s; waiting for the worker",
                  file=sys.stderr, flush=True)

            def applied() -> bool:
                worker.check_alive()
                try:
                    return bool(get(port, "/api/summary")["counters"]["events"] >= sent)
                except OSError:
                    return False

            if not wait_until(applied, timeout, interval=2.0):
                raise RuntimeError(f"the worker did not apply {sent} orders within {timeout:g}s; "
                                   f"log: {worker.log_tail()}")
            # The tick counts reach the drop test one flush later, through the detection topic: read it
            # once it stands still.
            tested: list[Any] = [None]

            def settled() -> bool:
                now = get(port, "/api/detection")["detected_until"]
                still = now is not None and now == tested[0]
                tested[0] = now
                return still

            wait_until(settled, 120.0, interval=2.0)
            found = get(port, "/api/detection")
            if os.environ.get("BENCH_DETECTION_DEBUG"):
                print(orjson.dumps({k: v for k, v in found.items() if k != "episodes"}).decode()[:3000],
                      file=sys.stderr)
            return found["episodes"], sent
    finally:
        shutil.rmtree(work, ignore_errors=True)


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return orjson.loads(response.read())


# --- the report ------------------------------------------------------------------------------


def results(phases: Sequence[Phase], episodes: list[dict[str, Any]], origin: float,
            baseline: Baseline) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for phase in phases:
        begin, end = origin + phase.start, origin + phase.start + phase.seconds
        within = [e for e in episodes if begin <= e["started"] < end]
        if phase.drop is None:
            rows.append({"scenario": phase.name, "rate_per_s": "0.2-20", "drop": None, "segment": None,
                         "detect_s": None, "limit_s": None, "days": phase.seconds / DAY,
                         "false_alarms": len(within),
                         "alarms": [f"{e['kind']}={e['value']} at +{e['started'] - begin:.0f}s for "
                                    f"{(e['ended'] or end) - e['started']:.0f}s ({e['orders']} orders at "
                                    f"{e['rate']:.3f} against {e['baseline']:.3f})" for e in within]})
            continue
        drop = phase.drop
        segment = "total" if drop.kind == "total" else "category"
        rate = phase.scenario.rate
        limit = baseline.limit(segment, drop.fraction, rate)
        hits = [e["started"] - begin for e in within if (e["kind"], e["value"]) == (drop.kind, drop.value)]
        detect = min(hits) if hits else None
        rows.append({"scenario": phase.name, "rate_per_s": rate, "drop": drop.fraction,
                     "segment": segment_label(drop.kind, drop.value), "detect_s": detect, "limit_s": limit,
                     "target_s": 2 * limit + EVALUATION, "p0": baseline.rate[segment],
                     "within_target": detect is not None and detect <= 2 * limit + EVALUATION})
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| scenario | orders/s | drop | segment | limit (z = 4) | goal (2x + 15 s) | detected after | "
             "within goal |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["drop"] is None:
            lines.append(f"| {row['scenario']} | {row['rate_per_s']} | none | all | | | "
                         f"{row['false_alarms']} false alarms | {'yes' if row['false_alarms'] == 0 else 'no'} |")
            continue
        detect = "not detected" if row["detect_s"] is None else seconds_text(row["detect_s"])
        lines.append(f"| {row['scenario']} | {row['rate_per_s']:g} | {row['drop']:.0%} | {row['segment']} | "
                     f"{seconds_text(row['limit_s'])} | {seconds_text(row['target_s'])} | {detect} | "
                     f"{'yes' if row['within_target'] else 'no'} |")
    return "\n".join(lines)


def seconds_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--week-days", type=float, default=7.0, help="days of normal traffic first (default 7)")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES),
                        help="orders per second of the drop scenarios, comma-separated (default 50,5,0.2; "
                             "empty: none)")
    parser.add_argument("--quick", action="store_true",
                        help="half an hour of normal traffic at 5/s, then total collapses in the total and in "
                             "the category at 5/s (a minute; the integration test's)")
    parser.add_argument("--offline", action="store_true",
                        help="through the detector alone (no broker, no worker): fast, for tuning")
    parser.add_argument("--simulate", type=int, metavar="RUNS", default=0,
                        help="RUNS simulated runs of the timeline (orders drawn from the generator's mix per "
                             "tick, no broker): the spread of detection times and false alarms, for tuning")
    parser.add_argument("--thresholds", help="the segments' CUSUM thresholds, e.g. 14,15,19 (--simulate and "
                        "--offline only; default the worker's)")
    parser.add_argument("--total-thresholds", help="the total's, e.g. 12,13,14 (--simulate and --offline only)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a DetectionConfig field for --simulate and --offline, e.g. baseline_lag=21600 "
                             "(numbers; repeatable)")
    parser.add_argument("--origin", type=float, help="event time the timeline starts at, unix seconds (default: "
                        "so that it ends a minute ago); fixed, two --simulate runs draw the same ticks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds the worker may take to apply everything once sent (default 3600)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default %(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rates = [5.0] if args.quick else [float(r) for r in args.rates.split(",") if r.strip()]
    baseline = measure_baseline(args.seed)
    phases = timeline(args.week_days, rates, baseline, drops=(1.0,) if args.quick else DROPS, quick=args.quick)
    span = sum(p.seconds for p in phases)
    # Ends a minute ago by default: no event time ahead of the worker's clock.
    origin = time.time() - span - 60 if args.origin is None else args.origin
    print(f"detection: {len(phases)} phases over {span / DAY:.1f} days of event time; p0 total "
          f"{baseline.rate['total']:.3f}, {CATEGORY} {baseline.rate['category']:.3f} "
          f"({baseline.share['category']:.0%} of orders)", file=sys.stderr, flush=True)
    config = DetectionConfig(episodes_kept=100_000)
    if args.thresholds:
        config = replace(config, thresholds=tuple(float(h) for h in args.thresholds.split(",")))
    if args.total_thresholds:
        config = replace(config, total_thresholds=tuple(float(h) for h in args.total_thresholds.split(",")))
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        config = replace(config, **{name: type(getattr(config, name))(float(value))})
    if args.simulate:
        print(simulate(phases, origin, baseline, args.simulate, config))
        print(f"detection: simulated, took {time.monotonic() - started:.0f}s", file=sys.stderr)
        return 0
    try:
        if args.offline:
            episodes = run_offline(phases, origin, args.seed, config)
        else:
            episodes, _ = run_worker(phases, origin, args.seed, args.timeout)
    except KeyboardInterrupt:
        print("detection: interrupted", file=sys.stderr)
        return 130
    rows = results(phases, episodes, origin, baseline)
    print(table(rows))
    print(f"detection: {'offline' if args.offline else 'through the worker'}, took "
          f"{time.monotonic() - started:.0f}s", file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
