"""One Faust message for the records of one partition from one fetch (the fast path's batches)."""

from __future__ import annotations

from typing import Any, cast

from faust.types import TP
from faust.types.tuples import ConsumerMessage


class MessageBatch(ConsumerMessage):
    """The records of one partition from one fetch, delivered to a stream as one message.

    ``offset`` and ``timestamp`` are the last record's, ``first_offset`` the
    first's; ``key`` and ``value`` are None. Acking the batch acks every offset
    from ``first_offset`` to ``offset`` (offsets in between that hold no record,
    such as transaction markers, have nothing to process).
    """

    __slots__ = ("first_offset", "records")

    def __init__(self, tp: TP, records: list[Any], generation_id: int | None) -> None:
        last = records[-1]
        timestamp = None if last.timestamp is None else last.timestamp / 1000.0  # seconds, as Faust's messages
        super().__init__(tp.topic, tp.partition, last.offset, cast(float, timestamp), last.timestamp_type,
                         None, None, None, None, 0, 0, tp, generation_id=generation_id)
        self.records = records
        self.first_offset: int = records[0].offset

    def drop_before(self, offset: int) -> None:
        """Keep only the records at ``offset`` or later (the consumer read the rest before)."""
        self.records = [record for record in self.records if record.offset >= offset]
        self.first_offset = self.records[0].offset
