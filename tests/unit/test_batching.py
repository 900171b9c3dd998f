import pytest

from dispatch.eta import GreatCircleEta, haversine_matrix_km
from dispatch.geo import haversine_km
from dispatch.matching.solver import FreeDriver, Request, nearest_first, solve_batch
from smartroute_sim.replay import City, batched, generate, nearest, replay
from tests.support import bench_matching

COST = GreatCircleEta(speed_kmh=36.0, road_factor=1.0)  # 10 m/s: 1 km is 100 s.
KM = 1 / 111.32  # About a kilometre of latitude, in degrees.


def test_eta_matrix_matches_the_scalar_haversine():
    import numpy as np

    a, b = np.array([[38.7, -9.1], [41.1, -8.6]]), np.array([[38.72, -9.14]])
    assert haversine_matrix_km(a, b)[1, 0] == pytest.approx(haversine_km(41.1, -8.6, 38.72, -9.14))
    assert COST.eta_matrix(a, a)[0, 0] == 0


def test_the_batch_beats_nearest_first_where_greed_strands_a_rider():
    # Driver 1 sits between the riders; driver 2 is just beyond rider A. Nearest-first gives
    # A driver 1, leaving B with a long drive; the batch gives A driver 2 and B driver 1.
    requests = [Request(10, 0.0, 0.0), Request(11, 2 * KM, 0.0)]
    drivers = [FreeDriver(1, 1 * KM, 0.0), FreeDriver(2, -1.1 * KM, 0.0)]
    greedy = {a.booking_id: a.driver_id for a in nearest_first(requests, drivers, COST).assignments}
    solved = solve_batch(requests, drivers, COST)
    assert greedy == {10: 1, 11: 2}
    assert {a.booking_id: a.driver_id for a in solved.assignments} == {10: 2, 11: 1}
    assert sum(a.eta_s for a in solved.assignments) == pytest.approx(210, rel=0.01)


def test_pairs_beyond_the_eta_limit_are_never_made():
    solved = solve_batch([Request(1, 0.0, 0.0)], [FreeDriver(7, 5 * KM, 0.0)], COST, max_eta_s=300)
    assert solved.assignments == [] and solved.candidates == {1: []}


def test_more_bookings_than_drivers_leaves_the_farthest_unmatched():
    requests = [Request(1, 0.0, 0.0), Request(2, 3 * KM, 0.0)]
    solved = solve_batch(requests, [FreeDriver(5, 0.1 * KM, 0.0)], COST)
    assert [(a.booking_id, a.driver_id) for a in solved.assignments] == [(1, 5)]


def test_among_equals_the_longest_idle_driver_is_chosen():
    drivers = [FreeDriver(1, KM, 0.0, idle_s=5), FreeDriver(2, -KM, 0.0, idle_s=600)]
    solved = solve_batch([Request(1, 0.0, 0.0)], drivers, COST)
    assert solved.assignments[0].driver_id == 2


def test_candidates_for_the_log_are_listed_nearest_first_and_only_if_eligible():
    drivers = [FreeDriver(i, i * KM, 0.0) for i in (3, 1, 5, 2, 4)]
    solved = solve_batch([Request(1, 0.0, 0.0)], drivers, COST, k=2, max_eta_s=450)
    assert [c.driver_id for c in solved.candidates[1]] == [1, 2, 3, 4]


def test_the_city_is_the_same_for_the_same_seed_and_batching_wins_there():
    assert generate(City(seed=3)) == generate(City(seed=3))
    assert generate(City(seed=3)) != generate(City(seed=4))
    city = City(seed=1, windows=40)
    greedy, solved, best = (
        replay(city, m).summary() for m in (nearest, batched(10), batched(None))
    )
    assert solved["mean_pickup_eta_s"] < 0.85 * greedy["mean_pickup_eta_s"]
    assert solved["mean_pickup_eta_s"] <= 1.01 * best["mean_pickup_eta_s"]


def test_bench_matching_prints_the_three_matchers_as_json():
    result = bench_matching(2)
    for name in ("nearest", "batched", "optimal"):
        assert set(result[name]) >= {
            "mean_pickup_eta_s",
            "p95_pickup_eta_s",
            "match_rate",
            "solve_time_s",
        }
    assert result["solve_1000x1000_s"] > 0


def test_bookings_beyond_k_are_not_stranded_while_drivers_are_free():
    # Five riders at one spot, five drivers in a row: with k=2 every rider's nearest two
    # are the same two drivers, yet all five are matched over successive rounds.
    requests = [Request(i, 0.0, 0.0) for i in range(5)]
    drivers = [FreeDriver(10 + i, (i + 1) * KM, 0.0) for i in range(5)]
    solved = solve_batch(requests, drivers, COST, k=2)
    assert sorted(a.driver_id for a in solved.assignments) == [10, 11, 12, 13, 14]
