import pytest

from dispatch.geo import bounding_box, haversine_km


def test_lisbon_to_porto_is_about_274_km():
    assert haversine_km(38.7223, -9.1393, 41.1579, -8.6291) == pytest.approx(274, abs=2)


def test_distance_is_symmetric_and_zero_on_the_spot():
    assert haversine_km(10, 20, 11, 21) == pytest.approx(haversine_km(11, 21, 10, 20))
    assert haversine_km(10, 20, 10, 20) == 0


@pytest.mark.parametrize("lat,lng", [(38.7, -9.1), (-33.9, 151.2), (64.1, -21.9)])
def test_box_contains_every_point_on_the_circle(lat, lng):
    min_lat, max_lat, min_lng, max_lng = bounding_box(lat, lng, 5.0)
    for dlat, dlng in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        # Walk outward until 5 km away, then check the box still holds the point.
        step = 0.0001
        p_lat, p_lng = lat, lng
        while haversine_km(lat, lng, p_lat, p_lng) < 5.0:
            p_lat, p_lng = p_lat + dlat * step, p_lng + dlng * step
        assert min_lat - step <= p_lat <= max_lat + step
        assert min_lng - step <= p_lng <= max_lng + step


def test_no_box_where_it_would_wrap():
    assert bounding_box(89.99, 0, 5) is None
    assert bounding_box(0, 179.99, 5) is None


def test_one_trips_eta_is_the_matrixs():
    import numpy as np

    from dispatch.eta import GreatCircleEta

    eta = GreatCircleEta(speed_kmh=30.0)
    a, b = (38.72, -9.14), (38.75, -9.15)
    assert eta.eta_s(*a, *b) == pytest.approx(eta.eta_matrix(np.array([a]), np.array([b]))[0, 0])
    assert eta.eta_s(*a, *a) == 0
