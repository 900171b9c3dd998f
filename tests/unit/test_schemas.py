import datetime as dt
import json

import pytest
from pydantic import ValidationError

from web.schemas import BookingQuery, NewBooking, decode_cursor, encode_cursor

GOOD = {"pickup": {"lat": 38.7, "lng": -9.1}, "dropoff": {"lat": 38.8, "lng": -9.2}}


def _fields(body) -> set[str]:
    with pytest.raises(ValidationError) as info:
        NewBooking.model_validate_json(body if isinstance(body, str) else json.dumps(body))
    return {".".join(map(str, e["loc"])) for e in info.value.errors()}


def test_a_good_booking_parses_with_integer_coordinates():
    booking = NewBooking.model_validate({**GOOD, "pickup": {"lat": 38, "lng": -9}})
    assert booking.pickup.lat == 38.0 and booking.pickup_at is None


@pytest.mark.parametrize(
    "body,field",
    [
        ({**GOOD, "pickup": {"lat": "38.7", "lng": -9.1}}, "pickup.lat"),
        ({**GOOD, "pickup": {"lat": 91, "lng": -9.1}}, "pickup.lat"),
        ({**GOOD, "dropoff": {"lat": 38.8, "lng": 180.5}}, "dropoff.lng"),
        ({**GOOD, "pickup": {"lat": True, "lng": -9.1}}, "pickup.lat"),
        ({"pickup": GOOD["pickup"]}, "dropoff"),
        ({**GOOD, "tip": 5}, "tip"),
        ({**GOOD, "pickup_at": "tomorrow"}, "pickup_at"),
        ({**GOOD, "pickup_at": "2030-01-01T10:00:00"}, "pickup_at"),  # no time zone
        ({**GOOD, "pickup_at": "2001-01-01T10:00:00Z"}, "pickup_at"),  # in the past
    ],
)
def test_bad_fields_are_named(body, field):
    assert field in _fields(body)


def test_nan_and_infinity_are_refused():
    body = '{"pickup": {"lat": NaN, "lng": 1}, "dropoff": {"lat": 1, "lng": Infinity}}'
    assert {"pickup.lat", "dropoff.lng"} <= _fields(body)


def test_pickup_at_is_normalised_to_utc():
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).astimezone(
        dt.timezone(dt.timedelta(hours=5))
    )
    booking = NewBooking.model_validate_json(json.dumps({**GOOD, "pickup_at": later.isoformat()}))
    assert booking.pickup_at.utcoffset() == dt.timedelta(0)
    assert booking.pickup_at == later


def test_cursor_round_trips_and_rejects_forgeries():
    assert decode_cursor(encode_cursor(12345)) == 12345
    for bad in ("", "!!!", encode_cursor(1)[:-1] + "A", "Yjo=", "eDo1"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


@pytest.mark.parametrize(
    "query,field",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"date": "2026-13-01"}, "date"),
        ({"date": "0"}, "date"),
        ({"date": "20261101"}, "date"),
        ({"page": "2"}, "page"),
        ({"cursor": "%%%"}, "cursor"),
    ],
)
def test_bad_query_parameters_are_named(query, field):
    with pytest.raises(ValidationError) as info:
        BookingQuery.model_validate(query)
    assert field in {".".join(map(str, e["loc"])) for e in info.value.errors()}
