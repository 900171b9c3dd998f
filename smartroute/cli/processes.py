"""A small supervisor for ``smartroute up``: start children, restart the ones that crash,
stop them all on Ctrl-C or SIGTERM.

Production runs each part under its own process manager (systemd, Kubernetes,
Compose) with ``smartroute api|worker|beat``; this is for one laptop and one command.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from smartroute.infra.embedded import EmbeddedServices
from smartroute.infra.settings import Settings

log = logging.getLogger(__name__)

# A child that crashes more often than this is given up on, and the supervisor stops.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 15.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def add(self, name: str, argv: list[str]) -> None:
        self.children.append(Child(name, argv))

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        log.info("starting %s", child.name)
        child.process = subprocess.Popen(child.argv, env=self.env)

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame):
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)

    def watch(self) -> int:
        """Restart crashed children until asked to stop; returns the exit status."""
        status = 0
        while not self.stopping.wait(0.5):
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is None:
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
                if len(child.restarts) >= MAX_RESTARTS:
                    log.error("%s keeps exiting (last code %s); stopping", child.name, code)
                    self.stopping.set()
                    status = 1
                    break
                log.warning("%s exited with %s; restarting", child.name, code)
                child.restarts.append(now)
                self._spawn(child)
        self.stop()
        return status

    def stop(self) -> None:
        running = [
            (c.name, c.process) for c in self.children if c.process and c.process.poll() is None
        ]
        for _, process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for name, process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing it", name, STOP_GRACE_S)
                process.kill()
                process.wait()
        log.info("all processes stopped")


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module`` with this interpreter (the project's venv)."""
    return [sys.executable, "-m", module, *args]


READY_TIMEOUT_S = 60.0


def api_argv(host: str, port: int, processes: int, threads: int) -> list[str]:
    return python_module(
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(processes),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--graceful-timeout",
        "10",
        "--log-level",
        "warning",
        "--config",
        "python:web.gunicorn_conf",
        "web:create_app()",
    )


def worker_argv(concurrency: int, queues: str, name: str = "worker@%h") -> list[str]:
    return python_module(
        "celery",
        "-A",
        "workers.main",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--hostname",
        name,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    )


def relay_argv(host: str, port: int) -> list[str]:
    return python_module("smartroute.cli.relay", "--host", host, "--port", str(port))


def beat_argv(data_dir: Path) -> list[str]:
    return python_module(
        "celery",
        "-A",
        "workers.main",
        "beat",
        "--schedule",
        str((data_dir / "beat-schedule").resolve()),
        "--loglevel",
        "INFO",
    )


def fresh_metrics_dir(settings: Settings, name: str = "metrics") -> Path:
    """prometheus-client's multiprocess folder, emptied: files of dead runs would be summed."""
    import shutil

    path = (settings.data_dir / name).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def own_metrics_env(settings: Settings, component: str) -> dict[str, str]:
    """A fresh multiprocess folder for one component run on its own, unless the operator set
    PROMETHEUS_MULTIPROC_DIR (then it is theirs to empty). Without one, each gunicorn or pool
    process would answer a scrape with its own numbers alone. ``component`` names this run
    among others on the machine (a port, a node name): emptying a live sibling's folder
    would lose its numbers."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return {}
    name = "metrics-" + re.sub(r"[^A-Za-z0-9@._-]", "_", component)
    return {"PROMETHEUS_MULTIPROC_DIR": str(fresh_metrics_dir(settings, name))}


def wait_until_healthy(url: str, supervisor: Supervisor, metrics_token: str | None) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    headers = {"Authorization": f"Bearer {metrics_token}"} if metrics_token else {}
    while time.monotonic() < deadline and not supervisor.stopping.is_set():
        try:
            if requests.get(f"{url}/health", headers=headers, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        # The API has no readiness event to subscribe to; poll, bounded by the deadline.
        supervisor.stopping.wait(0.25)
    return False


def run(
    settings: Settings,
    services: EmbeddedServices,
    children: dict[str, list[str]],
    after_start: Callable[[Supervisor], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> int:
    """Supervise ``children`` until Ctrl-C or SIGTERM, then stop embedded services."""
    supervisor = Supervisor(settings.to_env() | (extra_env or {}))
    for name, argv in children.items():
        supervisor.add(name, argv)
    supervisor.install_signal_handlers()
    try:
        supervisor.start()
        if after_start is not None:
            after_start(supervisor)
        return supervisor.watch()
    finally:
        services.stop()
