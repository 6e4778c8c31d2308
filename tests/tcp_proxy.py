"""A TCP proxy on 127.0.0.1 that can fail on demand, for network-fault tests.

It forwards every connection to one target port, on an asyncio loop in its own
thread, and has three controls a test calls from its own thread:

* :meth:`TcpProxy.drop` closes every open connection (both sides get a reset);
* :meth:`TcpProxy.block` stops all traffic: open connections stop forwarding
  (what was sent waits, as in a network partition) and new connections are
  either held without being forwarded (``refuse=False``) or reset at once
  (``refuse=True``);
* :meth:`TcpProxy.heal` lets traffic flow again; held connections connect on;
* :meth:`TcpProxy.slow` delays every byte by a latency, both ways (a slow link:
  a request's answer comes two latencies after it was sent), without limiting
  how many bytes flow.

With ``tls`` (a server SSLContext) it terminates TLS in front of a plaintext
target: the secured-Kafka tests use it because Tansu 0.6.0 cannot serve TLS.

Only loopback: it listens on 127.0.0.1 and forwards to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

LOOPBACK = "127.0.0.1"
CHUNK = 65536
T = TypeVar("T")


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    dropped: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)


@dataclass
class TcpProxy:
    target_port: int
    port: int = 0
    # With a server context the proxy terminates TLS: clients speak TLS to it, the target plaintext.
    tls: ssl.SSLContext | None = None
    stats: ProxyStats = field(default_factory=ProxyStats)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _server: asyncio.base_events.Server | None = field(default=None, init=False)
    _flowing: asyncio.Event | None = field(default=None, init=False)
    _refuse: bool = field(default=False, init=False)
    _latency: float = field(default=0.0, init=False)  # seconds each chunk waits before it is forwarded
    _connections: set[_Connection] = field(default_factory=set, init=False)

    # -- lifecycle (test thread) ---------------------------------------------
    def start(self) -> TcpProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close_all())
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"tcp-proxy-{self.target_port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    # -- faults (test thread) --------------------------------------------------
    def drop(self) -> int:
        """Reset every open connection; returns how many."""
        return self._call(self._drop)

    def block(self, refuse: bool = False) -> None:
        """Stop forwarding; new connections are held (or reset at once with ``refuse``)."""
        self._call(self._block, refuse)

    def heal(self) -> None:
        self._call(self._heal)

    def slow(self, latency: float) -> None:
        """Forward every chunk ``latency`` seconds after it arrived (0: at once), on every connection."""
        self._latency = latency

    @contextlib.contextmanager
    def outage(self, refuse: bool = False) -> Iterator[None]:
        """Drop every connection and block until the block ends, then heal."""
        self.drop()
        self.block(refuse)
        try:
            yield
        finally:
            self.heal()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _call(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function`` on the proxy's loop and return its result."""
        assert self._loop is not None, "the proxy is not running"

        async def run() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- the loop's side ---------------------------------------------------------
    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, self.port))
        self._server = await asyncio.start_server(self._accept, sock=sock, ssl=self.tls)
        self.port = int(sock.getsockname()[1])

    def _drop(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        self._connections.clear()
        self.stats.dropped += len(connections)
        return len(connections)

    def _block(self, refuse: bool) -> None:
        assert self._flowing is not None
        self._refuse = refuse
        self._flowing.clear()

    def _heal(self) -> None:
        assert self._flowing is not None
        self._refuse = False
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if self._refuse and not self._flowing.is_set():
            self.stats.refused += 1
            _reset(writer)
            return
        self.stats.accepted += 1
        connection = _Connection(writer)
        self._connections.add(connection)
        try:
            await self._flowing.wait()  # a held connection: accepted, not forwarded
            if connection not in self._connections:  # dropped while held
                return
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
            connection.upstream = up_writer
            await asyncio.gather(self._pipe(reader, up_writer, up=True), self._pipe(up_reader, writer, up=False))
        except OSError:
            pass
        finally:
            self._connections.discard(connection)
            connection.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        assert self._flowing is not None
        # Chunks with the loop time they are due: a slow link delays each, the reading goes on.
        late: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        forwarding = asyncio.ensure_future(self._forward(late, writer, up))
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()  # blocked: hold the bytes, read no more
                if forwarding.done():
                    break
                late.put_nowait((asyncio.get_running_loop().time() + self._latency, data))
        except OSError:
            pass
        finally:
            late.put_nowait(None)
            with contextlib.suppress(OSError):
                await forwarding
            # One side ended: end the other (Kafka connections are not half-closed).
            _reset(writer)

    async def _forward(self, late: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter,
                       up: bool) -> None:
        assert self._flowing is not None
        while (item := await late.get()) is not None:
            due, data = item
            await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
            await self._flowing.wait()
            if writer.is_closing():
                return
            writer.write(data)
            await writer.drain()
            if up:
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)

    async def _close_all(self) -> None:
        self._drop()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, as a dropped connection looks to its peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
