"""``python -m bench``: how fast is the cross-sell worker, next to the client ceiling and plain Faust?

One run starts one embedded broker (Tansu, 127.0.0.1, a free port), sends the
same seeded orders to it once, and lets each contender read all of them from
offset 0, in its own process, with a fresh consumer group:

  (1) raw     confluent-kafka Consumer.consume(1000) + orjson.loads: the client ceiling
  (2) bare    a Faust agent that only iterates (Faust's defaults)
  (3) naive   Faust as its docs teach: JSON stream, windowed tables updated per event
  (4) pipeline  this project's worker, `python -m streams worker`, done when
              crosssell_events_total on its /metrics reaches the event count

For each: events/s from the first event consumed to the last (startup and group
join excluded), CPU seconds per million events over that span (all threads of
the process) and peak RSS (VmHWM). Then, for (4), the latency from handing an
event to the producer to seeing it counted on /metrics, at half (4)'s measured
rate, polling /metrics every 50 ms. With --workers 2, two worker processes of one
group share the partitions (joined first, then the same events are sent to a
new topic) and their combined rate is compared with one worker's.

Prints a table and the ratios (4)/(1), (4)/(2), (4)/(3); writes JSON to
bench/results/latest.json. All processes and the broker are stopped on exit,
Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import pipeline
from bench.load import Event, make_events, order_maker, preload
from bench.procs import Child, ChildFailed, Children, children, cpu_seconds, peak_rss_mb, python_module
from bench.report import Result, machine, ratios, table, write_json
from streams.ops.admin import ensure_topics
from streams.ops.broker import BrokerError, EmbeddedBroker, free_port
from streams.ops.traffic import OrderMaker, TrafficShape
from streams.settings import Settings

CONTENDERS = ("raw", "bare", "naive", "quix", "quix-windowed", "pipeline")
OPTIONAL = ("bare-fastpath",)  # the bare agent on FastPathApp: what Faust still costs per event
MODULES = {"raw": "bench.contenders.raw_client", "bare": "bench.contenders.faust_bare",
           "naive": "bench.contenders.faust_naive", "bare-fastpath": "bench.contenders.faust_bare",
           "quix": "bench.contenders.quix", "quix-windowed": "bench.contenders.quix"}
CONTENDER_ARGUMENTS = {"bare-fastpath": ("--fastpath",), "quix": ("--mode", "stateless"),
                       "quix-windowed": ("--mode", "windowed")}
# The peer framework is a benchmark-only dependency (the bench extra): left out of the default
# contenders when it is not installed, an error when asked for by name.
PEER = ("quix", "quix-windowed")
PEER_INSTALL = "pip install -e '.[bench]' (or make bench)"
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "latest.json"
SMOKE_EVENTS = 5000
SMOKE_LATENCY_SECONDS = 5.0
# The latency phase's rate when (4)'s rate could not be timed (a smoke run): low enough for any worker.
UNTIMED_LATENCY_RATE = 500.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=None,
                        help="events sent once and read by every contender (default 200000; 5000 with --smoke)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the orders topic (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the order generator (default 1)")
    parser.add_argument("--categories", type=int, default=12, help="product categories (default 12)")
    parser.add_argument("--products-per-category", type=int, default=16667,
                        help="products per category (default 16667: 12 x 16667 = 200,004 distinct products)")
    parser.add_argument("--cross-sell-propensity", type=float, default=0.3)
    parser.add_argument("--late-share", type=float, default=0.01, help="share of late events (default 0.01)")
    parser.add_argument("--duplicate-share", type=float, default=0.005,
                        help="share of re-sent orders (default 0.005)")
    parser.add_argument("--event-time-span", type=float, default=600.0,
                        help="event times of the preloaded orders spread over the last this many seconds")
    parser.add_argument("--contenders", default=None,
                        help=f"comma-separated subset of {','.join(CONTENDERS)} (default: all; the quix ones "
                             f"when quixstreams is installed), or none (with --variant); also "
                             f"{','.join(OPTIONAL)}: the bare agent on FastPathApp")
    parser.add_argument("--latency-seconds", type=float, default=None,
                        help="seconds of live traffic for the latency of (4) (default 20; 5 with --smoke; 0 skips)")
    parser.add_argument("--latency-rate", type=float, default=None, metavar="EVENTS_PER_SECOND",
                        help="send the latency phase at this rate instead of half (4)'s measured rate: "
                             "latency without queueing at a low rate, against the rate")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1,
                        help="2: also run (4) as two worker processes sharing the partitions")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a quick check that everything runs and reports ({SMOKE_EVENTS} events, "
                             f"{SMOKE_LATENCY_SECONDS:g} s latency phase); the numbers mean little")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one contender may take, startup included (default 120 + events/400)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE,...",
                        help="also run (4) through bench.variant_worker with these changes, e.g. "
                             "fastpath=0,monitor=default (keys: python -m bench.variant_worker's docstring); "
                             "repeatable; to measure what single optimisations gain")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record a py-spy profile of each (4) worker during its throughput phase into DIR "
                             "(<name>.txt), and during its latency phase (<name>-latency.txt)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events is None:
        args.events = SMOKE_EVENTS if args.smoke else 200_000
    if args.latency_seconds is None:
        args.latency_seconds = SMOKE_LATENCY_SECONDS if args.smoke else 20.0
    if args.timeout is None:
        args.timeout = 120 + args.events / 400
    peer_installed = importlib.util.find_spec("quixstreams") is not None
    if args.contenders is None:
        wanted = [c for c in CONTENDERS if peer_installed or c not in PEER]
        if not peer_installed:
            _note(f"quixstreams is not installed: the peer's contenders are left out; {PEER_INSTALL} adds them")
    else:
        wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if "none" in wanted:
        wanted = []
    unknown = set(wanted) - set(CONTENDERS) - set(OPTIONAL)
    if unknown or (not wanted and not args.variant):
        print(f"bench: --contenders {args.contenders!r}: expected a subset of {','.join(CONTENDERS)}", file=sys.stderr)
        return 2
    if set(wanted) & set(PEER) and not peer_installed:
        print(f"bench: --contenders {args.contenders!r}: quixstreams is not installed; {PEER_INSTALL}", file=sys.stderr)
        return 2
    if args.latency_rate is not None and args.latency_rate <= 0:
        print(f"bench: --latency-rate {args.latency_rate:g}: expected events per second > 0", file=sys.stderr)
        return 2
    if args.events < 1 or args.partitions < 1:
        print("bench: --events and --partitions must be at least 1", file=sys.stderr)
        return 2
    # SIGTERM (CI timeouts, service managers) cleans up like Ctrl-C; and Ctrl-C works even when
    # started in the background of a script, which leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log_dir = Path(tempfile.mkdtemp(prefix="crosssell-bench-"))
    try:
        document = run(args, wanted, log_dir)
    except KeyboardInterrupt:
        print(f"bench: interrupted; everything stopped. Logs: {log_dir}", file=sys.stderr)
        return 130
    except (ChildFailed, BrokerError, RuntimeError) as exc:
        print(f"bench: failed: {exc}\nbench: logs of every process: {log_dir}", file=sys.stderr)
        return 1
    write_json(args.output, document)
    print(f"bench: results written to {args.output}")
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, wanted: list[str], log_dir: Path) -> dict[str, Any]:
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    shape = TrafficShape(cross_sell_propensity=args.cross_sell_propensity, late_share=args.late_share,
                         duplicate_share=args.duplicate_share, invalid_share=0.0, categories=args.categories,
                         products_per_category=args.products_per_category)
    results: dict[str, Result] = {}
    document: dict[str, Any] = {"machine": machine(), "run_id": run_id, "config": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with EmbeddedBroker() as broker, children(log_dir) as kids:
        settings = Settings(broker_url=broker.url, partitions=args.partitions)
        bootstrap = settings.bootstrap_servers()
        ensure_topics(bootstrap, settings)
        _note(f"embedded broker at {bootstrap}; generating {args.events} orders (seed {args.seed})")
        started = time.monotonic()
        maker = order_maker(args.seed, shape)
        now = time.time()
        events = make_events(maker, args.events, now - args.event_time_span, now)
        generated = time.monotonic() - started
        seconds = preload(bootstrap, settings.orders_topic, events)
        _note(f"generated in {generated:.1f}s, sent to {settings.orders_topic!r} in {seconds:.1f}s "
              f"({args.events / seconds:,.0f}/s)")
        document["load"] = {"events": args.events, "generate_seconds": round(generated, 2),
                            "preload_seconds": round(seconds, 2), "topic": settings.orders_topic,
                            "bytes": sum(len(v) for _, v in events)}

        for name in wanted:
            if name == "pipeline":
                continue
            _note(f"{name}: starting")
            results[name] = run_contender(kids, name, args, bootstrap, settings.orders_topic, run_id, log_dir)
            _note(f"{name}: {results[name].rate_text()}")

        broker_pid = broker.process.pid if broker.process is not None else None
        if "pipeline" in wanted:
            run_pipeline(kids, args, broker.url, events, maker, run_id, log_dir, results, document,
                         broker_pid=broker_pid)
            if args.workers == 2:
                document["workers"] = run_two_workers(kids, args, broker.url, events, run_id, log_dir, results,
                                                      broker_pid=broker_pid)
        for n, variant in enumerate(args.variant):
            # A variant given twice (an A/B repeated in one run) keeps both results: #2 on the second.
            repeat = args.variant[:n].count(variant)
            label = f"pipeline[{variant}]" + (f"#{repeat + 1}" if repeat else "")
            run_pipeline(kids, args, broker.url, events, maker, run_id, log_dir, results, document, variant=variant,
                         label=label, suffix=f"variant{n}", broker_pid=broker_pid)

    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document["results"] = {name: result.as_json() for name, result in results.items()}
    document["ratios"] = ratios(results)
    print()
    print(table(results))
    if document["ratios"]:
        print("ratios of events/s: " + ", ".join(f"({k}) {v:.2f}" for k, v in document["ratios"].items()))
    for label, lat in document.get("latency", {}).items():
        print(f"latency of {label} at {lat['rate']:,.0f} events/s: p50 {lat['p50_seconds'] * 1000:.0f} ms, "
              f"p99 {lat['p99_seconds'] * 1000:.0f} ms, max {lat['max_seconds'] * 1000:.0f} ms "
              f"({lat['measured']} of {lat['sent']} events; /metrics polled every 50 ms, one answer took "
            f"p50 {lat['scrape_p50_seconds'] * 1000:.0f} ms, p99 {lat['scrape_p99_seconds'] * 1000:.0f} ms); "
              f"peak RSS {lat['peak_rss_mb_after']:.0f} MB after these {lat['sent']:,} more events")
        if "worker_cores" in lat:
            print(f"  during it ({lat['phase_seconds']:.0f} s, until all were counted): the worker used "
                  f"{lat['worker_cores']:.2f} cores, {lat['worker_cpu_seconds_per_million_events']:.1f} CPU s per "
                  f"million events; the broker {lat.get('broker_cores', 0):.2f} cores")
        if lat.get("p99_seconds_by_second_sent"):
            print("  p99 ms of the events sent in each second: "
                  + " ".join(f"{value * 1000:.0f}" for value in lat["p99_seconds_by_second_sent"]))
    for label, result in results.items():
        broker_cpu = result.extra.get("broker_cpu_seconds_per_million_events")
        if broker_cpu is not None:
            print(f"broker CPU during {label}: {broker_cpu:.1f} s per million events")
    if "workers" in document:
        two = document["workers"]
        if two["ratio_to_one_worker"] is None:
            print(f"two workers: {results['pipeline x2'].rate_text()}; no ratio to one worker")
        else:
            print(f"two workers: {two['events_per_second']:,.0f} events/s combined, "
                  f"{two['ratio_to_one_worker']:.2f}x one worker")
    print(f"load average (1, 5, 15 min) at start {document['machine']['load_average_at_start']}, "
          f"at end {document['machine']['load_average_at_end']}; 2 cores are shared with the broker and harness")
    print()
    return document


def run_pipeline(kids: Children, args: argparse.Namespace, broker_url: str, events: Sequence[Event],
                 maker: OrderMaker, run_id: str, log_dir: Path, results: dict[str, Result], document: dict[str, Any],
                 variant: str = "", label: str = "pipeline", suffix: str = "pipeline",
                 broker_pid: int | None = None) -> None:
    """(4): one worker reads the events (its own copy of the topic); then the latency phase."""
    settings = pipeline.run_settings(broker_url, args.partitions, f"bench-{run_id}-{suffix}")
    bootstrap = settings.bootstrap_servers()
    ensure_topics(bootstrap, settings)
    preload(bootstrap, settings.orders_topic, events)
    _note(f"{label}: starting one worker")
    workers = pipeline.start_workers(kids, 1, name=suffix, settings=settings, data_dir=log_dir, variant=variant)
    profiler = _start_profiler(kids, args, workers[0], suffix)
    throughput = pipeline.measure_throughput(workers, args.events, args.timeout, broker_pid=broker_pid)
    if profiler is not None:
        _stop_profiler(profiler)
    result = Result(label, throughput.events, throughput.seconds, throughput.cpu_seconds,
                    max(throughput.peak_rss_mb))
    result.extra.update(_broker_cpu(throughput, result))
    results[label] = result
    _note(f"{label}: {result.rate_text()}")
    if args.latency_seconds > 0:
        rate = result.events_per_second / 2 if result.timed else UNTIMED_LATENCY_RATE
        if args.latency_rate is not None:
            rate = args.latency_rate
        elif not result.timed:
            _note(f"{label}: no measured rate to halve; the latency phase sends {rate:g} events/s")
        count = max(1, int(rate * args.latency_seconds))
        _note(f"{label}: latency at {rate:,.0f} events/s for {args.latency_seconds:g}s")
        live = make_events(maker, count, time.time(), time.time() + args.latency_seconds)
        profiler = _start_profiler(kids, args, workers[0], f"{suffix}-latency")
        pids = {"worker": workers[0].child.pid, "broker": broker_pid}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid is not None}
        started = time.monotonic()
        latency = pipeline.measure_latency(workers[0], bootstrap=bootstrap, topic=settings.orders_topic, events=live,
                                           rate=rate, base=args.events)
        # What the phase cost: more per event than the throughput phase means half that phase's
        # rate is more than half of what the worker can do here (scrapes, smaller fetches).
        phase = time.monotonic() - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items() if pid is not None}
        if profiler is not None:
            _stop_profiler(profiler)
        # The table's peak RSS is the throughput phase's: the memory target is for the preloaded
        # events (and their 200,000 products). The latency phase adds rate x seconds more orders
        # (more for a faster worker), each kept in the dedup horizon: its peak is reported apart.
        rss = peak_rss_mb(workers[0].child.pid)
        document.setdefault("latency", {})[label] = {
            "rate": round(latency.rate, 1), "seconds": round(latency.seconds, 1), "sent": latency.sent,
            "measured": latency.measured, "not_reflected": latency.lost,
            "p50_seconds": round(latency.p50, 4), "p99_seconds": round(latency.p99, 4),
            "max_seconds": round(latency.max, 4), "scrape_interval_seconds": latency.scrape_interval,
            "scrape_p50_seconds": round(latency.scrape_p50, 4), "scrape_p99_seconds": round(latency.scrape_p99, 4),
            "p99_seconds_by_second_sent": [round(value, 3) for value in latency.p99_by_second],
            "peak_rss_mb_after": round(rss, 1),
            "phase_seconds": round(phase, 1),
            **{f"{name}_cpu_seconds_per_million_events": round(seconds / max(1, latency.sent) * 1e6, 1)
               for name, seconds in cpu.items()},
            **{f"{name}_cores": round(seconds / phase, 2) for name, seconds in cpu.items()},
        }
    for worker in workers:
        kids.stop(worker.child)


def _broker_cpu(throughput: pipeline.Throughput, result: Result) -> dict[str, float]:
    """The broker's CPU seconds per million events over the span: its share of the 2 cores."""
    if not result.timed:
        return {}
    return {"broker_cpu_seconds_per_million_events": round(throughput.broker_cpu_seconds / throughput.events * 1e6, 2)}


