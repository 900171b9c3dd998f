"""Regions: named bounding boxes that shard dispatch, one city at a time.

A booking belongs to the first region whose box holds its pickup, else to ``default``.
Each region's matching has its own queue (smartroute.infra.queues), so workers can be
pinned to regions (``smartroute worker -Q dispatch.lisbon``) and scaled apart, and a batch
never mixes two cities. Each region may have its own time zone (an IANA name), so its
"today" follows its own local day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


def parse_time_zones(spec: str, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``"lisbon:Europe/Lisbon;default:America/New_York"`` → (region, IANA zone) pairs.

    Each region's "today" starts at its own local midnight; a region left out keeps UTC.
    Every name must be a known region (``names``) and every zone one zoneinfo knows, so a
    typo fails at start-up rather than shifting a city's day without a word.
    """
    zones: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, zone = (v.strip() for v in part.partition(":"))
        if name not in names:
            raise ValueError(f"unknown region {name!r}; regions are {', '.join(names)}")
        if name in zones:
            raise ValueError(f"region {name} is given a time zone twice")
        time_zone(zone)
        zones[name] = zone
    return tuple(zones.items())


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError if zoneinfo does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Lisbon)"
        ) from None


def zone_of(region: str, zones: Mapping[str, str]) -> ZoneInfo:
    """A region's time zone: its own, else UTC."""
    return time_zone(zones.get(region, "UTC"))


def local_day_start(now: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The instant ``now``'s local day began in ``zone`` (midnight there), as an aware
    datetime; on a day a clock change skips midnight, the first instant of that day."""
    local = now.astimezone(zone)
    midnight = dt.datetime.combine(local.date(), dt.time(0), tzinfo=zone)
    # A midnight that does not exist (skipped by a clock change) normalises forward.
    return midnight.astimezone(dt.UTC).astimezone(zone)
