"""A small supervisor for ``smartroute up``: start children, restart the ones that crash,
stop them all on Ctrl-C or SIGTERM.

Production runs each part under its own process manager (systemd, Kubernetes,
Compose) with ``smartroute api|worker|beat``; this is for one laptop and one command.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

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
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing it", child.name, STOP_GRACE_S)
                child.process.kill()
                child.process.wait()
        log.info("all processes stopped")


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module`` with this interpreter (the project's venv)."""
    return [sys.executable, "-m", module, *args]
