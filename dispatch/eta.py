"""How long a driver takes to reach a pickup: the cost every matcher minimises.

``CostModel`` is the seam for a routing engine (OSRM, Valhalla): anything that turns
origins and destinations into a matrix of seconds can stand in for the great-circle
estimate here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dispatch.geo import EARTH_RADIUS_KM, haversine_km


class CostModel(Protocol):
    def eta_matrix(self, origins: np.ndarray, destinations: np.ndarray) -> np.ndarray:
        """Seconds from each origin (rows) to each destination (columns); points as (lat, lng)."""


def haversine_matrix_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distances in km between every point of ``a`` (n×2) and ``b`` (m×2)."""
    lat1, lng1 = np.radians(a[:, 0])[:, None], np.radians(a[:, 1])[:, None]
    lat2, lng2 = np.radians(b[:, 0])[None, :], np.radians(b[:, 1])[None, :]
    dlat, dlng = (lat2 - lat1) / 2, (lng2 - lng1) / 2
    h = np.sin(dlat) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlng) ** 2
    distance: np.ndarray = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    return distance


@dataclass(frozen=True)
class GreatCircleEta:
    """Great-circle distance stretched by a road factor, driven at a steady city speed."""

    speed_kmh: float = 25.0
    road_factor: float = 1.35

    def eta_matrix(self, origins: np.ndarray, destinations: np.ndarray) -> np.ndarray:
        km = haversine_matrix_km(origins, destinations) * self.road_factor
        return km / self.speed_kmh * 3600.0

    def eta_s(self, lat1: float, lng1: float, lat2: float, lng2: float) -> float:
        """One trip's ETA, as ``eta_matrix`` would give it."""
        return haversine_km(lat1, lng1, lat2, lng2) * self.road_factor / self.speed_kmh * 3600.0