def _start_profiler(kids: Children, args: argparse.Namespace, worker: pipeline.Worker, suffix: str) -> Child | None:
    if args.profile is None:
        return None
    if shutil.which("py-spy") is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    args.profile.mkdir(parents=True, exist_ok=True)
    output = args.profile / f"{suffix}.txt"
    _note(f"profiling the worker with py-spy into {output} (collapsed stacks; flamegraph.pl or speedscope read it)")
    # --gil: only the thread holding the GIL. Without it, the aiokafka consumer thread
    # waiting for the GIL is sampled as busy in whatever frame it waits.
    return kids.start(f"py-spy-{suffix}", ["py-spy", "record", "--pid", str(worker.child.pid), "--rate", "200",
                                           "--gil", "--format", "raw", "--output", str(output)])


def _stop_profiler(profiler: Child) -> None:
    # py-spy writes its output when interrupted.
    profiler.process.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):  # else the Children cleanup kills it
        profiler.process.wait(timeout=30)


def run_contender(kids: Children, name: str, args: argparse.Namespace, bootstrap: str, topic: str, run_id: str,
                  log_dir: Path) -> Result:
    progress_path = log_dir / f"{name}.progress.json"
    command = python_module(
        MODULES[name], "--bootstrap", bootstrap, "--topic", topic, "--partitions", str(args.partitions),
        "--events", str(args.events), "--group", f"bench-{run_id}-{name}", "--progress", str(progress_path),
        "--web-port", str(free_port()), "--data-dir", str(log_dir / f"{name}-data"),
        *CONTENDER_ARGUMENTS.get(name, ()),
    )
    child = kids.start(name, command)
    deadline = time.monotonic() + args.timeout
    last_note = time.monotonic()
    try:
        while True:
            child.check_alive()
            progress = _read_progress(progress_path)
            if progress and progress.get("last_at") is not None:
                break
            if time.monotonic() > deadline:
                raise ChildFailed(f"{name} did not read {args.events} events within {args.timeout:g}s "
                                  f"(progress: {progress}); its log ends:\n{child.log_tail()}")
            if progress and time.monotonic() - last_note > 5:
                last_note = time.monotonic()
                _note(f"  ... {progress['count']}/{args.events} events")
            time.sleep(0.1)
        rss = peak_rss_mb(child.pid)
    finally:
        kids.stop(child)
    return Result(name, progress["count"] - progress["first_count"], progress["last_at"] - progress["first_at"],
                  progress["last_cpu"] - progress["first_cpu"], rss)


