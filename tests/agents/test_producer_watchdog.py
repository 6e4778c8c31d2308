"""A producer that stopped for good is noticed: the worker exits non-zero instead of waiting forever.

Faust's producer buffer stops on a send it cannot make and never starts again;
before the watchdog, a drop-test message over the client's request size (a
flush of a week's backlog, replayed in minutes) left a worker serving /metrics
with a flush outstanding forever and every partition's lag growing. Here the
real producer of a real app is made to stop the same way, by a real
MessageSizeTooLargeError from the Kafka client against the embedded broker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

from streams.ops.broker import EmbeddedBroker
from streams.runtime.app import producer_stopped
from tests.agents.test_order_agents import built_pipeline


async def test_a_send_the_client_refuses_stops_the_producer_and_the_watchdog_says_why(broker: EmbeddedBroker,
                                                                                      tmp_path: Any) -> None:
    async with built_pipeline(broker, tmp_path) as pipeline:
        app = pipeline.app
        assert producer_stopped(app) is None
        topic = app.topic(pipeline.orders.settings.dead_letter_topic, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
        topic.send_soon(key=b"k", value=b"x" * 1_100_000)  # over the client's 1,000,000-byte requests
        deadline = time.monotonic() + 10
        while producer_stopped(app) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reason = producer_stopped(app)
        assert reason is not None
        assert isinstance(reason.__cause__ or reason, MessageSizeTooLargeError), repr(reason)
