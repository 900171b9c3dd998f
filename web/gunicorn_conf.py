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
