"""The seeded city on a continuous clock, its batches timed by a window policy."""

from dataclasses import replace

from dispatch.matching.window import WindowPolicy
from smartroute_sim.replay import City, arrivals_s, batched, generate, replay_windowed
from tests.support import bench_matching

FIXED = WindowPolicy(max_s=1.0, min_s=1.0)
ADAPTIVE = WindowPolicy(max_s=1.0, min_s=0.02)
SHORT = City(seed=1, windows=40)


def test_arrivals_fall_inside_their_windows_and_leave_the_city_as_it_was():
    city = City(seed=3)
    drivers, rides = generate(city)
    arrivals = arrivals_s(city, rides)
    assert all(
        r.window * city.window_s <= a < (r.window + 1) * city.window_s
        for r, a in zip(rides, arrivals, strict=True)
    )
    assert arrivals == arrivals_s(city, rides)
    assert arrivals != arrivals_s(replace(city, seed=4), rides)
    # Drawing the offsets does not move the city's own draws.
    assert generate(city) == (drivers, rides)


def test_the_continuous_replay_is_the_same_for_the_same_seed():
    first, again = (replay_windowed(SHORT, batched(10), ADAPTIVE) for _ in range(2))
    assert first.pickup_etas_s == again.pickup_etas_s
    assert first.batch_waits_s == again.batch_waits_s
    assert first.windows_s == again.windows_s
    other = replay_windowed(replace(SHORT, seed=2), batched(10), ADAPTIVE)
    assert other.pickup_etas_s != first.pickup_etas_s


def test_a_fixed_window_batches_once_a_window_and_riders_keep_their_patience():
    outcome = replay_windowed(SHORT, batched(10), FIXED)
    patience_s = SHORT.max_wait_windows * SHORT.window_s
    assert set(outcome.windows_s) == {1.0}
    assert len(outcome.windows_s) == outcome.requested
    assert max(outcome.batch_waits_s) < patience_s
    assert max(outcome.pickup_etas_s) <= SHORT.max_pickup_eta_s
    # The run lasts until the last rider's patience is over, one batch a second at most.
    last_arrival = SHORT.windows * SHORT.window_s
    assert outcome.batches <= last_arrival + patience_s + 1


def test_at_low_load_the_adaptive_window_shrinks_to_its_minimum_and_riders_wait_less():
    quiet = replace(SHORT, riders_per_window=5)
    fixed = replay_windowed(quiet, batched(10), FIXED).summary()
    adaptive = replay_windowed(quiet, batched(10), ADAPTIVE).summary()
    assert adaptive["mean_window_s"] <= 1.5 * ADAPTIVE.min_s
    assert adaptive["mean_batch_wait_s"] < fixed["mean_batch_wait_s"] / 10
    # Drivers are plentiful: waiting longer would not have found better ones.
    assert adaptive["match_rate"] == fixed["match_rate"] == 1.0
    assert abs(adaptive["mean_pickup_eta_s"] / fixed["mean_pickup_eta_s"] - 1) < 0.02


def test_under_pressure_the_adaptive_window_grows_to_its_maximum():
    # A quarter of the fleet for the same riders: bookings outnumber free drivers.
    crowded = replace(SHORT, drivers=100)
    outcome = replay_windowed(crowded, batched(10), ADAPTIVE)
    assert outcome.summary()["mean_window_s"] >= 0.8 * ADAPTIVE.max_s
    # Once the city is busy, every rider arrives into the largest window.
    assert set(outcome.windows_s[len(outcome.windows_s) // 2 :]) == {ADAPTIVE.max_s}


def test_bench_matching_keeps_the_window_replays_figures_and_adds_the_window_modes():
    result = bench_matching(1)
    # The figures of the window-by-window replay, as they were before the continuous
    # clock existed (solve times vary from run to run, so they are left out).
    before = {
        "nearest": (509.04, 1096.46, 0.7287, 1335),
        "batched": (360.09, 924.11, 0.8182, 1499),
        "optimal": (358.02, 913.81, 0.8171, 1497),
    }
    for name, (mean, p95, rate, matched) in before.items():
        figures = result[name]
        assert (
            figures["mean_pickup_eta_s"],
            figures["p95_pickup_eta_s"],
            figures["match_rate"],
            figures["matched"],
            figures["requested"],
        ) == (mean, p95, rate, matched, 1832)
    for name in (
        "window_fixed_1s",
        "window_adaptive",
        "window_fixed_1s_low_load",
        "window_adaptive_low_load",
    ):
        assert set(result[name]) >= {
            "mean_pickup_eta_s",
            "p95_pickup_eta_s",
            "match_rate",
            "batches",
            "mean_batch_wait_s",
            "mean_window_s",
        }
    assert result["window_fixed_1s_low_load"]["requested"] < result["window_fixed_1s"]["requested"]
