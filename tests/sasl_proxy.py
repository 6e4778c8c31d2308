"""A Kafka SASL login in front of the embedded broker, for the secured-Kafka tests.

Tansu 0.6.0 cannot accept a SASL login (it offers SCRAM only, and its memory
storage keeps no users), so this proxy plays the broker's part of the login
and then forwards the connection to Tansu as is. It answers the Kafka
SaslHandshake and SaslAuthenticate requests (versions 0 and 1, the ones
librdkafka and aiokafka use) itself, passes ApiVersions through, and refuses
anything else before a login, as a broker with authentication does. The
mechanisms are PLAIN and SCRAM-SHA-256/512 (RFC 5802 and 7677, server side,
with a fresh salt per login). With ``tls`` it also terminates TLS (SASL_SSL).

It checks what a real broker checks; it is not Kafka's implementation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from tests.tcp_proxy import LOOPBACK, TcpProxy, _Connection

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
NO_ERROR, UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 0, 33, 58
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ITERATIONS = 4096


@dataclass
class SaslProxy(TcpProxy):
    users: dict[str, str] = field(default_factory=dict)  # user name -> password
    logins: list[tuple[str, str]] = field(default_factory=list)  # (user, mechanism) of each login accepted
    refusals: list[str] = field(default_factory=list)  # why each refused login was refused

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        connection = _Connection(writer)
        self._connections.add(connection)
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
            connection.upstream = up_writer
            if await self._login(reader, writer, up_reader, up_writer):
                await asyncio.gather(self._pipe(reader, up_writer, up=True),
                                     self._pipe(up_reader, writer, up=False))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._connections.discard(connection)
            connection.abort()

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> bool:
        """Until a login succeeds (True) or is refused (False)."""
        login: Login | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation_id, client_id_length = struct.unpack(">hhih", frame[:10])
            body = frame[10 + max(0, client_id_length):]
            if api_key == API_VERSIONS:
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                response = await _read_frame(up_reader)
                writer.write(struct.pack(">i", len(response)) + response)
                await writer.drain()
            elif api_key == SASL_HANDSHAKE and version <= 1:
                mechanism = _string(body)
                known = mechanism in MECHANISMS
                login = Login(mechanism, self.users) if known else None
                mechanisms = b"".join(_encode_string(m) for m in MECHANISMS)
                error = NO_ERROR if known else UNSUPPORTED_SASL_MECHANISM
                await _reply(writer, correlation_id, struct.pack(">hi", error, len(MECHANISMS)) + mechanisms)
                if not known:
                    self.refusals.append(f"unsupported mechanism {mechanism}")
                    return False
            elif api_key == SASL_AUTHENTICATE and version <= 1 and login is not None:
                reply, outcome = login.step(_bytes(body))
                error = SASL_AUTHENTICATION_FAILED if outcome is False else NO_ERROR
                message = _encode_string(login.failure) if outcome is False else struct.pack(">h", -1)
                lifetime = struct.pack(">q", 0) if version >= 1 else b""
                await _reply(writer, correlation_id, struct.pack(">h", error) + message
                             + struct.pack(">i", len(reply)) + reply + lifetime)
                if outcome is False:
                    self.refusals.append(login.failure)
                    return False
                if outcome is True:
                    self.logins.append((login.user, login.mechanism))
                    return True
            else:  # anything else before a login: a broker with authentication closes the connection
                self.refusals.append(f"request {api_key} v{version} before a login")
                return False


@dataclass
class Login:
    """The server side of one SASL exchange: PLAIN in one step, SCRAM in two."""

    mechanism: str
    users: dict[str, str]
    user: str = ""
    failure: str = ""
    _first_bare: str = ""
    _server_first: str = ""
    _nonce: str = ""
    _salted: bytes = b""

    @property
    def _hash(self) -> str:
        return "sha256" if self.mechanism == "SCRAM-SHA-256" else "sha512"

    def step(self, token: bytes) -> tuple[bytes, bool | None]:
        """(the server's token, True: logged in, False: refused, None: another step follows)."""
        if self.mechanism == "PLAIN":
            _, user, password = token.decode().split("\0")
            self.user = user
            return b"", self._verdict(hmac.compare_digest(self.users.get(user, "\0").encode(), password.encode()))
        if not self._nonce:
            return self._server_first_message(token.decode()), None
        return self._server_final_message(token.decode())

    def _verdict(self, ok: bool) -> bool:
        if not ok:
            self.failure = f"Authentication failed for user {self.user!r} with {self.mechanism}"
        return ok

    def _server_first_message(self, client_first: str) -> bytes:
        self._first_bare = client_first.split(",", 2)[2]  # after the GS2 header "n,,"
        attributes = _attributes(self._first_bare)
        self.user = attributes["n"].replace("=2C", ",").replace("=3D", "=")
        self._nonce = attributes["r"] + base64.b64encode(os.urandom(18)).decode()
        salt = os.urandom(16)
        # An unknown user gets a made-up salt and fails at the proof, as RFC 5802 suggests.
        password = self.users.get(self.user, base64.b64encode(os.urandom(24)).decode())
        self._salted = hashlib.pbkdf2_hmac(self._hash, password.encode(), salt, ITERATIONS)
        self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}"
        return self._server_first.encode()

    def _server_final_message(self, client_final: str) -> tuple[bytes, bool]:
        without_proof, _, proof = client_final.rpartition(",p=")
        if _attributes(without_proof).get("r") != self._nonce:
            return b"e=other-error", self._verdict(False)
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        client_key = hmac.digest(self._salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        signature = hmac.digest(stored_key, auth_message, self._hash)
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if not (self.user in self.users
                and hmac.compare_digest(hashlib.new(self._hash, recovered).digest(), stored_key)):
            return b"e=invalid-proof", self._verdict(False)
        server_key = hmac.digest(self._salted, b"Server Key", self._hash)
        return b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, self._hash)), True


def _attributes(message: str) -> dict[str, str]:
    return {part[0]: part[2:] for part in message.split(",") if len(part) >= 2 and part[1] == "="}


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 0 < size <= 10_000_000:
        raise ValueError(f"not a Kafka frame ({size} bytes)")
    return await reader.readexactly(size)


async def _reply(writer: asyncio.StreamWriter, correlation_id: int, body: bytes) -> None:
    writer.write(struct.pack(">ii", 4 + len(body), correlation_id) + body)
    await writer.drain()


def _string(body: bytes) -> str:
    (length,) = struct.unpack(">h", body[:2])
    return body[2:2 + length].decode()


def _bytes(body: bytes) -> bytes:
    (length,) = struct.unpack(">i", body[:4])
    return body[4:4 + length]


def _encode_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data
