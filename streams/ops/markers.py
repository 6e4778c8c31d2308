"""``python -m streams mark``: write a before/after marker to the markers topic, or list them.

The marker itself (text, event time, which one counts) is streams/orders/markers.py;
here it is only sent and read back, with confluent-kafka and the project's
security settings.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaError, Message, Producer

from streams.ops.admin import BrokerUnreachable
from streams.ops.reader import current_lists
from streams.orders.markers import Marker, decode_marker

DELIVERY_TIMEOUT_SECONDS = 15.0


def write_marker(bootstrap: str, topic: str, marker: Marker, *, security: Mapping[str, str]) -> None:
    """Send ``marker`` and wait until the broker holds it; BrokerUnreachable when it does not in time."""
    failure: list[KafkaError] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failure.append(error)

    producer = Producer({"bootstrap.servers": bootstrap, **security, "acks": "all",
                         "message.timeout.ms": int(DELIVERY_TIMEOUT_SECONDS * 1000)})
    producer.produce(topic, key=marker.key(), value=marker.value(), on_delivery=delivered)
    left = producer.flush(DELIVERY_TIMEOUT_SECONDS + 5)
    if failure or left:
        reason = failure[0].str() if failure else "no delivery report"
        raise BrokerUnreachable(f"the marker was not written to {topic!r} at {bootstrap} ({reason}); "
                                "nothing was recorded: check CROSSSELL_BROKER_URL and run `mark` again")


def read_markers(bootstrap: str, topic: str, *, security: Mapping[str, str]) -> list[Marker]:
    """Every marker on the topic (the newest message of each key)."""
    found = current_lists(bootstrap, [topic], 1, security=security)
    return [m for m in (decode_marker(value) for value in found.values()) if m is not None]
