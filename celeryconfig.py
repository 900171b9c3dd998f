"""Celery settings, and only those. Broker URL and beat schedule come from SmartRoute's settings.

Each choice below answers a known trap of Celery on Redis, named in the comment above it.
"""

# JSON only: a message is data, never code (no pickle anywhere).
accept_content = ["json"]
task_serializer = "json"
result_serializer = "json"

# Results live in Postgres rows; nobody reads Celery's.
task_ignore_result = True

# A task is acknowledged when it finishes, and requeued if its process dies mid-way
# (SIGKILL, OOM). Every task is idempotent and re-reads its row, so a rerun is harmless.
task_acks_late = True
task_reject_on_worker_lost = True
# A process reserves only the message it runs, so a killed process strands nothing else.
worker_prefetch_multiplier = 1

# Redis redelivers an unacknowledged message after the visibility timeout, even one still
# running: the time limits stay far below it.
task_soft_time_limit = 30
task_time_limit = 60
broker_transport_options = {"visibility_timeout": 300}

broker_connection_retry_on_startup = True
# Otherwise a task in flight when the broker connection drops can run twice.
worker_cancel_long_running_tasks_on_connection_loss = True
# Publishing from the API gives up quickly; the sweeper re-enqueues what was not sent.
broker_connection_timeout = 2

# Matching goes to one queue per region, dispatch.<region>, named when each message is sent
# (smartroute.infra.enqueue); the rest is routed here.
task_default_queue = "dispatch.default"
task_routes = {
    "workers.tasks.lapse_offers": {"queue": "maintenance"},
    "workers.tasks.redispatch_pending": {"queue": "maintenance"},
    "workers.tasks.expire_bookings": {"queue": "maintenance"},
    "workers.tasks.mark_drivers_offline": {"queue": "maintenance"},
    "workers.tasks.recover_stuck_rides": {"queue": "maintenance"},
    "workers.tasks.refresh_stats": {"queue": "maintenance"},
    "workers.tasks.refresh_health": {"queue": "maintenance"},
    "workers.tasks.publish_outbox": {"queue": "notify"},
    "workers.tasks.prune_idempotency_keys": {"queue": "maintenance"},
    "workers.tasks.prune_access_tokens": {"queue": "maintenance"},
    "workers.tasks.suggest_repositioning": {"queue": "maintenance"},
}

timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False
