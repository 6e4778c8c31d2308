"""A Faust Monitor without per-message bookkeeping (one of the fast path's tuned settings)."""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors import Monitor
from faust.types import TP, Message


class LightMonitor(Monitor):
    """Faust's Monitor without its per-message and per-table-access bookkeeping.

    The default Monitor records every message and stream event (timestamps in
    deques, counters per topic-partition) for Faust's own web statistics, which
    this project does not read: its metrics come from the ledgers. Kept: the
    time each partition last delivered an event (Faust's slow-processing
    warnings read it) and everything that is not per message (rebalance,
    commit, send statistics).
    """

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> dict[str, Any] | None:
        # Kept: the consumer's slow-processing check reads it (Consumer.verify_event_path).
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any,
                            state: dict[str, Any] | None = None) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_table_del(self, table: Any, key: Any) -> None:
        pass

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        pass
