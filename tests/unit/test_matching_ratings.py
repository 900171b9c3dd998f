"""The batch solver weighs drivers' ratings only when asked, and by a bounded amount."""

import pytest

from dispatch.eta import GreatCircleEta
from dispatch.matching.solver import UNRATED_AS, FreeDriver, Request, solve_batch

COST = GreatCircleEta(speed_kmh=36.0, road_factor=1.0)  # 10 m/s: 1 km is 100 s.
KM = 1 / 111.32  # About a kilometre of latitude, in degrees.
RIDER = [Request(1, 0.0, 0.0)]


def _chosen(drivers, weight_s: float = 0.0):
    [assignment] = solve_batch(RIDER, drivers, COST, rating_weight_s=weight_s).assignments
    return assignment


def test_off_by_default_the_nearest_driver_is_chosen_whatever_its_rating():
    drivers = [FreeDriver(1, 1.0 * KM, 0.0, rating=2.0), FreeDriver(2, 1.2 * KM, 0.0, rating=5.0)]
    assert _chosen(drivers).driver_id == 1


def test_with_a_weight_a_better_rated_driver_a_little_farther_is_chosen():
    # Driver 1: 100 s away, 2 stars, so 120 * 3/4 = 90 s more; driver 2: 120 s, 5 stars.
    drivers = [FreeDriver(1, 1.0 * KM, 0.0, rating=2.0), FreeDriver(2, 1.2 * KM, 0.0, rating=5.0)]
    chosen = _chosen(drivers, weight_s=120)
    assert chosen.driver_id == 2
    assert chosen.eta_s == pytest.approx(120, rel=0.01)  # The real ETA, not the weighed cost.


def test_the_weight_is_bounded_a_far_better_driver_does_not_win():
    # Driver 1 is a 1-star driver at 100 s; driver 2 a 5-star one at 300 s: 100 + 120 < 300.
    drivers = [FreeDriver(1, 1.0 * KM, 0.0, rating=1.0), FreeDriver(2, 3.0 * KM, 0.0, rating=5.0)]
    assert _chosen(drivers, weight_s=120).driver_id == 1


def test_an_unrated_driver_counts_as_fairly_but_not_best_rated():
    assert UNRATED_AS == 4.5
    # Unrated at 100 s costs 100 * 0.5/4 = 12.5 s more: a 5-star driver at 105 s wins...
    drivers = [FreeDriver(1, 1.0 * KM, 0.0), FreeDriver(2, 1.05 * KM, 0.0, rating=5.0)]
    assert _chosen(drivers, weight_s=100).driver_id == 2
    assert _chosen(drivers).driver_id == 1
    # ...and against a 3-star driver equally near, the unrated one does.
    drivers = [FreeDriver(1, 1.0 * KM, 0.0), FreeDriver(2, 1.0 * KM, 0.0, rating=3.0)]
    assert _chosen(drivers, weight_s=100).driver_id == 1
