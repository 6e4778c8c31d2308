"""Reach the broker and make sure the project's topics exist, with confluent-kafka.

Topics are created explicitly before anything produces to them: a broker that
auto-creates a topic picks its own partition count, and Faust then refuses to
start (source topic and changelog partitions differ).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined,unused-ignore]

from streams.ops.security import librdkafka_config, ssl_context
from streams.settings import PREFIX, Settings


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
        TopicSpec(settings.customers_topic, settings.partitions, {}),
        # One partition: its owner tests the whole fleet's orders (streams/orders/fleet_detection.py).
        TopicSpec(settings.detection_topic_name, 1, {}),
        # One partition keeps the markers in the order written; compacted, keyed by time and text.
        TopicSpec(settings.markers_topic, 1, {"cleanup.policy": "compact"}),
    ] + [
        TopicSpec(settings.recommendations_topic_for(h), settings.partitions, {"cleanup.policy": "compact"})
        for h in settings.horizon_labels
    ]


_quiet = logging.getLogger("crosssell.kafka-client")


@dataclass
class ClientLog:
    """What librdkafka reported while a check ran: its log lines and its errors, kept to explain a failure.

    librdkafka logs every failed connection attempt (about 20 a second while the broker
    is down); kept here instead of printed, so that the one actionable message stands out.
    """

    lines: list[str] = field(default_factory=list)
    limit: int = 200

    def log(self, level: int, message: str, *args: object) -> None:
        if len(self.lines) < self.limit:
            self.lines.append(message % args if args else message)
        _quiet.debug(message, *args)

    def error(self, error: KafkaError) -> None:
        if len(self.lines) < self.limit:
            self.lines.append(error.str())
        _quiet.debug("kafka client: %s", error)


def admin_client(bootstrap: str, settings: Settings, log: ClientLog | None = None) -> AdminClient:
    log = log or ClientLog(limit=0)
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000,
                              **librdkafka_config(settings), "error_cb": log.error}
    return AdminClient(config, logger=log)


def check_broker(settings: Settings) -> set[str]:
    """Names of the broker's topics; raises BrokerUnreachable within the check timeout, saying why.

    A CA, certificate or key that cannot be loaded raises SettingsError first.
    """
    bootstrap, timeout = settings.bootstrap_servers(), settings.broker_check_timeout_seconds
    ssl_context(settings)
    log = ClientLog()
    client = admin_client(bootstrap, settings, log)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = client.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return set(metadata.topics)
        except KafkaException as exc:
            client.poll(0)  # deliver the errors librdkafka queued for error_cb
            # A rejected certificate or login will not heal by waiting: say so at once.
            if time.monotonic() >= deadline or _settled(log.lines):
                raise BrokerUnreachable(diagnose(log.lines, settings, f"{exc.args[0]}")) from None


# What librdkafka says, and what it means for the settings (first match wins).
_CERTIFICATE_REJECTED = "certificate verify failed"
_TLS_FAILED = ("SSL handshake failed", "SSL connection closed by peer")
_LOGIN_FAILED = ("SASL authentication error", "mechanism handshake failed")
_CLOSED_BY_BROKER = ("connection closed by peer", "connection reset by peer")


def _settled(lines: Iterable[str]) -> bool:
    needles = (_CERTIFICATE_REJECTED, *_TLS_FAILED, *_LOGIN_FAILED)
    return any(needle in line for line in lines for needle in needles)


def diagnose(lines: Iterable[str], settings: Settings, failure: str) -> str:
    """A sentence a person can act on, from what librdkafka reported while it failed to reach the broker."""
    lines = list(lines)
    bootstrap, timeout = settings.bootstrap_servers(), settings.broker_check_timeout_seconds
    protocol = f"{PREFIX}SECURITY_PROTOCOL={settings.security_protocol}"

    def first(*needles: str) -> str | None:
        return next((_detail(line) for line in lines if any(needle in line for needle in needles)), None)

    if (detail := first(_CERTIFICATE_REJECTED)) is not None:
        trusted = repr(settings.ssl_ca_file) if settings.ssl_ca_file else "empty: the system's CA certificates"
        return (f"The broker at {bootstrap} presented a TLS certificate this client does not trust ({detail}). "
                f"Check {PREFIX}SSL_CA_FILE (now {trusted}): it must hold the CA that signed the broker's "
                f"certificate, and that certificate must name the host of {PREFIX}BROKER_URL.")
    if (detail := first(*_TLS_FAILED)) is not None:
        return (f"The TLS handshake with the broker at {bootstrap} failed ({detail}). Check {protocol}: the "
                f"broker's listener must speak TLS; if it requires a client certificate, set "
                f"{PREFIX}SSL_CERT_FILE and {PREFIX}SSL_KEY_FILE to one it accepts.")
    if (detail := first(*_LOGIN_FAILED)) is not None:
        return (f"The broker at {bootstrap} refused the SASL login of user {settings.sasl_username!r} with "
                f"{settings.sasl_mechanism or 'no mechanism'} ({detail}). Check {PREFIX}SASL_USERNAME, "
                f"{PREFIX}SASL_PASSWORD (or {PREFIX}SASL_PASSWORD_FILE) and {PREFIX}SASL_MECHANISM.")
    if (detail := first(*_CLOSED_BY_BROKER)) is not None:
        return (f"The broker at {bootstrap} accepted the connection and then closed it ({detail}), as a broker "
                f"does when a client speaks another protocol than its listener. Check {protocol}: a listener "
                "with TLS needs SSL or SASL_SSL, one that requires a login SASL_PLAINTEXT or SASL_SSL.")
    hint = f" If it is running, check that {protocol} is what its listener expects." if (
        settings.security_protocol != "PLAINTEXT") else ""
    return (f"No Kafka broker answered at {bootstrap} within {timeout:g}s ({failure}). "
            f"Check {PREFIX}BROKER_URL and that the broker is running, "
            f"or leave {PREFIX}BROKER_URL empty to use the embedded broker.{hint}")


# "FAIL [rdkafka#producer-1] [thrd:ssl://host:9093/bootstrap]: ssl://host:9093/bootstrap: " before the reason.
_PREFIXES = re.compile(r"^(?:[A-Z]+ \[[^\]]*\] \[[^\]]*\]: )?(?:[a-z_]+://)?[^\s/]+/[^\s:]+: ")


def _detail(line: str) -> str:
    """librdkafka's reason, without its log and broker prefixes."""
    return _PREFIXES.sub("", line.strip())[:300]


def ensure_topics(bootstrap: str, settings: Settings, timeout: float = 10.0) -> list[str]:
    """Create the missing project topics; return the names created."""
    client = admin_client(bootstrap, settings)
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
