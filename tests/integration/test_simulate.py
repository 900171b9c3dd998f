"""``smartroute simulate`` against the integration stack: a short seeded city."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_bench_e2e import smartroute


@pytest.mark.slow
@pytest.mark.parametrize("actions_over", ["http", "relay"])
def test_simulate_runs_a_seeded_city_and_draws_its_chart(
    stack, admin, beat, tmp_path, actions_over
):
    # Seed 8 with these probabilities: of the 12 bookings, one is booked without a quote,
    # riders cancel three (one before a driver is assigned, two after one accepted), a
    # driver gives one ride back, one rider never comes, and both sides rate most of the
    # rest. The stack's no-show wait is a second and its cancel grace period none
    # (tests/integration/conftest.py), so the no-show and a cancel's fee come at once.
    chart = tmp_path / "city.png"
    out = smartroute(
        stack,
        "simulate",
        "--drivers",
        "8",
        "--rate",
        "2",
        "--duration",
        "6",
        "--seed",
        "8",
        "--speedup",
        "600",
        "--rider-cancels",
        "0.3",
        "--driver-cancels",
        "0.2",
        "--no-shows",
        "0.2",
        "--chart",
        str(chart),
        "--driver-actions",
        actions_over,
        "--json",
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["bookings"] == 12
    assert result["checked_by"] == "sql"
    assert result["lost"] == 0, json.dumps(result)
    assert result["double_assigned"] == 0, result
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # The figures read back from the database are what the simulated clients did.
    rides = result["rides"]
    assert rides["database"] == rides["simulated"], json.dumps(rides)
    figures, counts = rides["database"], result["counts"]
    assert 0 < figures["bookings_with_quote"] < result["bookings"]
    assert figures["quotes"] >= figures["bookings_with_quote"]
    assert figures["fares"]["count"] == result["by_status"]["completed"] > 0
    assert figures["fares"]["total"] > 0 and figures["fares"]["currency"]
    assert counts["rider_cancellations_before_assignment"] >= 1, counts
    assert counts["rider_cancellations_after_assignment"] >= 1, counts
    assert figures["rider_cancellations"]["count"] == result["by_status"]["cancelled"]
    assert figures["rider_cancellations"]["fees_charged"] >= 1
    assert figures["driver_cancellations"] >= 1
    assert figures["no_shows"]["count"] == result["by_status"]["no_show"] >= 1
    assert figures["no_shows"]["fees_charged"] == figures["no_shows"]["count"]
    # Every ride driven to its pickup arrived there first: completed, no-show, or a
    # rider's cancel after arrival (none here).
    assert figures["arrivals"] == figures["fares"]["count"] + figures["no_shows"]["count"]
    for side in ("rider", "driver"):
        rated = figures["ratings"][side]
        assert 0 < rated["count"] < figures["fares"]["count"], (side, rated)
        assert 0 < rated["with_comment"] < rated["count"], (side, rated)
        assert 1 <= rated["mean_stars"] <= 5