def run_two_workers(kids: Children, args: argparse.Namespace, broker_url: str, events: Sequence[Event], run_id: str,
                    log_dir: Path, results: dict[str, Result], broker_pid: int | None = None) -> dict[str, Any]:
    """Two workers join first (empty topics), then the same events arrive; combined rate until all counted."""
    settings = pipeline.run_settings(broker_url, args.partitions, f"bench-{run_id}-two")
    bootstrap = settings.bootstrap_servers()
    ensure_topics(bootstrap, settings)
    _note("two workers: starting, waiting until they share the partitions")
    workers = pipeline.start_workers(kids, 2, name="two", settings=settings, data_dir=log_dir)
    pipeline.wait_assigned(workers, args.partitions, timeout=args.timeout)
    failure: list[BaseException] = []

    def send() -> None:
        try:
            preload(bootstrap, settings.orders_topic, events)
        except BaseException as exc:
            failure.append(exc)

    sender = threading.Thread(target=send, name="preload-two-workers", daemon=True)
    sender.start()
    # The workers joined before the events were sent (so that they share the partitions from
    # the first event); the span starts once sending is over, as the one worker's did.
    throughput = pipeline.measure_throughput(workers, args.events, args.timeout,
                                             ready=lambda: not sender.is_alive(), broker_pid=broker_pid)
    sender.join()
    if failure:
        raise RuntimeError(f"sending to {settings.orders_topic}: {failure[0]}")
    # Nothing may be counted twice: the total must stay at the number sent.
    time.sleep(2)
    final = [w.counts() for w in workers]
    counted = sum(c[0] for c in final if c)
    if counted != args.events:
        raise ChildFailed(f"two workers counted {counted} events of {args.events}")
    result = Result("pipeline", throughput.events, throughput.seconds, throughput.cpu_seconds,
                    max(throughput.peak_rss_mb), processes=2,
                    extra={"peak_rss_mb_each": [round(x, 1) for x in throughput.peak_rss_mb]})
    result.extra.update(_broker_cpu(throughput, result))
    results["pipeline x2"] = result
    one = results.get("pipeline")
    ratio = result.events_per_second / one.events_per_second if one and one.timed and result.timed else None
    for worker in workers:
        kids.stop(worker.child)
    _note(f"two workers: {result.rate_text()} combined" + (f" ({ratio:.2f}x one)" if ratio is not None else ""))
    return {"events_per_second": round(result.events_per_second, 1) if result.timed else None,
            "ratio_to_one_worker": round(ratio, 3) if ratio is not None else None,
            "final_count": counted,
            "cpu_seconds_per_million_events": round(result.cpu_seconds_per_million, 2) if result.timed else None,
            "peak_rss_mb_each": result.extra["peak_rss_mb_each"],
            "partitions_each": [c[1] if c else None for c in final]}


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        return dict(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return None


def _note(text: str) -> None:
    print(f"bench: {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
