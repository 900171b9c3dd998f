"""Great-circle geometry on a spherical Earth: good to ~0.5% for pickup distances."""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088
# A degree of latitude in km, to lay out grids and synthetic cities (a degree of longitude
# is this times the cosine of the latitude).
KM_PER_DEG_LAT = 111.32


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """The great-circle distance between two points, in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


Box = tuple[float, float, float, float]


def bounding_box(lat: float, lng: float, radius_km: float) -> Box | None:
    """(min_lat, max_lat, min_lng, max_lng) around a point, or None near a pole or the antimeridian.

    The box is a cheap index pre-filter; the exact distance decides. Where the box would
    wrap (poles, ±180°) the caller falls back to the distance alone.
    """
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    min_lat, max_lat = lat - dlat, lat + dlat
    if min_lat < -90 or max_lat > 90:
        return None
    dlng = math.degrees(radius_km / (EARTH_RADIUS_KM * math.cos(math.radians(lat))))
    min_lng, max_lng = lng - dlng, lng + dlng
    if min_lng < -180 or max_lng > 180:
        return None
    return min_lat, max_lat, min_lng, max_lng
