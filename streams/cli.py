"""``python -m streams COMMAND``: run, worker, broker, create-topics, generate, replay.

Settings come from ``CROSSSELL_*`` environment variables (streams/settings.py);
flags are only for what a person varies per invocation (traffic shape, files).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from streams.admin import BrokerUnreachable, TopicMismatch, check_broker, ensure_topics
from streams.broker import BrokerError, EmbeddedBroker, stop_process
from streams.settings import Settings, SettingsError
from streams.traffic import TrafficShape

EXIT_CONFIG = 2
EXIT_BROKER = 3
# Allocations between two collections of the youngest generation in a worker (see cmd_worker).
YOUNG_GC_THRESHOLD = 20_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        return int(args.command(settings, args) or 0)
    except SettingsError as exc:
        print(f"crosssell: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BrokerUnreachable, BrokerError) as exc:
        print(f"crosssell: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except TopicMismatch as exc:
        print(f"crosssell: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streams", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the main job: broker (embedded unless CROSSSELL_BROKER_URL), "
                              "worker and demo traffic")
    _traffic_flags(run, rate=50.0)
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: Ctrl-C)")
    run.set_defaults(command=cmd_run)

    worker = commands.add_parser("worker", help="one Faust worker against CROSSSELL_BROKER_URL")
    worker.set_defaults(command=cmd_worker)

    broker = commands.add_parser("broker", help="only the embedded broker, until Ctrl-C")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(command=cmd_broker)

    topics = commands.add_parser("create-topics", help="create the project's topics if missing")
    topics.set_defaults(command=cmd_create_topics)

    generate = commands.add_parser("generate", help="send generated orders to the orders topic")
    _traffic_flags(generate, rate=100.0)
    generate.add_argument("--duration", type=float, default=60.0, help="seconds; 0 runs until Ctrl-C")
    generate.add_argument("--count", type=int, default=None, help="stop after this many events")
    generate.set_defaults(command=cmd_generate)

    replay = commands.add_parser("replay", help="send order events from an NDJSON file (or - for stdin)")
    replay.add_argument("file", help="NDJSON file, one event per line; - reads stdin")
    replay.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    replay.set_defaults(command=cmd_replay)
    return parser


def _traffic_flags(parser: argparse.ArgumentParser, rate: float) -> None:
    parser.add_argument("--rate", type=float, default=rate, help="events per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cross-sell-propensity", type=float, default=0.3)
    parser.add_argument("--late-share", type=float, default=0.01)
    parser.add_argument("--invalid-share", type=float, default=0.01)
    parser.add_argument("--duplicate-share", type=float, default=0.005)
    parser.add_argument("--categories", type=int, default=12)
    parser.add_argument("--products-per-category", type=int, default=200)


def _shape(args: argparse.Namespace) -> TrafficShape:
    for name in ("cross_sell_propensity", "late_share", "invalid_share", "duplicate_share"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise SettingsError(f"--{name.replace('_', '-')}={value} is not allowed: expected 0 to 1.")
    return TrafficShape(
        cross_sell_propensity=args.cross_sell_propensity, late_share=args.late_share,
        invalid_share=args.invalid_share, duplicate_share=args.duplicate_share,
        categories=args.categories, products_per_category=args.products_per_category,
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
    check_broker(bootstrap, settings.broker_check_timeout_seconds)
    created = ensure_topics(bootstrap, settings)
    if created:
        print(f"crosssell: created topics {', '.join(sorted(created))}", file=sys.stderr)
    return bootstrap


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust

    from streams.app import create_app

    _require_broker(settings, "worker")
    _prepare_broker(settings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app, _ = create_app(settings)
    if settings.tracemalloc_seconds:
        from streams.allocations import trace_allocations

        trace_allocations(app, settings.tracemalloc_seconds)
    # The worker keeps millions of long-lived objects (dedup ids, windows, pair summaries) and
    # allocates a few dozen short-lived ones per order. With Python's default threshold (700)
    # the young generation is collected every ~20 orders and the cyclic collector took ~10 %
    # of the worker's CPU; at 20,000 it takes ~3 % (python -m bench, bench/README.md).
    # Reference counting still frees almost everything at once; only cycles wait longer.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
    return 0


def cmd_create_topics(settings: Settings, args: argparse.Namespace) -> int:
    _require_broker(settings, "create-topics")
    _prepare_broker(settings)
    return 0


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker listening: CROSSSELL_BROKER_URL={broker.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while broker.process is not None and broker.process.poll() is None:
                time.sleep(0.5)
    return 0


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    from streams.generator import generate

    bootstrap = _require_broker(settings, "generate")
    _prepare_broker(settings)
    report = generate(bootstrap, settings.orders_topic, rate=args.rate, duration=args.duration, seed=args.seed,
                      shape=_shape(args), count=args.count)
    print(report.summary("generated"), file=sys.stderr)
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from streams.generator import replay

    bootstrap = _require_broker(settings, "replay")
    _prepare_broker(settings)
    with _open_lines(args.file) as lines:
        report = replay(bootstrap, settings.orders_topic, lines, rate=args.rate)
    print(report.summary(f"replayed {args.file}"), file=sys.stderr)
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


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Broker (embedded by default), topics, one worker and demo traffic, until Ctrl-C."""
    shape = _shape(args)
    # Ctrl-C or a SIGTERM (service manager, `timeout`) stops the children and then the broker,
    # in that order: the children run in their own sessions so the signal reaches only us.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if settings.embedded:
            broker = stack.enter_context(EmbeddedBroker())
            env["CROSSSELL_BROKER_URL"] = broker.url
            print(f"crosssell: embedded broker (Tansu, memory only) at {broker.url}", flush=True)
            settings = Settings.from_env(env)
        _prepare_broker(settings)
        worker = stack.enter_context(_child([sys.executable, "-m", "streams", "worker"], env))
        base = f"http://{settings.web_host}:{settings.web_port}"
        _wait_for_http(f"{base}/metrics", worker, timeout=90)
        print(f"crosssell: worker up. Metrics: {base}/metrics  Live page: {base}/  Summary: {base}/api/summary",
              flush=True)
        traffic = [sys.executable, "-m", "streams", "generate", "--rate", str(args.rate), "--duration", "0",
                   "--seed", str(args.seed), "--cross-sell-propensity", str(shape.cross_sell_propensity),
                   "--late-share", str(shape.late_share), "--invalid-share", str(shape.invalid_share),
                   "--duplicate-share", str(shape.duplicate_share), "--categories", str(shape.categories),
                   "--products-per-category", str(shape.products_per_category)]
        generator = stack.enter_context(_child(traffic, env))
        print(f"crosssell: sending demo orders at {args.rate:g}/s. Ctrl-C stops everything.", flush=True)
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        with contextlib.suppress(KeyboardInterrupt):
            while deadline is None or time.monotonic() < deadline:
                for name, child in (("worker", worker), ("generator", generator)):
                    if child.poll() is not None:
                        print(f"crosssell: the {name} exited with code {child.returncode}", file=sys.stderr)
                        return 1
                time.sleep(0.5)
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    # Once: a second signal (make forwards its own, Ctrl-C twice) must not cut the
    # shutdown short and leave a worker or the broker running.
    for name in (signal.SIGINT, signal.SIGTERM):
        signal.signal(name, _stopping)
    raise KeyboardInterrupt


def _stopping(signum: int, frame: object) -> None:
    print("crosssell: stopping, please wait", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _child(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        yield process
    finally:
        stop_process(process, timeout=15)


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"the worker exited with code {process.returncode} before serving {url}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise BrokerError(f"the worker did not serve {url} within {timeout:g}s")
