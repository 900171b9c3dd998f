"""A driver's own state: location pings and going available or offline."""

from __future__ import annotations

from dispatch import drivers as service
from dispatch.bookings.payloads import booking_payload
from dispatch.states import DriverStatus, Role
from smartroute.infra.driver_index import RedisDriverIndex, best_effort
from web.api import api, parse_body
from web.auth import actor, requires
from web.runtime import db, runtime, utcnow
from web.schemas import DriverStatusChange, Location


def driver_index() -> RedisDriverIndex:
    return RedisDriverIndex(runtime().redis)


def _me(driver) -> dict:
    current = service.current_booking(db(), driver.user_id)
    return service.driver_payload(driver) | {
        "current_booking": booking_payload(current) if current else None
    }


@api.get("/drivers/me")
@requires(Role.DRIVER)
def get_me():
    session = db()
    driver = service.get_driver(session, actor().id)
    return _me(driver)


@api.put("/drivers/me/location")
@requires(Role.DRIVER)
def put_location():
    runtime().limits.enforce("location", actor().id)
    body = parse_body(Location)
    session = db()
    driver = service.update_location(session, actor().id, body.lat, body.lng, now=utcnow())
    session.commit()
    best_effort(driver_index().update, driver.user_id, body.lat, body.lng)
    return service.driver_payload(driver)


@api.put("/drivers/me/status")
@requires(Role.DRIVER)
def put_status():
    body = parse_body(DriverStatusChange)
    session = db()
    driver = service.set_availability(session, actor().id, DriverStatus(body.status), now=utcnow())
    session.commit()
    if driver.status == DriverStatus.OFFLINE:
        best_effort(driver_index().remove, driver.user_id)
    return _me(driver)
