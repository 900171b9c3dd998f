"""Regions: named bounding boxes that shard dispatch, one city at a time.

A booking belongs to the first region whose box holds its pickup, else to ``default``.
Each region's matching has its own queue (smartroute.infra.queues), so workers can be
pinned to regions (``smartroute worker -Q dispatch.lisbon``) and scaled apart, and a batch
never mixes two cities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REGION = "default"
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Region:
    name: str
    min_lat: float
    min_lng: float
    max_lat: float
    max_lng: float

    def contains(self, lat: float, lng: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lng <= lng <= self.max_lng


def parse_regions(spec: str) -> tuple[Region, ...]:
    """``"lisbon:38.6,-9.3,38.9,-9.0;porto:41.0,-8.8,41.3,-8.5"`` → regions, in that order."""
    regions = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, box = part.partition(":")
        name = name.strip()
        if not _NAME.fullmatch(name) or name == DEFAULT_REGION:
            raise ValueError(f"bad region name {name!r}: lower-case letters, digits, - and _")
        try:
            min_lat, min_lng, max_lat, max_lng = (float(v) for v in box.split(","))
        except ValueError:
            raise ValueError(f"region {name}: expected min_lat,min_lng,max_lat,max_lng") from None
        if not (-90 <= min_lat < max_lat <= 90 and -180 <= min_lng < max_lng <= 180):
            raise ValueError(f"region {name}: the box is empty or out of range")
        regions.append(Region(name, min_lat, min_lng, max_lat, max_lng))
    if len({r.name for r in regions}) != len(regions):
        raise ValueError("region names must be unique")
    return tuple(regions)


def region_for(lat: float, lng: float, regions: tuple[Region, ...]) -> str:
    """The name of the region a pickup belongs to."""
    return next((r.name for r in regions if r.contains(lat, lng)), DEFAULT_REGION)


def region_names(regions: tuple[Region, ...]) -> tuple[str, ...]:
    return (*(r.name for r in regions), DEFAULT_REGION)
