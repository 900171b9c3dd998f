"""The fleet benchmark's pure parts: splitting drivers over processes, the ping schedule,
the random walk, sampling, reading a counter from /metrics, and the percentiles reported."""

from __future__ import annotations

import itertools
import random

import pytest

from smartroute_sim.fleet import (
    counter_value,
    next_ping_delay,
    per_second_series,
    ping_delays,
    processes_for,
    sample_share,
    split,
    walk,
)
from smartroute_sim.report import latency_summary


@pytest.mark.parametrize(
    ("drivers", "processes"), [(1, 1), (20, 1), (2500, 1), (2501, 2), (5000, 2), (5001, 3)]
)
def test_no_process_holds_more_than_its_share_of_clients(drivers, processes):
    assert processes_for(drivers) == processes
    assert max(len(part) for part in split(range(drivers), processes)) <= 2500


def test_split_keeps_every_driver_once_in_runs_of_nearly_equal_length():
    drivers = list(range(10))
    parts = split(drivers, 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert [d for p in parts for d in p] == drivers


def test_split_makes_no_empty_run_for_fewer_drivers_than_processes():
    assert split([7, 8], 5) == [[7], [8]]
    assert split([], 3) == [[]]


def test_a_ping_delay_stays_within_its_jitter_and_varies():
    rng = random.Random(3)
    delays = [next_ping_delay(4.0, 0.1, rng) for _ in range(1000)]
    assert min(delays) >= 3.6 and max(delays) <= 4.4
    # Not all in step: a fleet that connected together spreads out.
    assert max(delays) - min(delays) > 0.6


def test_a_drivers_pings_start_within_one_interval_and_keep_the_mean_interval():
    firsts, gaps = [], []
    for seed in range(200):
        delays = list(itertools.islice(ping_delays(4.0, 0.1, random.Random(seed)), 100))
        firsts.append(delays[0])
        gaps += delays[1:]
    assert min(firsts) >= 0 and max(firsts) < 4.0
    # The first pings are spread over the interval, not bunched at its start.
    assert sum(1 for f in firsts if f >= 2.0) > 60
    assert sum(gaps) / len(gaps) == pytest.approx(4.0, rel=0.01)
    assert min(gaps) >= 3.6 and max(gaps) <= 4.4


def test_a_walk_moves_a_little_each_step():
    rng = random.Random(1)
    start = {"lat": 38.7223, "lng": -9.1393}
    position = start
    for _ in range(100):
        after = walk(position, rng, step_km=0.05)
        # 0.05 km is about 0.00045 degrees of latitude, and 0.00058 of longitude here.
        assert abs(after["lat"] - position["lat"]) <= 0.00046
        assert abs(after["lng"] - position["lng"]) <= 0.00059
        position = after
    assert position != start


def test_a_walk_never_leaves_the_latitudes_the_index_takes():
    rng = random.Random(2)
    position = {"lat": 84.9999, "lng": 0.0}
    for _ in range(50):
        position = walk(position, rng, step_km=5)
        assert -85.0 <= position["lat"] <= 85.0


def test_samples_come_to_the_asked_rate_whatever_the_fleet():
    # 5,000 drivers every 4 s send 1,250 pings a second: 1 in 25 makes 50 a second.
    assert sample_share(5000, 4.0, per_s=50) == pytest.approx(0.04)
    assert sample_share(20, 4.0, per_s=50) == 1.0
    assert sample_share(0, 4.0) == 0.0


EXPOSITION = """\
# HELP smartroute_relay_locations_applied_total Drivers' positions the relay wrote to Redis.
# TYPE smartroute_relay_locations_applied_total counter
smartroute_relay_locations_applied_total 1234.0
smartroute_relay_locations_applied_created 1.7e9
smartroute_relay_locations_ignored_total{reason="coalesced"} 5.0
smartroute_relay_locations_ignored_total{reason="stale"} 2.0
"""


def test_a_counter_is_read_by_its_exact_name_and_summed_over_labels():
    assert counter_value(EXPOSITION, "smartroute_relay_locations_applied_total") == 1234.0
    assert counter_value(EXPOSITION, "smartroute_relay_locations_ignored_total") == 7.0
    assert counter_value(EXPOSITION, "smartroute_relay_locations_applied") is None
    assert counter_value(EXPOSITION, "smartroute_relay_location_pings_total") is None


def test_cumulative_readings_become_rates_between_readings():
    times, rates = per_second_series([(0.0, 0), (1.0, 100), (3.0, 500), (3.0, 500)])
    assert times == [1.0, 3.0]
    assert rates == [100.0, 200.0]


def test_percentiles_of_the_ping_to_index_delays():
    summary = latency_summary([float(ms) for ms in range(1, 101)])
    assert summary["n"] == 100
    assert summary["p50_ms"] == 50.5
    assert summary["p99_ms"] == 99.0
    assert summary["max_ms"] == 100.0
    assert latency_summary([])["p99_ms"] is None
