"""The fence around what this project overrides or copies in faust-streaming and aiokafka.

``fastpath.py`` (with ``batch.py`` and ``monitor.py``) subclasses Faust's
consumer, consumer thread, transport, message, monitor and app. Some of its methods are Faust 0.15.3's own with changes
(``getmany``, ``_drain_messages``), others replace Faust's (``ack``) and read
Faust's private bookkeeping (``_committed_offset``, ``_acked``,
``_acked_index``, ``_n_acked``, the conductor's ``_tp_index``). An upgrade
that changes any of that could, silently, make the worker commit offsets its
state does not hold. So the versions and the source of every upstream method
the fast path overrides or copies are pinned here, and a test
(tests/unit/test_fence.py) fails, saying what to re-check, when any of them
changes. Until the fast path is re-checked, ``CROSSSELL_FAST_PATH=false`` runs
the worker on plain Faust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
from collections.abc import Mapping
from typing import Any

VERSIONS: dict[str, str] = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}

# "module:Class.method" of the upstream code -> the first 16 hex digits of the sha256 of its source.
GUARDED: dict[str, str] = {
    # Copied, with the changes marked in fastpath.py.
    "faust.transport.consumer:Consumer.getmany": "4b168d84882a70d6",
    "faust.transport.consumer:Consumer._drain_messages": "44a2500309e83c63",
    # Replaced; the replacement keeps Faust's bookkeeping (_committed_offset, _acked, _acked_index, _n_acked).
    "faust.transport.consumer:ThreadDelegateConsumer._getmany": "f9d47aa9010b5ff2",
    "faust.transport.consumer:Consumer.ack": "5fcf41cf45153475",
    "faust.transport.consumer:Consumer._add_gap": "4df2573ded7c1c2c",
    "faust.transport.consumer:Consumer._new_offset": "1d2c7ea89a7ad4f1",
    # Read: which streams consume a partition (conductor._tp_index).
    "faust.transport.conductor:Conductor._update_tp_index": "e8e3ac9025ef44f7",
    # Extended: MessageBatch is a ConsumerMessage built by hand and acked like one.
    "faust.types.tuples:Message.__init__": "afe1f75975597bc3",
    "faust.types.tuples:Message.ack": "4751b72c4ed84153",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer": "c2701bfc3e6f6cad",
    "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread": "0870ec53dea75083",
    "faust.transport.drivers.aiokafka:Transport": "966a67907f33524d",
    "faust.app.base:App.topic": "7b040db38d3b5c42",
    "faust.app.base:App._new_transport": "42db531312dd776f",
    "faust.sensors.monitor:Monitor.on_message_in": "b2a9a9045b2f456c",
    "faust.sensors.monitor:Monitor.on_stream_event_in": "df6d2e5f6397ce44",
    "faust.sensors.monitor:Monitor.on_stream_event_out": "2d2277a6dbda754c",
    "faust.sensors.monitor:Monitor.on_message_out": "7c4054247cde96c3",
    "faust.sensors.monitor:Monitor.on_table_get": "240aac793cfe6002",
    "faust.sensors.monitor:Monitor.on_table_set": "fe5ba12e91b2f6d4",
    "faust.sensors.monitor:Monitor.on_table_del": "8dae2dcdbcecc657",
    "faust.sensors.monitor:Monitor.track_tp_end_offset": "94ceb4542d7c1082",
    "faust.transport.consumer:ConsumerThread": "4914fd92c2a06b39",
    "aiokafka.consumer.consumer:AIOKafkaConsumer.getmany": "bc6d248e42a4e9d9",
}


def source_of(target: str) -> str:
    """The source text of ``module:Qualified.name``."""
    module_name, _, qualified = target.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in qualified.split("."):
        found = getattr(found, part)
    return inspect.getsource(found)


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def fence_problems(sources: Mapping[str, str] | None = None,
                   versions: Mapping[str, str] | None = None) -> list[str]:
    """What no longer matches the pinned versions and sources, each with what to re-check; [] when all match.

    ``sources`` and ``versions`` default to what is installed (a test passes changed ones).
    """
    if versions is None:
        versions = {name: importlib.metadata.version(name) for name in VERSIONS}
    problems = [
        f"{name} is {versions.get(name)}, the fast path was checked against {pinned}: re-check "
        f"streams/runtime/fastpath.py against its source (or run with CROSSSELL_FAST_PATH=false), then update "
        f"VERSIONS and GUARDED in streams/runtime/fence.py"
        for name, pinned in VERSIONS.items() if versions.get(name) != pinned
    ]
    for target, pinned in GUARDED.items():
        source = sources[target] if sources is not None and target in sources else source_of(target)
        if digest(source) != pinned:
            problems.append(
                f"{target} changed (source digest {digest(source)}, pinned {pinned}): streams/runtime/fastpath.py "
                f"copies, overrides or relies on it. Re-check the fast path's version of it (acking and offsets "
                f"above all: tests/agents/test_fastpath.py), then pin the new digest in streams/runtime/fence.py")
    return problems
