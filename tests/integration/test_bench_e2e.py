"""``smartroute bench e2e`` against the integration stack: a short, bounded run, as an
operator would start it against a running engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import STACK_TUNING

KEYS = (
    "rate_offered",
    "rate_sustained",
    "celery_noop_ceiling",
    "ratio",
    "accept_p99_ms",
    "assign_p99_ms",
    "push_p99_ms",
    "lost",
    "double_assigned",
    "max_rss_mb",
)


def smartroute(stack, *args: str, timeout: float) -> subprocess.CompletedProcess:
    # The stack's own settings (services, batch window) so the run checks its database.
    env = {**os.environ, **stack.settings.to_env(), **STACK_TUNING}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "smartroute",
            *args,
            "--api",
            stack.url,
            "--relay",
            stack.relay_url,
            "--token",
            stack.settings.admin_token,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_bench_e2e_json_reports_every_booking_done_once(stack, admin):
    out = smartroute(
        stack,
        "bench",
        "e2e",
        "--rate",
        "5",
        "--duration",
        "3",
        "--drain",
        "30",
        "--ceiling-tasks",
        "300",
        "--json",
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert set(KEYS) <= set(result)
    assert result["bookings"] == 15
    assert result["checked_by"] == "sql"
    outcome = {
        k: result.get(k)
        for k in (
            "missing",
            "unfinished",
            "lost_bookings",
            "by_status",
            "errors",
            "double_assigned",
        )
    }
    assert result["lost"] == 0, outcome
    assert result["double_assigned"] == 0, outcome
    assert result["by_status"] == {"completed": 15}, outcome
    # Every booking reached its driver's client, so each latency has a value.
    assert result["push_p99_ms"] is not None and result["assign_p99_ms"] is not None
    assert result["celery_noop_ceiling"] > 0 and result["ratio"] > 0
    assert result["http_noop_ceiling"] > 0
    # Booked over HTTP (pings on top); accepted, started and completed over the relay.
    assert result["driver_actions_over"] == "relay"
    assert result["relay_actions_per_booking"] == 3
    assert result["requests_per_booking"] >= 1
    assert "relay_action_fallbacks" not in result["errors"]
    assert result["worker_concurrency"] == 4
    assert result["max_rss_mb"] > 0
