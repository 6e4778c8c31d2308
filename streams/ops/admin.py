"""Reach the broker and make sure the project's topics exist, with confluent-kafka.

Topics are created explicitly before anything produces to them: a broker that
auto-creates a topic picks its own partition count, and Faust then refuses to
start (source topic and changelog partitions differ).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.settings import Settings


class BrokerUnreachable(RuntimeError):
    """No broker answered at the configured address."""


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than the settings say."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def project_topics(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(settings.orders_topic, settings.partitions, {}),
        TopicSpec(settings.dead_letter_topic, settings.partitions, {}),
        TopicSpec(settings.pairs_topic, settings.partitions, {}),
    ] + [
        TopicSpec(settings.recommendations_topic_for(h), settings.partitions, {"cleanup.policy": "compact"})
        for h in settings.horizon_labels
    ]


_quiet = logging.getLogger("crosssell.kafka-client")


def admin_client(bootstrap: str) -> AdminClient:
    # librdkafka logs every failed connection attempt (about 20 a second while the broker
    # is down); route its log through a Python logger so the one actionable message stands out.
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000,
                              "error_cb": _ignore_error}
    return AdminClient(config, logger=_quiet)


def _ignore_error(error: object) -> None:
    _quiet.debug("kafka client: %s", error)


def check_broker(bootstrap: str, timeout: float) -> set[str]:
    """Names of the broker's topics; raises BrokerUnreachable within ``timeout`` seconds."""
    try:
        metadata = admin_client(bootstrap).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(
            f"No Kafka broker answered at {bootstrap} within {timeout:g}s ({exc.args[0]}). "
            "Check CROSSSELL_BROKER_URL and that the broker is running, "
            "or leave CROSSSELL_BROKER_URL empty to use the embedded broker."
        ) from None
    return set(metadata.topics)


def ensure_topics(bootstrap: str, settings: Settings, timeout: float = 10.0) -> list[str]:
    """Create the missing project topics; return the names created."""
    client = admin_client(bootstrap)
    metadata = client.list_topics(timeout=timeout)
    wanted = project_topics(settings)
    for spec in wanted:
        existing = metadata.topics.get(spec.name)
        if existing is not None and existing.error is None and len(existing.partitions) != spec.partitions:
            raise TopicMismatch(
                f"Topic {spec.name!r} has {len(existing.partitions)} partitions but CROSSSELL_PARTITIONS="
                f"{spec.partitions}. Set CROSSSELL_PARTITIONS={len(existing.partitions)}, or use new topic names."
            )
    missing = [spec for spec in wanted if spec.name not in metadata.topics]
    if not missing:
        return []
    futures = client.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=settings.replication_factor,
                  config=s.config) for s in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
