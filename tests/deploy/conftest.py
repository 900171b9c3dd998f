"""A live engine for the observability tests: the API, a worker node serving its own
/metrics, and the relay, each with a multiprocess folder of its own as in separate
containers, all asking for the metrics token."""

from __future__ import annotations

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures the live tests use
    METRICS_TOKEN,
    STACK_TUNING,
    Stack,
    admin,
    listeners,
)
from tests.support import free_port

AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


class ObservedStack(Stack):
    def __init__(self, settings, tmp_path_factory):
        self.worker_metrics_port = free_port()
        self.worker_metrics_url = f"http://127.0.0.1:{self.worker_metrics_port}"
        self.folders = {}
        self.tmp = tmp_path_factory
        super().__init__(
            settings,
            tmp_path_factory,
            worker_processes=2,
            worker_name="obs",
            tuning={
                **STACK_TUNING,
                "SMARTROUTE_METRICS_TOKEN": METRICS_TOKEN,
                "SMARTROUTE_WORKER_METRICS_PORT": str(self.worker_metrics_port),
            },
        )

    def _spawn(self, name, argv):
        folder = self.folders[name] = self.tmp.mktemp(f"metrics-{name}")
        shared, self.env = self.env, {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        try:
            return super()._spawn(name, argv)
        finally:
            self.env = shared


@pytest.fixture(scope="package")
def stack(settings, tmp_path_factory):
    stack = ObservedStack(settings, tmp_path_factory)
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()
