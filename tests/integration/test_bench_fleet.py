"""``smartroute bench fleet`` against the integration stack: a small fleet on real sockets,
pinging over the relay while riders book, as an operator would run it against an engine."""

from __future__ import annotations

import json

from tests.integration.test_bench_e2e import smartroute

DRIVERS = 20
RATE = 1
DURATION_S = 8


def test_bench_fleet_json_reports_pings_indexed_and_every_booking_done_once(stack, admin):
    out = smartroute(
        stack,
        "bench",
        "fleet",
        "--drivers",
        str(DRIVERS),
        "--ping-interval",
        "1",
        "--rate",
        str(RATE),
        "--duration",
        str(DURATION_S),
        "--drain",
        "30",
        "--connect-timeout",
        "60",
        "--json",
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    outcome = {
        k: result.get(k)
        for k in ("lost_bookings", "by_status", "errors", "connect_errors", "double_assigned")
    }
    assert result["drivers_online"] == DRIVERS, outcome
    assert result["fleet_connect_s"] > 0
    # Every driver pinged about once a second through the window, and the relay wrote
    # positions to Redis meanwhile (its own counter, read from its /metrics).
    assert result["pings_sent_in_window"] > DRIVERS * (DURATION_S / 2)
    assert result["pings_sent"] >= result["pings_sent_in_window"]
    assert result["pings_indexed_per_s"] > 0
    assert result["ping_errors"] == 0
    # Sampled pings were read back from the index: each became visible, in well under the
    # time a ping lives.
    assert result["ping_to_index_samples"] > 0
    assert result["ping_samples_unseen"] == 0
    assert 0 < result["ping_to_index_p50_ms"] <= result["ping_to_index_p99_ms"] < 30_000
    assert result["engine_cpu_ms_per_ping"] > 0
    assert result["relay_rss_mb"] > 0 and result["relay_kb_per_driver"] is not None
    # The bookings: all made, each offered to one driver, who took it through its ride over
    # the socket, as the database shows.
    assert result["bookings"] == RATE * DURATION_S
    assert result["checked_by"] == "sql"
    assert result["lost"] == 0, outcome
    assert result["double_assigned"] == 0, outcome
    assert result["by_status"] == {"completed": RATE * DURATION_S}, outcome
    assert result["push_p99_ms"] is not None and result["accept_p99_ms"] is not None
