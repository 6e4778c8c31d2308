"""Secured Kafka in the settings and the client configurations: what each client receives, and that secrets stay out.

The librdkafka properties, the aiokafka arguments (as Faust builds them from
``broker_credentials``) and the Faust app's real aiokafka clients are checked
field by field here, for every protocol and SASL mechanism: the SASL logins
that Tansu 0.6.0 cannot accept are verified only this way.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.ops.admin import diagnose
from streams.ops.security import broker_credentials, librdkafka_config, ssl_context
from streams.settings import Settings, SettingsError
from tests.pki import Pki, make_pki

URL = {"CROSSSELL_BROKER_URL": "kafka://kafka-1.example:9093"}
PASSWORD = "s3cr3t-sasl-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def sasl_env(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return {**URL, "CROSSSELL_SECURITY_PROTOCOL": protocol, "CROSSSELL_SASL_MECHANISM": mechanism,
            "CROSSSELL_SASL_USERNAME": "crosssell", "CROSSSELL_SASL_PASSWORD": PASSWORD}


# -- settings ------------------------------------------------------------------------------------

def test_the_default_is_plaintext_without_credentials() -> None:
    settings = Settings.from_env(URL)
    assert (settings.security_protocol, settings.uses_tls, settings.uses_sasl) == ("PLAINTEXT", False, False)
    assert librdkafka_config(settings) == {"security.protocol": "plaintext"}
    assert broker_credentials(settings) is None


@pytest.mark.parametrize(("raw", "protocol"), [("ssl", "SSL"), (" sasl_ssl ", "SASL_SSL"), ("Plaintext", "PLAINTEXT")])
def test_the_protocol_is_read_in_any_case(raw: str, protocol: str) -> None:
    env = {**URL, "CROSSSELL_SECURITY_PROTOCOL": raw}
    if protocol.startswith("SASL"):
        env = {**sasl_env(protocol), "CROSSSELL_SECURITY_PROTOCOL": raw}
    assert Settings.from_env(env).security_protocol == protocol


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(" pass word \n")
    (tmp_path / "user").write_text("crosssell\r\n")
    env = {**sasl_env(), "CROSSSELL_SASL_PASSWORD_FILE": str(tmp_path / "password"),
           "CROSSSELL_SASL_USERNAME_FILE": str(tmp_path / "user")}
    del env["CROSSSELL_SASL_PASSWORD"], env["CROSSSELL_SASL_USERNAME"]
    settings = Settings.from_env(env)
    assert (settings.sasl_username, settings.sasl_password) == ("crosssell", " pass word ")


def test_a_password_in_a_variable_is_taken_verbatim() -> None:
    settings = Settings.from_env({**sasl_env(), "CROSSSELL_SASL_PASSWORD": " pw "})
    assert settings.sasl_password == " pw "


def test_secrets_are_not_in_the_settings_repr(pki: Pki) -> None:
    settings = Settings.from_env({**sasl_env(), "CROSSSELL_SSL_CERT_FILE": str(pki.client_cert),
                                  "CROSSSELL_SSL_KEY_FILE": str(pki.client_key),
                                  "CROSSSELL_SSL_KEY_PASSWORD": pki.client_key_password})
    shown = repr(settings) + str(settings)
    assert PASSWORD not in shown and pki.client_key_password not in shown
    assert "sasl_username='crosssell'" in shown  # the rest is still there to read


def missing(tmp: str = "/nonexistent") -> str:
    return f"{tmp}/crosssell-test-missing.pem"


# (description, environment, what the message must name, a phrase of what to do)
INVALID: list[tuple[str, dict[str, str], str, str]] = [
    ("unknown protocol", {**URL, "CROSSSELL_SECURITY_PROTOCOL": "TLS"}, "CROSSSELL_SECURITY_PROTOCOL",
     "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ("TLS with the embedded broker", {"CROSSSELL_SECURITY_PROTOCOL": "SSL"}, "CROSSSELL_BROKER_URL",
     "embedded broker serves plaintext only"),
    ("unknown mechanism", sasl_env(mechanism="GSSAPI"), "CROSSSELL_SASL_MECHANISM",
     "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ("SASL without a mechanism", {**sasl_env(), "CROSSSELL_SASL_MECHANISM": ""}, "CROSSSELL_SASL_MECHANISM",
     "required with CROSSSELL_SECURITY_PROTOCOL=SASL_SSL"),
    ("user name without password", {**sasl_env(), "CROSSSELL_SASL_PASSWORD": ""}, "CROSSSELL_SASL_PASSWORD_FILE",
     "logs in with a user name and password"),
    ("password without user name", {**sasl_env(), "CROSSSELL_SASL_USERNAME": ""}, "CROSSSELL_SASL_USERNAME",
     "logs in with a user name and password"),
    ("SASL settings without SASL", {**URL, "CROSSSELL_SASL_USERNAME": "u", "CROSSSELL_SASL_PASSWORD": PASSWORD},
     "CROSSSELL_SASL_PASSWORD", "SASL_PLAINTEXT or SASL_SSL"),
    ("a CA file without TLS", {**URL, "CROSSSELL_SSL_CA_FILE": "/etc/hostname"}, "CROSSSELL_SSL_CA_FILE",
     "SSL or SASL_SSL"),
    ("a CA file that does not exist", {**URL, "CROSSSELL_SECURITY_PROTOCOL": "SSL",
                                       "CROSSSELL_SSL_CA_FILE": missing()}, "CROSSSELL_SSL_CA_FILE", "does not exist"),
    ("a directory as key file", {**URL, "CROSSSELL_SECURITY_PROTOCOL": "SSL",
                                 "CROSSSELL_SSL_CERT_FILE": "/etc/hostname", "CROSSSELL_SSL_KEY_FILE": "/"},
     "CROSSSELL_SSL_KEY_FILE", "not a readable file"),
    ("certificate without key", {**URL, "CROSSSELL_SECURITY_PROTOCOL": "SSL",
                                 "CROSSSELL_SSL_CERT_FILE": "/etc/hostname"}, "CROSSSELL_SSL_KEY_FILE", "needs both"),
    ("key password without key", {**URL, "CROSSSELL_SECURITY_PROTOCOL": "SSL", "CROSSSELL_SSL_KEY_PASSWORD": PASSWORD},
     "CROSSSELL_SSL_KEY_FILE", "decrypts the client's private key"),
    ("a password and its file", {**sasl_env(), "CROSSSELL_SASL_PASSWORD_FILE": "/etc/hostname"},
     "CROSSSELL_SASL_PASSWORD_FILE", "set one of them"),
    ("a password file that cannot be read", {**sasl_env(), "CROSSSELL_SASL_PASSWORD": "",
                                             "CROSSSELL_SASL_PASSWORD_FILE": missing()},
     "CROSSSELL_SASL_PASSWORD_FILE", "cannot read the file"),
    ("a file variant of a setting that has none", {**URL, "CROSSSELL_SECURITY_PROTOCOL_FILE": "/etc/hostname"},
     "CROSSSELL_SECURITY_PROTOCOL_FILE", "CROSSSELL_SASL_PASSWORD_FILE"),
]


@pytest.mark.parametrize(("environ", "variable", "phrase"),
                         [pytest.param(e, v, p, id=d) for d, e, v, p in INVALID])
def test_a_bad_security_setting_names_the_variable_and_never_the_secret(
        environ: dict[str, str], variable: str, phrase: str) -> None:
    if environ.get("CROSSSELL_SASL_PASSWORD") == "" and "CROSSSELL_SASL_PASSWORD_FILE" in environ:
        del environ["CROSSSELL_SASL_PASSWORD"]
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    message = str(raised.value)
    assert variable in message and phrase in message, message
    assert PASSWORD not in message


# -- what each client receives --------------------------------------------------------------------

def test_librdkafka_receives_mutual_tls_with_an_encrypted_key(pki: Pki) -> None:
    settings = Settings.from_env({**URL, **pki.tls_environment()})
    assert librdkafka_config(settings) == {
        "security.protocol": "ssl", "ssl.ca.location": str(pki.ca), "ssl.certificate.location": str(pki.client_cert),
        "ssl.key.location": str(pki.client_key), "ssl.key.password": pki.client_key_password}


def test_librdkafka_without_a_ca_file_uses_the_system_cas() -> None:
    settings = Settings.from_env({**URL, "CROSSSELL_SECURITY_PROTOCOL": "SSL"})
    assert librdkafka_config(settings) == {"security.protocol": "ssl"}


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_client_receives_exactly_the_sasl_settings(pki: Pki, protocol: str, mechanism: str) -> None:
    env = sasl_env(protocol, mechanism)
    if protocol == "SASL_SSL":
        env["CROSSSELL_SSL_CA_FILE"] = str(pki.ca)
    settings = Settings.from_env(env)

    assert librdkafka_config(settings) == {
        "security.protocol": protocol.lower(), "sasl.mechanism": mechanism, "sasl.username": "crosssell",
        "sasl.password": PASSWORD, **({"ssl.ca.location": str(pki.ca)} if protocol == "SASL_SSL" else {})}

    # What Faust passes to each aiokafka client it makes (consumer, producer, topic creation).
    aiokafka = credentials_to_aiokafka_auth(broker_credentials(settings))
    context = aiokafka.pop("ssl_context")
    assert aiokafka == {"security_protocol": protocol, "sasl_mechanism": mechanism,
                        "sasl_plain_username": "crosssell", "sasl_plain_password": PASSWORD}
    assert (context is not None) == (protocol == "SASL_SSL")
    assert PASSWORD not in repr(broker_credentials(settings))


def test_aiokafka_receives_a_verifying_tls_context_with_the_client_certificate(pki: Pki) -> None:
    settings = Settings.from_env({**URL, **pki.tls_environment()})
    aiokafka = credentials_to_aiokafka_auth(broker_credentials(settings))
    context = aiokafka["ssl_context"]
    assert aiokafka["security_protocol"] == "SSL"
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert len(context.get_ca_certs()) == 1  # the CA file's, and not the system's


async def test_the_faust_apps_kafka_clients_are_built_with_the_settings(pki: Pki) -> None:
    from streams.runtime.app import create_pipeline

    env = {**sasl_env("SASL_SSL", "SCRAM-SHA-256"), "CROSSSELL_SSL_CA_FILE": str(pki.ca)}
    app = create_pipeline(Settings.from_env(env)).app
    producer = app.producer._new_producer()  # type: ignore[attr-defined]
    consumer = app.consumer._thread._create_worker_consumer(app.consumer.transport)  # type: ignore[attr-defined]
    for client in (producer.client, consumer._client):
        assert (client._security_protocol, client._sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
        assert (client._sasl_plain_username, client._sasl_plain_password) == ("crosssell", PASSWORD)
        assert client._ssl_context is not None and client._ssl_context.verify_mode == ssl.CERT_REQUIRED


# -- files that cannot be used ---------------------------------------------------------------------

def test_a_ca_file_that_is_not_pem_is_a_bad_setting(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    settings = Settings.from_env({**URL, "CROSSSELL_SECURITY_PROTOCOL": "SSL",
                                  "CROSSSELL_SSL_CA_FILE": str(tmp_path / "ca.pem")})
    with pytest.raises(SettingsError, match="CROSSSELL_SSL_CA_FILE"):
        ssl_context(settings)


@pytest.mark.parametrize(("password", "key"), [("wrong", "client"), ("", "client"), ("", "server")])
def test_a_key_that_cannot_be_used_is_a_bad_setting_without_asking_for_a_password(
        pki: Pki, password: str, key: str) -> None:
    env = {**URL, **pki.tls_environment(), "CROSSSELL_SSL_KEY_FILE": str(pki.client_key if key == "client"
                                                                          else pki.server_key)}
    del env["CROSSSELL_SSL_KEY_PASSWORD_FILE"]
    if password:
        env["CROSSSELL_SSL_KEY_PASSWORD"] = password
    with pytest.raises(SettingsError) as raised:
        ssl_context(Settings.from_env(env))  # an encrypted key without a password: no prompt, an error
    message = str(raised.value)
    assert "CROSSSELL_SSL_CERT_FILE" in message and "CROSSSELL_SSL_KEY_PASSWORD" in message
    assert pki.client_key_password not in message and (not password or password not in message)


# -- what a failed connection means ----------------------------------------------------------------

FAIL = "FAIL [rdkafka#producer-1] [thrd:ssl://127.0.0.1:9093/bootstrap]: ssl://127.0.0.1:9093/bootstrap: "
DIAGNOSES = [
    ("certificate", [FAIL + "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"],
     "CROSSSELL_SSL_CA_FILE", "certificate verify failed"),
    ("client certificate", [FAIL + "Disconnected: SSL connection closed by peer (after 0ms in state APIVERSION_QUERY)"],
     "CROSSSELL_SSL_CERT_FILE", "SSL connection closed by peer"),
    ("login", ["sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: SASL SCRAM authentication failed"],
     "CROSSSELL_SASL_PASSWORD", "SASL SCRAM authentication failed"),
    ("plaintext against TLS", [FAIL + "Disconnected: connection closed by peer: receive 0 after POLLIN"],
     "CROSSSELL_SECURITY_PROTOCOL=SASL_SSL", "receive 0 after POLLIN"),
    ("nothing listens", [FAIL + "Connect to ipv4#127.0.0.1:9093 failed: Connection refused"],
     "CROSSSELL_BROKER_URL", "No Kafka broker answered at kafka-1.example:9093 within 10s"),
]


@pytest.mark.parametrize(("lines", "variable", "phrase"),
                         [pytest.param(lines, v, p, id=d) for d, lines, v, p in DIAGNOSES])
def test_a_failed_connection_is_explained_by_the_setting_to_check(lines: list[str], variable: str,
                                                                   phrase: str) -> None:
    message = diagnose(lines, Settings.from_env(sasl_env()), "Local: Broker transport failure")
    assert variable in message and phrase in message, message
    assert "thrd:" not in message and PASSWORD not in message
