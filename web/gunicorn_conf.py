"""gunicorn settings that belong to the code rather than the command line."""

import os

# Idle keep-alive connections stay open well past what clients and load balancers keep
# (60 s is common): a server that closes first races the client's next request on that
# connection, which then fails with "connection reset" (gunicorn's default is 2 s).
keepalive = 75


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
