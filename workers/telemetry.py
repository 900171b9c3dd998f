"""Task metrics from Celery's own signals: run time, outcomes and failures per task."""

from __future__ import annotations

import os
import time

from celery.signals import task_failure, task_postrun, task_prerun, worker_process_shutdown

from smartroute.infra.metrics import TASK_DURATION, TASK_FAILURES, TASKS

_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id=None, **_kwargs) -> None:
    _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_kwargs) -> None:
    started = _started.pop(task_id, None)
    name = task.name.rsplit(".", 1)[-1] if task else "unknown"
    if started is not None:
        TASK_DURATION.labels(name).observe(time.perf_counter() - started)
    TASKS.labels(name, (state or "unknown").lower()).inc()


@task_failure.connect
def _task_failed(sender=None, **_kwargs) -> None:
    TASK_FAILURES.labels(sender.name.rsplit(".", 1)[-1] if sender else "unknown").inc()


@worker_process_shutdown.connect
def _process_gone(pid=None, **_kwargs) -> None:
    # This process's live gauges (pool connections) must stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
