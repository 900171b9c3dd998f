"""``/metrics`` of a worker node, served by the Celery worker's main process.

The pool's prefork children run the tasks and write their numbers (task rate, run time,
failures, matching outcomes, pushes) to prometheus-client's multiprocess folder; the main
process adds them up on every scrape, with each queue's depth read from the broker. It
runs only when ``SMARTROUTE_WORKER_METRICS_PORT`` is set, on
``SMARTROUTE_WORKER_METRICS_HOST`` (127.0.0.1 unless told otherwise: Compose sets 0.0.0.0).

Like the API's ``/metrics`` it asks for ``Authorization: Bearer <SMARTROUTE_METRICS_TOKEN>``
and refuses everyone with 401 when no token is configured. prometheus-client's
``start_http_server`` cannot check a header, so this builds the same server from the same
parts (its WSGI app, threaded ``wsgiref`` server and daemon thread) with the check in front.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from celery.signals import worker_init, worker_shutdown
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from smartroute.infra.metrics import multiprocess_dir, scrape_allowed
from smartroute.infra.queues import queue_depths
from smartroute.infra.settings import Settings

log = logging.getLogger(__name__)


class QueueDepthCollector:
    """``smartroute_queue_depth`` per queue, read from the broker at scrape time."""

    def __init__(self, celery, queues: tuple[str, ...]) -> None:
        self.celery = celery
        self.queues = queues

    def collect(self):
        depth = GaugeMetricFamily(
            "smartroute_queue_depth", "Messages waiting per Celery queue.", labels=["queue"]
        )
        try:
            for queue, count in queue_depths(self.celery, self.queues).items():
                depth.add_metric([queue], count)
        except Exception as exc:  # The broker being down must not break the scrape.
            log.warning("queue depth unavailable: %s", exc.__class__.__name__)
        yield depth


class DeadChildren:
    """Forgets the live gauges of pool processes that are gone, before each scrape.

    A child that exits normally marks itself dead (workers.telemetry), but one killed by
    the hard time limit or the OOM killer cannot, and its checked-out database connections
    would count forever. gunicorn's child_exit does this for the API; Celery has no such
    hook, so the scrape looks for files of processes that no longer exist. Yields nothing."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def collect(self):
        for path in self.folder.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            if not _alive(pid):
                multiprocess.mark_process_dead(pid, str(self.folder))
        return iter(())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Someone else's process: alive.
        return True
    return True


def registry(celery, queues: tuple[str, ...]) -> CollectorRegistry:
    """Every pool process's metrics summed (or this process's alone without a multiprocess
    folder), and the queues' depths."""
    combined = CollectorRegistry()
    if folder := multiprocess_dir():
        # Registered first: collectors are read in order, so the sums skip the dead.
        combined.register(DeadChildren(folder))
        multiprocess.MultiProcessCollector(combined)
    else:
        combined.register(_Own())
    combined.register(QueueDepthCollector(celery, queues))
    return combined


class _Own:
    """This process's default registry as one collector of ``registry``."""

    def collect(self):
        return REGISTRY.collect()


def guarded(app, metrics_token: str | None):
    """``app`` behind the metrics token: 401 (and no metrics) without it."""

    def guarded_app(environ, start_response):
        if not scrape_allowed(metrics_token, environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", 'Bearer realm="metrics"'),
                ],
            )
            return [
                b'{"error": {"code": "unauthorized", "message": '
                b'"/metrics needs Authorization: Bearer <SMARTROUTE_METRICS_TOKEN>"}}'
            ]
        return app(environ, start_response)

    return guarded_app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name.
        """Scrapes every few seconds would drown the worker's own log."""


def serve(celery, settings: Settings) -> ThreadingWSGIServer:
    """Serve ``/metrics`` on the configured host and port from a daemon thread."""
    port = settings.worker_metrics_port
    if port is None:
        raise ValueError("no SMARTROUTE_WORKER_METRICS_PORT to serve /metrics on")
    app = guarded(make_wsgi_app(registry(celery, settings.queues)), settings.metrics_token)
    server = make_server(
        settings.worker_metrics_host, port, app, ThreadingWSGIServer, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server


_server: list[ThreadingWSGIServer] = []


@worker_init.connect
def _start(sender=None, **_kwargs) -> None:
    # worker_init is sent in the worker's main process only, before the pool starts.
    settings = Settings.from_env()
    if settings.worker_metrics_port is None:
        return
    if not multiprocess_dir():
        log.warning(
            "PROMETHEUS_MULTIPROC_DIR is unset: /metrics shows the main process only, "
            "not the pool's tasks (smartroute worker sets it)"
        )
    if not settings.metrics_token:
        log.warning("SMARTROUTE_METRICS_TOKEN is unset: /metrics refuses every scrape")
    _server.append(serve(sender.app, settings))
    log.info(
        "worker metrics on %s:%s/metrics",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )


@worker_shutdown.connect
def _stop(**_kwargs) -> None:
    while _server:
        _server.pop().shutdown()
