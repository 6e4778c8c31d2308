"""How every Kafka client of the project connects to a secured Kafka, from the settings, in one place.

The project has two kinds of Kafka client: librdkafka (confluent-kafka: the
admin checks, ``generate``, ``replay``) and aiokafka (the Faust worker). Both
get the same TLS and SASL settings here, each in its own shape:

* :func:`librdkafka_config`: the ``security.protocol``, ``ssl.*`` and ``sasl.*``
  properties to merge into a confluent-kafka configuration;
* :func:`ssl_context`: the TLS context aiokafka uses (CA, client certificate);
* :func:`broker_credentials`: Faust's ``broker_credentials``, which Faust hands to
  each of its aiokafka clients (consumer, producer, topic creation).

A CA, certificate or key that cannot be loaded is a bad setting (SettingsError
naming the variable), found before any connection is tried. Secrets go into
the client configurations and nowhere else: no message here shows them.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from streams.settings import PREFIX, Settings, SettingsError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def librdkafka_config(settings: Settings) -> dict[str, str]:
    """The security properties of a confluent-kafka client (Producer, Consumer, AdminClient)."""
    config = {"security.protocol": settings.security_protocol.lower()}
    if settings.uses_tls:
        # Without a CA file librdkafka trusts the system's CA certificates, as ssl_context() does.
        optional = {"ssl.ca.location": settings.ssl_ca_file, "ssl.certificate.location": settings.ssl_cert_file,
                    "ssl.key.location": settings.ssl_key_file, "ssl.key.password": settings.ssl_key_password}
        config.update({key: value for key, value in optional.items() if value})
    if settings.uses_sasl:
        config.update({"sasl.mechanism": settings.sasl_mechanism, "sasl.username": settings.sasl_username,
                       "sasl.password": settings.sasl_password})
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context (None without TLS): the broker's certificate is verified, host name included."""
    if not settings.uses_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.ssl_ca_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"{PREFIX}SSL_CA_FILE={settings.ssl_ca_file!r} could not be loaded as CA certificates "
                            f"({_reason(exc)}). Expected a PEM file of one or more certificates.") from None
    if settings.ssl_cert_file:
        try:
            # A callable, not None: with None, OpenSSL would ask for the password of an encrypted key on the terminal.
            context.load_cert_chain(settings.ssl_cert_file, settings.ssl_key_file,
                                    password=lambda: settings.ssl_key_password)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"{PREFIX}SSL_CERT_FILE={settings.ssl_cert_file!r} and {PREFIX}SSL_KEY_FILE="
                f"{settings.ssl_key_file!r} could not be loaded as a client certificate and its key "
                f"({_reason(exc)}). Expected PEM files of a certificate and the private key it was issued for; "
                f"an encrypted key also needs {PREFIX}SSL_KEY_PASSWORD (or {PREFIX}SSL_KEY_PASSWORD_FILE).") from None
    return context


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for these settings; None for plaintext."""
    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl_context(settings)
    if settings.uses_sasl:
        # With a context Faust makes it SASL_SSL, without SASL_PLAINTEXT.
        return SASLCredentials(username=settings.sasl_username, password=settings.sasl_password,
                               ssl_context=context, mechanism=settings.sasl_mechanism)
    if context is not None:
        return SSLCredentials(context)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
