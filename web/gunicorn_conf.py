"""gunicorn settings that belong to the code rather than the command line."""

import os

from smartroute.infra.heap import freeze_loaded_objects
from smartroute.infra.settings import Settings

# Idle keep-alive connections stay open well past what clients and load balancers keep
# (60 s is common): a server that closes first races the client's next request on that
# connection, which then fails with "connection reset" (gunicorn's default is 2 s).
keepalive = 75

# The same limit the app's MAX_CONTENT_LENGTH enforces (read from the same environment).
_MAX_BODY_BYTES = Settings.from_env().max_body_bytes


def pre_request(worker, req) -> None:
    worker.log.debug("%s %s", req.method, req.path)
    # A body the app refuses with 413 is left unread on the socket. gunicorn then drains at
    # most 64 KiB of it for a few seconds and, failing that, closes a connection it has just
    # announced as keep-alive, so the client's next request on it fails. It ignores a
    # Connection header from the app, so the decision is made here, before the answer is
    # written: a declared length over the limit, or a chunked body (whose size nobody knows
    # until it is read), gets "Connection: close" and a lingering close.
    if _body_may_be_left_unread(req):
        req.must_close = True


def _body_may_be_left_unread(req) -> bool:
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING" and "chunked" in value.lower():
            return True
        if name == "CONTENT-LENGTH" and value.strip().isdigit() and int(value) > _MAX_BODY_BYTES:
            return True
    return False


def child_exit(_server, worker) -> None:
    # A dead worker's live gauges must stop counting (prometheus-client multiprocess mode).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:
    """A stopping worker closes its listening sockets as soon as it stops accepting.

    On SIGTERM the master closes its copy of the listening socket, but each worker holds
    another until it exits, which may be seconds later (it finishes its requests first).
    Meanwhile the kernel goes on completing new connections into a backlog nobody reads:
    their requests wait, then are reset when the worker exits. Closed at once, new
    connections are refused, and a client that knows another server goes there.
    """
    enable = worker.set_accept_enabled

    def set_accept_enabled(enabled: bool) -> None:
        enable(enabled)
        if not enabled and not worker.alive:
            for listener in worker.sockets:
                listener.close()

    worker.set_accept_enabled = set_accept_enabled
    # The app is loaded: keep its objects out of the collections that would pause requests.
    freeze_loaded_objects()
