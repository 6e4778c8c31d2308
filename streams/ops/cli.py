"""``python -m streams COMMAND``: run, worker, broker, create-topics, generate, replay, recommendations, mark.

Settings come from ``CROSSSELL_*`` environment variables (streams/settings.py);
flags are only for what a person varies per invocation (traffic shape, files).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import faust

    from streams.ops.generator import SendReport

from streams.ops.admin import BrokerUnreachable, TopicMismatch, check_broker, ensure_topics
from streams.ops.broker import BrokerError, EmbeddedBroker, free_port
from streams.ops.restarts import RestartedWorker
from streams.ops.security import librdkafka_config
from streams.ops.supervisor import spawn, stop
from streams.ops.traffic import TrafficShape
from streams.settings import Settings, SettingsError

EXIT_CONFIG = 2
EXIT_BROKER = 3
# Allocations between two collections of the youngest generation in a worker (see cmd_worker).
YOUNG_GC_THRESHOLD = 20_000


def main(argv: Sequence[str] | None = None, app_class: type[faust.App] | None = None) -> int:
    """Run a command; ``app_class`` replaces the worker's Faust app class (the benchmark's variants)."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.app_class = app_class
    try:
        settings = Settings.from_env(os.environ)
        return int(args.command(settings, args) or 0)
    except SettingsError as exc:
        print(f"crosssell: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BrokerUnreachable, BrokerError) as exc:
        print(f"crosssell: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except (TopicMismatch, PortInUse) as exc:
        print(f"crosssell: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streams", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, about: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=about, description=about,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    run = command("run", "the main job: a broker (embedded unless CROSSSELL_BROKER_URL is set), the topics, "
                  "one worker and demo traffic, until Ctrl-C")
    _traffic_flags(run, rate=50.0)
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    run.add_argument("--no-demo", action="store_true",
                     help="no demo traffic: the worker reads what you produce to the orders topic")
    run.add_argument("--replay", metavar="FILE", default=None,
                     help="instead of demo traffic, replay this NDJSON history (as the replay command does), "
                          "then keep running")
    run.set_defaults(command=cmd_run)

    worker = command("worker", "one Faust worker against CROSSSELL_BROKER_URL; start several to share the partitions")
    worker.set_defaults(command=cmd_worker)

    broker = command("broker", "only the embedded broker (Tansu, memory only), printing its URL, until Ctrl-C")
    broker.add_argument("--port", type=int, default=9092, help="TCP port on 127.0.0.1")
    broker.set_defaults(command=cmd_broker)

    topics = command("create-topics", "create the project's topics if missing (checks partition counts)")
    topics.set_defaults(command=cmd_create_topics)

    generate = command("generate", "send generated orders to the orders topic")
    _traffic_flags(generate, rate=100.0)
    generate.add_argument("--duration", type=float, default=60.0, help="seconds; 0 runs until Ctrl-C")
    generate.add_argument("--count", type=int, default=None, help="stop after this many events (none: no limit)")
    generate.add_argument("--profile", default="constant",
                          help="orders per second over time: constant (--rate), or diurnal[:LOW-HIGH] "
                               "(default 0.2-20, trough at the start, peak 12 h later)")
    generate.add_argument("--scenario", action="append", default=[], metavar="ITEM",
                          help="scripted, times from the start: drop=KIND:VALUE:FRACTION@AT+FOR (KIND total, "
                               "primary_category, channel or variant), stall@AT+FOR, burst=FACTOR@AT+FOR; "
                               "repeatable, e.g. --scenario drop=primary_category:electronics:50%%@10m+20m")
    generate.add_argument("--simulate", metavar="SPAN", default=None,
                          help="fast event-time replay: lay SPAN (e.g. 7d) of the profile and scenario out on a "
                               "simulated clock ending now, and send it as fast as possible")
    generate.set_defaults(command=cmd_generate)

    replay = command("replay", "send order events from an NDJSON file (or - for stdin) to the orders topic, "
                     "in event-time order")
    replay.add_argument("file", help="NDJSON file, one event per line; - reads stdin")
    replay.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    replay.add_argument("--no-sort", action="store_true",
                        help="send the lines as they are instead of sorted by occurred_at (warns when many "
                             "would be late)")
    replay.add_argument("--chunk-lines", type=int, default=200_000,
                        help="lines sorted in memory at a time; larger files are sorted in chunks on disk")
    replay.set_defaults(command=cmd_replay)

    recommendations = command("recommendations", "print the current \"frequently bought together\" lists "
                              "(one JSON line per product), or one product's, from the recommendations topics")
    recommendations.add_argument("product", nargs="?", default=None, help="only this product_id")
    recommendations.add_argument("--horizon", default=None,
                                 help="only this horizon, e.g. 24h (default: every CROSSSELL_PAIR_HORIZONS)")
    recommendations.add_argument("--follow", action="store_true", help="keep printing updates until Ctrl-C")
    recommendations.set_defaults(command=cmd_recommendations)

    mark = command("mark", "record that something happened (\"launched AI assistant\"): the before/after "
                   "comparison of every worker then uses this marker; --list prints the markers written")
    mark.add_argument("text", nargs="?", default=None, help="what happened, in a few words")
    mark.add_argument("--at", default=None, help="when it happened: RFC 3339 with an offset "
                      "(2026-11-22T18:30:00Z) or unix seconds (default: now)")
    mark.add_argument("--list", action="store_true", help="print every marker (one JSON line each, oldest first) "
                      "and which one the comparison uses")
    mark.set_defaults(command=cmd_mark)
    return parser


def _traffic_flags(parser: argparse.ArgumentParser, rate: float) -> None:
    parser.add_argument("--rate", type=float, default=rate, help="events per second")
    parser.add_argument("--seed", type=int, default=1, help="random seed: the same seed sends the same orders")
    parser.add_argument("--cross-sell-propensity", type=float, default=0.3,
                        help="share of orders that get lines from companion categories")
    parser.add_argument("--treatment-uplift", type=float, default=0.05,
                        help="extra cross-sell propensity of orders in the 'treatment' variant (half the orders)")
    parser.add_argument("--attribution-share", type=float, default=0.3,
                        help="share of lines after the primary that carry a recommendation touchpoint")
    parser.add_argument("--late-share", type=float, default=0.01,
                        help="share of events sent with an event time older than the grace period")
    parser.add_argument("--invalid-share", type=float, default=0.01,
                        help="share of events that break the contract (dead-lettered)")
    parser.add_argument("--duplicate-share", type=float, default=0.005,
                        help="share of events that repeat an earlier order_id")
    parser.add_argument("--categories", type=int, default=12, help="categories in the generated catalogue")
    parser.add_argument("--products-per-category", type=int, default=200,
                        help="products per category (popularity is Zipf-skewed)")
    parser.add_argument("--customers", type=int, default=50_000, help="distinct customer ids drawn from")
    parser.add_argument("--return-rate", type=float, default=0.4,
                        help="share of orders from a customer seen before (the customer-level views need them)")
    parser.add_argument("--category-drift", type=float, default=0.3,
                        help="share of a returning customer's orders in a companion of their last category")


def _shape(args: argparse.Namespace) -> TrafficShape:
    for name in ("cross_sell_propensity", "treatment_uplift", "attribution_share", "late_share", "invalid_share",
                 "duplicate_share", "return_rate", "category_drift"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise SettingsError(f"--{name.replace('_', '-')}={value} is not allowed: expected 0 to 1.")
    if args.customers < 1:
        raise SettingsError(f"--customers={args.customers} is not allowed: expected a whole number >= 1.")
    return TrafficShape(
        cross_sell_propensity=args.cross_sell_propensity, treatment_uplift=args.treatment_uplift,
        attribution_share=args.attribution_share, late_share=args.late_share,
        invalid_share=args.invalid_share, duplicate_share=args.duplicate_share,
        categories=args.categories, products_per_category=args.products_per_category,
        customers=args.customers, return_rate=args.return_rate, category_drift=args.category_drift,
    )


def _require_broker(settings: Settings, command: str) -> str:
    if settings.embedded:
        raise SettingsError(
            f"CROSSSELL_BROKER_URL is empty, but `{command}` needs a running broker. "
            "Set it to kafka://host:port, or use `python -m streams run`, which starts the embedded broker."
        )
    return settings.bootstrap_servers()


def _prepare_broker(settings: Settings) -> str:
    bootstrap = settings.bootstrap_servers()
    check_broker(settings)
    created = ensure_topics(bootstrap, settings)
    if created:
        print(f"crosssell: created topics {', '.join(sorted(created))}", file=sys.stderr)
    return bootstrap


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.runtime.allocations import pin_mmap_threshold, trace_allocations
    from streams.runtime.app import create_app

    _require_free_web_port(settings)
    _require_broker(settings, "worker")
    _prepare_broker(settings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    pin_mmap_threshold()  # before the state grows: see streams/runtime/allocations.py
    app, _ = create_app(settings, args.app_class)
    if settings.tracemalloc_seconds:
        trace_allocations(app, settings.tracemalloc_seconds)
    # The worker keeps millions of long-lived objects (dedup ids, windows, pair summaries) and
    # allocates a few dozen short-lived ones per order. With Python's default threshold (700)
    # the young generation is collected every ~20 orders and the cyclic collector took ~10 %
    # of the worker's CPU; at 20,000 it takes ~3 % (python -m bench, bench/README.md).
    # Reference counting still frees almost everything at once; only cycles wait longer.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    make_worker(app, settings).execute_from_commandline()
    return 0


def make_worker(app: faust.App, settings: Settings) -> faust.Worker:
    """Faust's worker, logging at CROSSSELL_LOG_LEVEL and without its startup spinner.

    For the spinner, Faust's worker sets the root logger to DEBUG with a handler that spins it
    on every record, for good: every debug call of aiokafka and Faust then built a record that
    no handler printed, ~2.5 % of the worker's CPU at 16,000 events/s (py-spy, python -m bench).
    """
    import faust

    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.spinner = None
    return worker


def cmd_create_topics(settings: Settings, args: argparse.Namespace) -> int:
    _require_broker(settings, "create-topics")
    _prepare_broker(settings)
    return 0


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    # SIGTERM and SIGHUP (a service manager, a closed terminal) stop the broker as Ctrl-C does.
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _raise_interrupt)
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker listening: CROSSSELL_BROKER_URL={broker.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while broker.process is not None and broker.process.poll() is None:
                time.sleep(0.5)
    return 0


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    from streams.ops.generator import generate

    bootstrap = _require_broker(settings, "generate")
    _prepare_broker(settings)
    if args.profile != "constant" or args.scenario or args.simulate:
        report = _generate_scenario(settings, args, bootstrap)
    else:
        report = generate(bootstrap, settings.orders_topic, rate=args.rate, duration=args.duration, seed=args.seed,
                          shape=_shape(args), count=args.count, security=librdkafka_config(settings))
    print(report.summary("generated"), file=sys.stderr)
    return 0


def _generate_scenario(settings: Settings, args: argparse.Namespace, bootstrap: str) -> SendReport:
    from streams.ops.generator import generate_scenario
    from streams.ops.traffic import parse_scenario
    from streams.settings import parse_duration

    try:
        scenario = parse_scenario(args.rate, args.profile, args.scenario)
        seconds = parse_duration(args.simulate) if args.simulate else args.duration
    except ValueError as exc:
        raise SettingsError(str(exc) if str(exc).startswith("--") else
                            f"--simulate={args.simulate!r} is not allowed: expected a duration such as 7d") from None
    if seconds <= 0:
        raise SettingsError("a scenario needs --duration > 0 or --simulate SPAN")
    return generate_scenario(bootstrap, settings.orders_topic, scenario, seconds=seconds, seed=args.seed,
                             shape=_shape(args), security=librdkafka_config(settings),
                             simulate=args.simulate is not None)


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from streams.ops.replay import late_warning, replay

    bootstrap = _require_broker(settings, "replay")
    _prepare_broker(settings)
    with _open_lines(args.file) as lines:
        report, lateness = replay(bootstrap, settings.orders_topic, lines, rate=args.rate,
                                  security=librdkafka_config(settings),
                                  window=settings.window_seconds, grace=settings.grace_seconds, sort=not args.no_sort,
                                  chunk_lines=args.chunk_lines)
    print(report.summary(f"replayed {args.file}" + ("" if args.no_sort else " in event-time order")),
          file=sys.stderr)
    warning = late_warning(lateness, settings.grace_seconds, sorted_=not args.no_sort)
    if warning:
        print(warning, file=sys.stderr)
    return 0


@contextlib.contextmanager
def _open_lines(path: str) -> Iterator[Iterator[bytes]]:
    if path == "-":
        yield iter(sys.stdin.buffer)
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SettingsError(f"cannot read {path!r}: {exc.strerror}") from None
    with handle:
        yield iter(handle)


def cmd_recommendations(settings: Settings, args: argparse.Namespace) -> int:
    from streams.ops.reader import print_recommendations

    bootstrap = _require_broker(settings, "recommendations")
    horizons = [args.horizon] if args.horizon else list(settings.horizon_labels)
    unknown = [h for h in horizons if h not in settings.horizon_labels]
    if unknown:
        raise SettingsError(f"--horizon={unknown[0]} is not allowed: expected one of "
                            f"{', '.join(settings.horizon_labels)} (CROSSSELL_PAIR_HORIZONS).")
    topics = [settings.recommendations_topic_for(h) for h in horizons]
    with contextlib.suppress(KeyboardInterrupt):
        print_recommendations(bootstrap, topics, settings.partitions, args.product,
                              security=librdkafka_config(settings), follow=args.follow)
    return 0


def cmd_mark(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from streams.ops.markers import read_markers, write_marker
    from streams.orders.markers import MarkerError, current_marker, listed, new_marker
    from streams.settings import parse_instant

    if args.list:
        bootstrap = _require_broker(settings, "mark --list")
        check_broker(settings)
        markers = read_markers(bootstrap, settings.markers_topic, security=librdkafka_config(settings))
        for row in listed(markers):
            print(orjson.dumps(row).decode())
        used = current_marker(markers, settings.experiment_marker, settings.experiment_marker_time)
        print("crosssell: the before/after comparison uses " + ("no marker" if used is None else
              f"{used.text!r} at {used.as_json()['at']} ({used.source})"), file=sys.stderr)
        return 0
    try:
        at = None if args.at is None else parse_instant(args.at)
    except ValueError:
        raise SettingsError(f"--at={args.at!r} is not a time: expected RFC 3339 with an offset "
                            "(2026-11-22T18:30:00Z) or unix seconds") from None
    try:
        marker = new_marker(args.text or "", at, time.time())
    except MarkerError as exc:
        raise SettingsError(str(exc)) from None
    bootstrap = _require_broker(settings, "mark")
    _prepare_broker(settings)
    write_marker(bootstrap, settings.markers_topic, marker, security=librdkafka_config(settings))
    print(f"crosssell: marked {marker.text!r} at {marker.as_json()['at']} in {settings.markers_topic}",
          file=sys.stderr)
    if settings.experiment_marker:
        print(f"crosssell: note: CROSSSELL_EXPERIMENT_MARKER={settings.experiment_marker!r} is set and overrides "
              "markers in workers that have it", file=sys.stderr)
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Broker (embedded by default), topics, one worker (restarted when it exits) and demo traffic, until Ctrl-C."""
    shape = _shape(args)
    # Ctrl-C, SIGTERM (service manager, `timeout`) or SIGHUP (terminal closed) stops the children
    # and then the broker, in that order: the children run in their own sessions so the signal
    # reaches only us, and die with us if we are killed outright (streams/ops/supervisor.py).
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _raise_interrupt)
    _require_free_web_port(settings)
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if settings.embedded:
            # Not on the worker's web port, which is free until the worker starts.
            broker = stack.enter_context(EmbeddedBroker(port=free_port(avoid={settings.web_port})))
            env["CROSSSELL_BROKER_URL"] = broker.url
            print(f"crosssell: embedded broker (Tansu, memory only) at {broker.url}", flush=True)
            settings = Settings.from_env(env)
        _prepare_broker(settings)
        base = f"http://{settings.web_host}:{settings.web_port}"
        # An exited worker is started again (streams/ops/restarts.py), except for what a restart cannot fix.
        worker = stack.enter_context(RestartedWorker(
            [sys.executable, "-m", "streams", "worker"], env, f"{base}/health/ready",
            final_exits={EXIT_CONFIG: "a bad setting", EXIT_BROKER: "the broker is unreachable"}))
        code = worker.start(timeout=120)
        if code is not None:
            return code
        print(f"crosssell: worker up. Metrics: {base}/metrics  Live page: {base}/  Summary: {base}/api/summary",
              flush=True)
        generator = None
        if args.replay:
            from streams.ops.replay import late_warning, replay

            with _open_lines(args.replay) as lines:
                report, lateness = replay(settings.bootstrap_servers(), settings.orders_topic, lines,
                                          security=librdkafka_config(settings),
                                          window=settings.window_seconds, grace=settings.grace_seconds)
            print(f"crosssell: {report.summary(f'replayed {args.replay} in event-time order')}", flush=True)
            warning = late_warning(lateness, settings.grace_seconds, sorted_=True)
            if warning:
                print(warning, file=sys.stderr)
            print("crosssell: the worker keeps running; Ctrl-C stops everything.", flush=True)
        elif args.no_demo:
            print(f"crosssell: no demo traffic; produce orders to {settings.orders_topic!r} at "
                  f"{settings.bootstrap_servers() or env['CROSSSELL_BROKER_URL']} (python -m streams replay FILE). "
                  "Ctrl-C stops everything.", flush=True)
        else:
            traffic = [sys.executable, "-m", "streams", "generate", "--rate", str(args.rate), "--duration", "0",
                       "--seed", str(args.seed), "--cross-sell-propensity", str(shape.cross_sell_propensity),
                       "--treatment-uplift", str(shape.treatment_uplift),
                       "--attribution-share", str(shape.attribution_share),
                       "--late-share", str(shape.late_share), "--invalid-share", str(shape.invalid_share),
                       "--duplicate-share", str(shape.duplicate_share), "--categories", str(shape.categories),
                       "--products-per-category", str(shape.products_per_category)]
            generator = stack.enter_context(_child(traffic, env))
            print(f"crosssell: sending demo orders at {args.rate:g}/s. Ctrl-C stops everything.", flush=True)
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        with contextlib.suppress(KeyboardInterrupt):
            while deadline is None or time.monotonic() < deadline:
                code = worker.keep_up()
                if code is not None:
                    return code
                # Not restarted: with the same seed it would send the same orders again (duplicates).
                if generator is not None and generator.poll() is not None:
                    print(f"crosssell: the generator exited with code {generator.returncode}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    # Once: a second signal (make forwards its own, Ctrl-C twice) must not cut the
    # shutdown short and leave a worker or the broker running.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stopping)
    raise KeyboardInterrupt


def _stopping(signum: int, frame: object) -> None:
    print("crosssell: stopping, please wait", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _child(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = spawn(command, env)
    try:
        yield process
    finally:
        stop(process, timeout=15)


class PortInUse(Exception):
    """The worker's web port is taken: nothing was started."""


def _require_free_web_port(settings: Settings) -> None:
    """Fail before anything starts when another program listens on the worker's web port."""
    host = settings.web_host or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, settings.web_port))
        except OSError as exc:
            raise PortInUse(
                f"CROSSSELL_WEB_PORT={settings.web_port}: port {settings.web_port} on {host} is in use "
                f"({exc.strerror}). Stop the program that listens there, or set CROSSSELL_WEB_PORT to a free port."
            ) from None
