"""Fare arithmetic, the final-fare policy, tariffs, surge steps and region time zones:
integers only, checked without services."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from dispatch import fares
from dispatch.eta import GreatCircleEta
from dispatch.fares import Route, Tariff, final_amount, parse_tariffs, price, tariff_for
from dispatch.regions import local_day_start, parse_time_zones
from dispatch.surge import SurgePolicy
from smartroute.infra.settings import ConfigError, Settings

TARIFF = Tariff("EUR", base=250, per_km=110, per_minute=25, minimum=500, cancellation_fee=300,
                no_show_fee=500)  # fmt: skip


def test_a_fare_is_base_plus_distance_plus_time_in_minor_units():
    fare = price(TARIFF, Route(distance_m=10_000, duration_s=1200))
    # 10 km at 1.10 and 20 minutes at 0.25: 2.50 + 11.00 + 5.00.
    assert (fare.base, fare.distance, fare.time, fare.amount) == (250, 1100, 500, 1850)
    assert all(isinstance(v, int) for v in (fare.base, fare.distance, fare.time, fare.amount))
    assert fare.as_payload()["surge_multiplier"] == 1.0


def test_parts_of_a_cent_round_half_up():
    # 1 m at 110 cents a km is 0.11 cents; 5 m is 0.55 cents → 1; 4 m is 0.44 → 0.
    assert price(TARIFF, Route(5, 0)).distance == 1
    assert price(TARIFF, Route(4, 0)).distance == 0
    # 30 s at 25 cents a minute is 12.5 cents → 13.
    assert price(TARIFF, Route(0, 30)).time == 13


def test_a_short_trip_pays_the_minimum_and_surge_multiplies_it():
    short = price(TARIFF, Route(500, 60))
    assert short.amount == TARIFF.minimum
    surged = price(TARIFF, Route(500, 60), surge_pct=150)
    assert surged.amount == 750 and surged.as_payload()["surge_multiplier"] == 1.5
    with pytest.raises(ValueError):
        price(TARIFF, Route(500, 60), surge_pct=90)


@pytest.mark.parametrize(
    ("quoted", "measured", "paid"),
    [
        (1000, 600, 1000),  # shorter than estimated: the quote stands
        (1000, 1000, 1000),
        (1000, 1200, 1000),  # within the 20 % tolerance: the quote stands
        (1000, 1201, 1201),  # beyond it: the measured fare
        (1000, 1400, 1400),
        (1000, 5000, 1500),  # capped at 150 % of the quote
    ],
)
def test_the_final_fare_policy(quoted, measured, paid):
    assert final_amount(quoted, measured) == paid


def test_the_route_is_the_eta_models_road_distance_and_time():
    eta = GreatCircleEta(speed_kmh=30.0, road_factor=1.5)
    route = fares.estimate_route(eta, (38.70, -9.14), (38.79, -9.14))  # ~10 km north
    assert 14_900 < route.distance_m < 15_100  # 10 km × 1.5
    assert abs(route.duration_s - route.distance_m / 1000 / 30 * 3600) <= 1


def test_tariffs_parse_per_region_and_unknown_regions_pay_the_default():
    tariffs = dict(
        parse_tariffs(
            "default:EUR,100,100,10,300,200,400; lisbon:EUR,300,120,30,600,300,500",
            ("lisbon", "default"),
        )
    )
    assert tariffs["lisbon"] == Tariff("EUR", 300, 120, 30, 600, 300, 500)
    assert tariff_for("porto", tariffs) == tariffs["default"]
    assert tariff_for("default", {}) == fares.DEFAULT_TARIFF


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("atlantis:EUR,1,1,1,1,1,1", "unknown region"),
        ("default:EUR,1,1,1", "expected currency"),
        ("default:EUR,1.5,1,1,1,1,1", "whole minor units"),
        ("default:eur,1,1,1,1,1,1", "three capital letters"),
        ("default:EUR,-1,1,1,1,1,1", "at least 0"),
        ("default:EUR,1,1,1,1,1,1;default:EUR,1,1,1,1,1,1", "twice"),
    ],
)
def test_bad_tariffs_are_refused_with_a_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_tariffs(spec, ("default",))


def test_the_fee_functions_read_the_tariff():
    assert fares.cancellation_fee(TARIFF).as_payload() == {"amount": 300, "currency": "EUR"}
    assert fares.no_show_fee(TARIFF).as_payload() == {"amount": 500, "currency": "EUR"}


def test_surge_targets_demand_over_supply_within_the_cap():
    policy = SurgePolicy(cap_pct=250, smoothing_pct=50)
    assert policy.target_pct(demand=3, supply=5) == 100
    assert policy.target_pct(demand=3, supply=2) == 150
    assert policy.target_pct(demand=20, supply=2) == 250
    assert policy.target_pct(demand=1, supply=0) == 250
    assert policy.target_pct(demand=0, supply=0) == 100


def test_surge_moves_part_of_the_way_in_steps_and_settles():
    policy = SurgePolicy(cap_pct=300, smoothing_pct=50)
    assert policy.next_pct(100, 200) == 150
    assert policy.next_pct(150, 200) == 175
    levels = [100]
    for _ in range(10):
        levels.append(policy.next_pct(levels[-1], 200))
    assert levels[-1] == 200 and levels == sorted(levels)
    assert all(level % 5 == 0 for level in levels)
    assert policy.next_pct(200, 100) == 150  # and back down as demand falls
    assert policy.next_pct(105, 100) == 100


def test_time_zones_parse_and_days_start_at_local_midnight():
    zones = dict(parse_time_zones("lisbon:Europe/Lisbon;default:Asia/Tokyo", ("lisbon", "default")))
    assert zones == {"lisbon": "Europe/Lisbon", "default": "Asia/Tokyo"}
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_time_zones("lisbon:Europe/Atlantis", ("lisbon", "default"))
    with pytest.raises(ValueError, match="unknown region"):
        parse_time_zones("porto:Europe/Lisbon", ("lisbon", "default"))
    # 23:30 UTC on 30 June is already 1 July in Tokyo, still 30 June (00:30 BST) in Lisbon.
    now = dt.datetime(2026, 6, 30, 23, 30, tzinfo=dt.UTC)
    tokyo = local_day_start(now, ZoneInfo("Asia/Tokyo"))
    assert tokyo == dt.datetime(2026, 6, 30, 15, 0, tzinfo=dt.UTC)
    lisbon = local_day_start(now, ZoneInfo("Europe/Lisbon"))
    assert lisbon == dt.datetime(2026, 6, 30, 23, 0, tzinfo=dt.UTC)


def test_settings_read_the_pricing_variables():
    settings = Settings.from_env(
        {
            "SMARTROUTE_REGIONS": "lisbon:38.6,-9.3,38.9,-9.0",
            "SMARTROUTE_TARIFFS": "lisbon:EUR,300,120,30,600,300,500",
            "SMARTROUTE_REGION_TIME_ZONES": "lisbon:Europe/Lisbon",
            "SMARTROUTE_SURGE_CAP": "2.5",
            "SMARTROUTE_SURGE_SMOOTHING": "0.25",
            "SMARTROUTE_QUOTE_TTL_S": "120",
        }
    )
    assert dict(settings.tariffs)["lisbon"].base == 300
    assert settings.region_time_zones == (("lisbon", "Europe/Lisbon"),)
    assert (settings.surge_cap_pct, settings.surge_smoothing_pct) == (250, 25)
    assert settings.quote_ttl_s == 120
    defaults = Settings.from_env({})
    assert defaults.tariffs == () and defaults.surge_cap_pct == 300
    for name, value in (
        ("SMARTROUTE_TARIFFS", "default:EUR,1"),
        ("SMARTROUTE_REGION_TIME_ZONES", "default:Mars/Olympus"),
        ("SMARTROUTE_SURGE_CAP", "0.5"),
        ("SMARTROUTE_SURGE_SMOOTHING", "2"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
