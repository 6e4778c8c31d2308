"""Contender (1), the client ceiling: confluent-kafka Consumer.consume(1000) + orjson.loads, nothing else."""

from __future__ import annotations

import signal
import time

import orjson
from confluent_kafka import Consumer

from bench.contenders.progress import Progress, common_arguments


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    args = common_arguments(__doc__ or "").parse_args()
    signal.signal(signal.SIGTERM, _exit)
    progress = Progress(args.progress, args.events)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        # As the Faust contenders: short group timeouts, or joining takes ~a minute on Tansu.
        "session.timeout.ms": 10000,
        "max.poll.interval.ms": 10000,
        "heartbeat.interval.ms": 3000,
    })
    consumer.subscribe([args.topic])
    loads = orjson.loads
    last_write = time.monotonic()
    try:
        while progress.last_at is None:
            batch = consumer.consume(1000, timeout=1.0)
            decoded = 0
            for message in batch:
                value = message.value()
                if message.error() is None and value is not None:
                    loads(value)
                    decoded += 1
            if decoded:
                progress.seen(decoded)
            if time.monotonic() - last_write > 1.0:
                last_write = time.monotonic()
                progress.write()
        while True:  # the harness reads our peak RSS, then stops us
            time.sleep(1)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
