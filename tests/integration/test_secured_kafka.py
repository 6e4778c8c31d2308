"""Secured Kafka for real: worker, generate and replay over mutual TLS and over SASL_SSL, and the refusals.

TLS: Tansu 0.6.0 cannot serve TLS (its ``--cert`` and ``--key`` flags exclude
each other, so no key can be given with a certificate), so a TLS-terminating
proxy (Python's ssl, OpenSSL) sits in front of the embedded broker, which
advertises the proxy's port: every client speaks TLS, verifies the broker's
certificate against the test's CA and presents its own, which the proxy requires.

SASL: Tansu with ``--authentication`` is a real SASL server that accepts no
login (SCRAM only, and its memory storage keeps no users): the refusals are
tested against it. Successful logins (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) are
tested against the test's own SASL server (tests/sasl_proxy.py), which plays
the broker's part of the login and then forwards to Tansu.

Every secret used here is grepped for in what the commands print, the
worker's log and the worker's HTTP answers.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.ops.admin import check_broker
from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.security import broker_credentials, librdkafka_config
from streams.ops.traffic import OrderMaker, TrafficShape
from streams.settings import Settings
from tests.harness import (
    REPO,
    Cluster,
    assert_workers_match_truth,
    base_environment,
    offline_ledgers,
    read_partitions,
    wait_for_events,
)
from tests.pki import Pki, make_pki
from tests.sasl_proxy import SaslProxy
from tests.tcp_proxy import TcpProxy

EXIT_CONFIG = 2
EXIT_BROKER = 3
CHECK_TIMEOUT = "3"
SASL_USER, SASL_PASSWORD = "crosssell", "sasl-password-5e8a2b"
GENERATED, REPLAYED = 300, 200


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def tls_broker(pki: Pki, require_client_certificate: bool = True,
               authentication: bool = False) -> Iterator[EmbeddedBroker]:
    """The embedded broker behind a TLS-terminating proxy; clients are told the proxy's address."""
    port = free_port()
    with TcpProxy(target_port=port, tls=pki.server_context(require_client_certificate)) as proxy, \
            EmbeddedBroker(port=port, advertised_port=proxy.port, authentication=authentication) as broker:
        yield broker


@contextlib.contextmanager
def sasl_broker(pki: Pki | None = None) -> Iterator[tuple[EmbeddedBroker, SaslProxy]]:
    """The embedded broker behind the test's SASL login (and TLS with ``pki``); it knows one user."""
    port = free_port()
    with SaslProxy(target_port=port, tls=pki.server_context() if pki else None,
                   users={SASL_USER: SASL_PASSWORD}) as proxy, \
            EmbeddedBroker(port=port, advertised_port=proxy.port) as broker:
        yield broker, proxy


