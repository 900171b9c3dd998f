"""gunicorn settings that belong to the code rather than the command line."""

import os


def child_exit(_server, worker) -> None:
    # A dead worker's live gauges must stop counting (prometheus-client multiprocess mode).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
