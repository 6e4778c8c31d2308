"""An Alertmanager of a test's own (Debian's prometheus-alertmanager binary) and a webhook receiver that records."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from streams.ops.broker import LOOPBACK, free_port
from streams.ops.supervisor import spawn, stop

from .prometheus import Server, get

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "alertmanager" / "alertmanager.yml"


@dataclass
class Notification:
    """One webhook post: when it arrived (monotonic) and its body."""

    received: float
    receiver: str
    body: dict[str, Any]

    def alert_names(self, status: str = "firing") -> set[str]:
        return {alert["labels"]["alertname"] for alert in self.body["alerts"] if alert["status"] == status}


@dataclass
class Webhook:
    """An HTTP server on loopback that keeps every notification posted to it (path: the receiver's name)."""

    port: int
    notifications: list[Notification] = field(default_factory=list)

    def url(self, receiver: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{receiver}"

    def first(self, alertname: str) -> Notification | None:
        return next((n for n in list(self.notifications) if alertname in n.alert_names()), None)


@contextlib.contextmanager
def webhook() -> Iterator[Webhook]:
    hook = Webhook(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            hook.notifications.append(Notification(time.monotonic(), self.path.strip("/"), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, hook.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def repository_config(hook: Webhook, *, group_wait: str = "1s") -> dict[str, Any]:
    """The repository's routing and inhibitions, its receivers pointed at ``hook`` and its waits shortened."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for webhook_config in receiver.get("webhook_configs", []):
            webhook_config["url"] = hook.url(receiver["name"])
    config["route"]["group_wait"] = group_wait
    config["route"]["group_interval"] = "1s"
    return config


@dataclass
class Alertmanager(Server):
    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(self.base_url + "/api/v2/alerts", data=json.dumps(alerts).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, response.read()

    def alerts(self) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = json.loads(get(self.base_url + "/api/v2/alerts", timeout=5))
        return body


@contextlib.contextmanager
def alertmanager(workdir: Path, config: dict[str, Any]) -> Iterator[Alertmanager]:
    """Alertmanager with ``config`` on a free loopback port, clustering off (it would listen on every address)."""
    assert ALERTMANAGER is not None
    path = workdir / "alertmanager.yml"
    path.write_text(json.dumps(config, indent=2))
    port = free_port()
    log_path = workdir / "alertmanager.log"
    with open(log_path, "wb") as log:
        process = spawn([ALERTMANAGER, f"--config.file={path}", f"--storage.path={workdir / 'am-data'}",
                         f"--web.listen-address={LOOPBACK}:{port}", "--cluster.listen-address=",
                         "--log.level=warn"], log=log, cwd=workdir)
    manager = Alertmanager(process, port, log_path)
    try:
        manager.wait_ready(30)
        yield manager
    finally:
        stop(process, 10)
