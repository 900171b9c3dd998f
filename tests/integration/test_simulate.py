"""``smartroute simulate`` against the integration stack: a short seeded city."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_bench_e2e import smartroute


@pytest.mark.slow
def test_simulate_runs_a_seeded_city_and_draws_its_chart(stack, admin, beat, tmp_path):
    # Seed 3 has drivers ignore two offers: beat lapses them after the offer window and
    # they go to other drivers, so every booking still completes. Drivers act over HTTP here;
    # tests/integration/test_bench_e2e.py has them act over the relay.
    chart = tmp_path / "city.png"
    out = smartroute(
        stack,
        "simulate",
        "--drivers",
        "8",
        "--rate",
        "2",
        "--duration",
        "4",
        "--seed",
        "3",
        "--speedup",
        "600",
        "--chart",
        str(chart),
        "--driver-actions",
        "http",
        "--json",
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["bookings"] == 8
    assert result["lost"] == 0, json.dumps(result)
    assert result["double_assigned"] == 0, result
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert result["counts"]["ignored"] >= 1
    assert result["latency"]["push"]["n"] >= 8 + result["counts"]["ignored"]