def sasl_environment(directory: Path, protocol: str, mechanism: str, password: str = SASL_PASSWORD) -> dict[str, str]:
    """CROSSSELL_ settings of a SASL login, the password from a file as a mounted secret."""
    password_file = directory / "sasl-password"
    password_file.write_text(password + "\n")
    return {"CROSSSELL_SECURITY_PROTOCOL": protocol, "CROSSSELL_SASL_MECHANISM": mechanism,
            "CROSSSELL_SASL_USERNAME": SASL_USER, "CROSSSELL_SASL_PASSWORD_FILE": str(password_file)}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        """The last line the command wrote for a person."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("crosssell:")]
        return lines[-1] if lines else ""


def streams(args: list[str], env: dict[str, str], timeout: float = 90.0) -> Result:
    """``python -m streams ARGS`` with ``env`` as its only CROSSSELL_ settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
    done = subprocess.run([sys.executable, "-m", "streams", *args], env={**clean, **env}, cwd=REPO,
                          capture_output=True, timeout=timeout, check=False)
    return Result(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def replay_file(directory: Path, count: int) -> Path:
    """``count`` valid orders (some duplicate, some late) as NDJSON, one per line."""
    maker = OrderMaker(random.Random(11), TrafficShape(invalid_share=0.0, duplicate_share=0.05, late_share=0.05))
    now = time.time()
    path = directory / "orders.ndjson"
    path.write_bytes(b"".join(maker.event(now - 60 + i * 0.1)[2] + b"\n" for i in range(count)))
    return path


@pytest.mark.parametrize("security", ["mutual TLS", "SASL_SSL with SCRAM-SHA-512"])
def test_the_worker_generate_and_replay_count_exactly_over_a_secured_connection(
        tmp_path: Path, pki: Pki, security: str) -> None:
    with contextlib.ExitStack() as stack:
        if security == "mutual TLS":
            broker = stack.enter_context(tls_broker(pki, require_client_certificate=True))
            secured, secret = pki.tls_environment(), pki.client_key_password
        else:
            broker, proxy = stack.enter_context(sasl_broker(pki))
            secured = {**sasl_environment(tmp_path, "SASL_SSL", "SCRAM-SHA-512"), "CROSSSELL_SSL_CA_FILE": str(pki.ca)}
            secret = SASL_PASSWORD
        env = base_environment(broker.url, {**secured, "CROSSSELL_LOG_LEVEL": "debug"})
        cluster = Cluster(broker, tmp_path, env)
        stack.callback(cluster.stop)

        worker = cluster.worker().start().wait_serving()
        generated = streams(["generate", "--rate", "1000", "--count", str(GENERATED), "--duration", "0",
                             "--seed", "5", "--invalid-share", "0.05", "--duplicate-share", "0.05"], env)
        assert generated.returncode == 0, generated.stderr[-3000:]
        assert f"generated: {GENERATED} events" in generated.stderr
        replayed = streams(["replay", str(replay_file(tmp_path, REPLAYED))], env)
        assert replayed.returncode == 0, replayed.stderr[-3000:]
        assert f": {REPLAYED} events" in replayed.stderr

        settings = cluster.settings
        wait_for_events([worker], GENERATED + REPLAYED, timeout=120, partitions=settings.partitions)
        truth = read_partitions(broker.bootstrap, settings.orders_topic, settings.partitions,
                                at_least=GENERATED + REPLAYED, client_config=librdkafka_config(settings))
        assert sum(len(events) for events in truth.values()) == GENERATED + REPLAYED
        assert_workers_match_truth([worker], offline_ledgers(settings, truth), settings)
        if security != "mutual TLS":  # every client logged in: the worker (aiokafka) and the commands (librdkafka)
            assert proxy.logins and set(proxy.logins) == {(SASL_USER, "SCRAM-SHA-512")}, proxy.refusals

        answers = b"".join(worker.get(path) for path in ("/api/summary", "/metrics", "/health/ready", "/"))
        worker.stop()
        printed = {"worker log": worker.log_path.read_text(errors="replace"), "generate": generated.stderr,
                   "replay": replayed.stderr, "HTTP answers": answers.decode(errors="replace")}
        assert printed["worker log"].strip(), "the worker logged nothing"
        for where, text in printed.items():
            assert secret not in text, f"the secret is in the {where}"


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_both_kinds_of_client_log_in_with_each_mechanism(
        tmp_path: Path, pki: Pki, protocol: str, mechanism: str) -> None:
    import aiokafka

    with sasl_broker(pki if protocol == "SASL_SSL" else None) as (broker, proxy):
        settings = Settings.from_env({"CROSSSELL_BROKER_URL": broker.url,
                                      **sasl_environment(tmp_path, protocol, mechanism),
                                      **({"CROSSSELL_SSL_CA_FILE": str(pki.ca)} if protocol == "SASL_SSL" else {})})
        check_broker(settings)  # librdkafka, as the admin check, generate and replay use it
        consumer = aiokafka.AIOKafkaConsumer(  # aiokafka, with what Faust gives the worker's clients
            bootstrap_servers=broker.bootstrap, **credentials_to_aiokafka_auth(broker_credentials(settings)))
        await consumer.start()
        try:
            await consumer.topics()
        finally:
            await consumer.stop()
    assert len(proxy.logins) >= 2 and set(proxy.logins) == {(SASL_USER, mechanism)}, proxy.refusals


def assert_refused(result: Result, exit_code: int, *names: str, secret: str = "") -> None:
    """Refused with ``exit_code`` and one line naming ``names``; no traceback and no secret anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == exit_code, output[-3000:]
    for name in names:
        assert name in result.message, f"{name} not in {result.message!r}\n{output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert len(result.stderr.splitlines()) <= 5, result.stderr[:2000]
    if secret:
        assert secret not in output


def tls_refusal_cases(pki: Pki) -> dict[str, tuple[dict[str, str], tuple[str, ...]]]:
    """(settings, what the message must name) of a client the TLS broker refuses."""
    return {
        "a CA that did not sign the broker's certificate": (
            {**pki.tls_environment(), "CROSSSELL_SSL_CA_FILE": str(pki.other_ca)},
            ("CROSSSELL_SSL_CA_FILE", "does not trust")),
        "plaintext against a TLS listener": ({}, ("CROSSSELL_SECURITY_PROTOCOL=PLAINTEXT", "closed it")),
        "no client certificate where one is required": (
            pki.tls_environment(client_certificate=False), ("CROSSSELL_SSL_CERT_FILE", "TLS handshake")),
    }


@pytest.mark.parametrize("command", ["worker", "generate", "replay"])
def test_a_client_the_tls_broker_refuses_exits_3_naming_the_setting(tmp_path: Path, pki: Pki, command: str) -> None:
    args = {"worker": ["worker"], "generate": ["generate", "--count", "1", "--duration", "0"],
            "replay": ["replay", str(replay_file(tmp_path, 1))]}[command]
    with tls_broker(pki, require_client_certificate=True) as broker:
        for case, (env, names) in tls_refusal_cases(pki).items():
            settings = {"CROSSSELL_BROKER_URL": broker.url, "CROSSSELL_BROKER_CHECK_TIMEOUT_SECONDS": CHECK_TIMEOUT,
                        "CROSSSELL_WEB_PORT": str(free_port()), "CROSSSELL_DATA_DIR": str(tmp_path / "w"), **env}
            started = time.monotonic()
            result = streams(args, settings)
            assert_refused(result, EXIT_BROKER, *names, secret=pki.client_key_password)
            assert time.monotonic() - started < 30, case


def test_tls_against_a_plaintext_listener_exits_3_naming_the_security_protocol(pki: Pki) -> None:
    with EmbeddedBroker() as broker:
        result = streams(["generate", "--count", "1", "--duration", "0"], {
            "CROSSSELL_BROKER_URL": broker.url, "CROSSSELL_BROKER_CHECK_TIMEOUT_SECONDS": CHECK_TIMEOUT,
            **pki.tls_environment()})
    assert_refused(result, EXIT_BROKER, "CROSSSELL_SECURITY_PROTOCOL=SSL", broker.bootstrap,
                   secret=pki.client_key_password)


def test_a_wrong_key_password_exits_2_naming_the_key_settings(pki: Pki, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    result = streams(["generate", "--count", "1", "--duration", "0"], {
        "CROSSSELL_BROKER_URL": f"kafka://127.0.0.1:{free_port()}", **pki.tls_environment(),
        "CROSSSELL_SSL_KEY_PASSWORD_FILE": str(wrong)})
    assert_refused(result, EXIT_CONFIG, "CROSSSELL_SSL_KEY_FILE", "CROSSSELL_SSL_KEY_PASSWORD",
                   secret="not-the-password")


@pytest.mark.parametrize(("protocol", "mechanism", "names"), [
    ("SASL_PLAINTEXT", "SCRAM-SHA-256", ("CROSSSELL_SASL_USERNAME", "CROSSSELL_SASL_PASSWORD", "refused")),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512", ("CROSSSELL_SASL_USERNAME", "CROSSSELL_SASL_PASSWORD", "refused")),
    ("SASL_PLAINTEXT", "PLAIN", ("CROSSSELL_SASL_MECHANISM", "refused")),
    ("SASL_SSL", "SCRAM-SHA-512", ("CROSSSELL_SASL_USERNAME", "CROSSSELL_SASL_PASSWORD", "refused")),
    ("PLAINTEXT", "", ("CROSSSELL_SECURITY_PROTOCOL=PLAINTEXT", "closed it")),
])
def test_a_login_tansu_refuses_exits_3_naming_the_credentials(
        tmp_path: Path, pki: Pki, protocol: str, mechanism: str, names: tuple[str, ...]) -> None:
    env = {"CROSSSELL_SECURITY_PROTOCOL": protocol, "CROSSSELL_BROKER_CHECK_TIMEOUT_SECONDS": CHECK_TIMEOUT}
    if mechanism:
        env.update(sasl_environment(tmp_path, protocol, mechanism))
    with contextlib.ExitStack() as stack:
        if protocol == "SASL_SSL":
            broker = stack.enter_context(tls_broker(pki, require_client_certificate=False, authentication=True))
            env["CROSSSELL_SSL_CA_FILE"] = str(pki.ca)
        else:
            broker = stack.enter_context(EmbeddedBroker(authentication=True))
        result = streams(["worker"], {**env, "CROSSSELL_BROKER_URL": broker.url,
                                      "CROSSSELL_WEB_PORT": str(free_port()),
                                      "CROSSSELL_DATA_DIR": str(tmp_path / "w")})
    assert_refused(result, EXIT_BROKER, *names, secret=SASL_PASSWORD)


@pytest.mark.parametrize("command", ["worker", "generate"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_wrong_password_exits_3_naming_the_password_and_never_showing_it(
        tmp_path: Path, command: str, mechanism: str) -> None:
    wrong = "wrong-password-91c3"
    with sasl_broker() as (broker, proxy):
        result = streams([command, *(["--count", "1", "--duration", "0"] if command == "generate" else [])], {
            **sasl_environment(tmp_path, "SASL_PLAINTEXT", mechanism, password=wrong),
            "CROSSSELL_BROKER_URL": broker.url, "CROSSSELL_BROKER_CHECK_TIMEOUT_SECONDS": CHECK_TIMEOUT,
            "CROSSSELL_WEB_PORT": str(free_port()), "CROSSSELL_DATA_DIR": str(tmp_path / "w")})
    assert_refused(result, EXIT_BROKER, "refused the SASL login", "CROSSSELL_SASL_PASSWORD", secret=wrong)
    assert proxy.refusals and not proxy.logins
