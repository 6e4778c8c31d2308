"""The progress file a contender writes: events seen, and the clock and CPU time at the first and last.

Measured inside the contender, so the span starts at the first event it
received (startup and group join excluded) and the CPU time is its own, all
threads included (``time.process_time``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    import faust


class Progress:
    def __init__(self, path: str, target: int) -> None:
        self.path = Path(path)
        self.target = target
        self.count = 0
        self.first_count = 0
        self.first_at: float | None = None
        self.first_cpu: float | None = None
        self.last_at: float | None = None
        self.last_cpu: float | None = None
        self.write()

    def seen(self, n: int = 1) -> None:
        """Count ``n`` more events; call it right after they were processed."""
        if self.first_at is None:
            # The clock and CPU before the first event are not known here; the first
            # batch is counted from after it, so the span covers count - n events.
            self.first_at, self.first_cpu = time.time(), time.process_time()
            self.first_count = n
        self.count += n
        if self.count >= self.target and self.last_at is None:
            self.last_at, self.last_cpu = time.time(), time.process_time()
            self.write()

    def write(self) -> None:
        data = {
            "pid": os.getpid(), "count": self.count, "target": self.target,
            "first_count": self.first_count,
            "first_at": self.first_at, "first_cpu": self.first_cpu,
            "last_at": self.last_at, "last_cpu": self.last_cpu,
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(data))
        os.replace(temporary, self.path)


def common_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--events", type=int, required=True, help="stop counting at this many events")
    parser.add_argument("--group", required=True, help="consumer group / Faust app id (fresh per run)")
    parser.add_argument("--progress", required=True, help="progress JSON file to write")
    parser.add_argument("--web-port", type=int, default=0, help="Faust web port (Faust contenders)")
    parser.add_argument("--data-dir", default="", help="Faust data directory (Faust contenders)")
    return parser


def faust_app(args: argparse.Namespace, app_class: type[faust.App] | None = None) -> faust.App:
    """The Faust app of a Faust contender: Faust's defaults except what the embedded broker and
    a fresh group need (fast session/rebalance timeouts, earliest offset reset, a free web port
    and a private data directory)."""
    import faust

    return (app_class or faust.App)(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=args.data_dir,
        web_host="127.0.0.1", web_bind="127.0.0.1", web_port=args.web_port,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )


def run_faust(app: faust.App, progress: Progress) -> None:
    """Write the progress file every second and run the app's worker until stopped."""
    import faust

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def report() -> None:
        progress.write()

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
