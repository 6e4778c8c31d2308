"""Certificates for the secured-Kafka tests: a CA, a broker certificate for 127.0.0.1, client certificates.

Made fresh per test session with trustme (on top of ``cryptography``), written as
PEM files, as a person would mount them. Nothing here is a real secret.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

from streams.ops.broker import LOOPBACK


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the broker's and the client's certificates
    other_ca: Path  # a CA that signed nothing here: a client trusting only it rejects the broker
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # encrypted with client_key_password
    client_key_password: str
    client_key_password_file: Path

    def server_context(self, require_client_certificate: bool = False) -> ssl.SSLContext:
        """The broker side of TLS (the proxy in front of Tansu serves it)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_certificate:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context

    def tls_environment(self, client_certificate: bool = True) -> dict[str, str]:
        """CROSSSELL_ settings of a client that trusts the CA (and logs in with its certificate)."""
        env = {"CROSSSELL_SECURITY_PROTOCOL": "SSL", "CROSSSELL_SSL_CA_FILE": str(self.ca)}
        if client_certificate:
            env.update({"CROSSSELL_SSL_CERT_FILE": str(self.client_cert),
                        "CROSSSELL_SSL_KEY_FILE": str(self.client_key),
                        "CROSSSELL_SSL_KEY_PASSWORD_FILE": str(self.client_key_password_file)})
        return env


def make_pki(directory: Path, key_password: str = "key-password-7d1f0c") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert(LOOPBACK, "localhost")
    client = ca.issue_cert("crosssell-worker.example")
    paths = {name: directory / name for name in ("ca.pem", "other-ca.pem", "server.pem", "server.key",
                                                   "client.pem", "client.key", "client-key-password")}
    ca.cert_pem.write_to_path(str(paths["ca.pem"]))
    other.cert_pem.write_to_path(str(paths["other-ca.pem"]))
    paths["server.pem"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(paths["server.key"]))
    paths["client.pem"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    paths["client.key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(key_password.encode())))
    paths["client-key-password"].write_text(key_password + "\n")  # as `echo pw > file` writes it
    return Pki(paths["ca.pem"], paths["other-ca.pem"], paths["server.pem"], paths["server.key"],
               paths["client.pem"], paths["client.key"], key_password, paths["client-key-password"])
