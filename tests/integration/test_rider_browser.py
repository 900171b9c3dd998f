"""The rider's page in a real headless Chromium, against the real stack: the rider prices a
trip, books it on the quote and watches the ride as the relay pushes it, while a driver,
driven over the API, takes it to the end (sharing its location over the relay, which the
rider sees on a small map with the ETA); then the rider rates the driver, or cancels.

Every wait is on a DOM condition (Playwright's ``expect``), never a sleep. Screenshots go to
``test-artifacts/screenshots/`` with the other pages'.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from sqlalchemy import text

from dispatch.models import SurgeLevel
from tests.integration.conftest import new_user, online_driver
from tests.integration.test_console_browser import (
    CENTRE,
    browser,  # noqa: F401 - a fixture, shared with the admin and driver pages' tests
    expect,
    screenshot,
    sign_in,
    until,
)
from tests.integration.test_console_browser import pytestmark as console_marks

pytestmark = console_marks  # Marked browser, skipped without Chromium.
LAST_EVENT = "Number(sessionStorage.getItem('smartroute.rider.last_event_id'))"


@pytest.fixture
def page(browser):  # noqa: F811 - the imported fixture
    """One page in an English (US) locale, so amounts read as ``€12.34``; it records the
    script errors it sees."""
    context = browser.new_context(viewport={"width": 520, "height": 1100}, locale="en-US")
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    yield page
    context.close()


def euros(minor: int) -> str:
    return f"€{minor / 100:,.2f}"


def test_a_rider_books_on_a_quote_watches_the_ride_and_rates_the_driver(
    admin, stack, page, listeners
):
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    driver_app = listeners(driver.token)
    rider = new_user(admin, "rider", "Rita")
    # The quote card, read before booking, shows what the booking was priced at.
    sign_in(page, stack.url, "/rider", rider.token)
    page.get_by_role("button", name="Get a price").click()
    expect(page.locator("#quote-amount")).to_have_text(re.compile(r"^€\d+\.\d\d$"))
    shown = page.locator("#quote-amount").text_content()
    expect(page.locator("#quote-eta")).to_have_text(re.compile(r"^\d+ (s|min)$"))
    expect(page.locator("#quote-surge")).to_be_hidden()  # No surge computed: ×1.
    base = page.locator("#quote-base").text_content()
    screenshot(page, "rider-quote")
    page.get_by_role("button", name="Book").click()
    ride = page.locator("#ride")
    expect(ride).to_have_attribute("data-status", "assigned")
    booking_id = int(ride.get_attribute("data-booking-id"))
    booking = rider.call("GET", f"/v1/bookings/{booking_id}")
    assert (shown, base) == (euros(booking["fare"]["amount"]), euros(booking["fare"]["base"]))
    expect(page.locator("#ride-driver")).to_have_text(f"Driver #{driver.id} · not rated yet")
    expect(page.locator("#driver-eta")).to_have_text(
        "Your driver's position appears here once they accept the ride."
    )
    expect(page.locator("#driver-map")).to_be_hidden()

    # The changes come as pushes to the rider's room (the poll would show them too, but
    # would not move the page's replay place on).
    until(page, f"{LAST_EVENT} > 0", "a push to reach the rider's page")
    for action, status in (
        ("accept", "accepted"),
        ("arrive", "arrived"),
        ("start", "in_progress"),
        ("complete", "completed"),
    ):
        driver.call("POST", f"/v1/bookings/{booking_id}/{action}")
        expect(ride).to_have_attribute("data-status", status)
        if status == "accepted":
            # About a kilometre south of the pickup, over the driver's relay connection.
            location = {"lat": CENTRE[0] - 0.009, "lng": CENTRE[1], "at": time.time()}
            driver_app.client.emit("location", location)
            expect(page.locator("#driver-eta")).to_have_text(re.compile(r"^Driver \d+ min away$"))
            expect(page.locator("#driver-map")).to_have_attribute("data-drivers", "1")
            screenshot(page, "rider-driver-coming")
        if status == "arrived":
            expect(page.locator("#driver-eta")).to_have_text("Your driver is at the pickup")
            screenshot(page, "rider-driver-arrived")
        if status == "in_progress":
            location = {"lat": CENTRE[0], "lng": CENTRE[1], "at": time.time()}
            driver_app.client.emit("location", location)
            expect(page.locator("#driver-eta")).to_have_text(re.compile(r"^Arriving in \d+ min$"))
    expect(page.locator("#driver-position")).to_be_hidden()
    completed = rider.call("GET", f"/v1/bookings/{booking_id}")
    assert completed["fare"]["final"] is True
    expect(page.locator("#ride-fare")).to_have_text(f"{euros(completed['fare']['amount'])} (final)")
    expect(page.locator("#cancel")).to_be_hidden()

    page.check('#rate input[name="stars"][value="5"]')
    page.fill("#rate-comment", "Smooth ride, thank you")
    page.get_by_role("button", name="Send rating").click()
    expect(page.locator("#my-rating")).to_have_text(
        "You rated this ride ★★★★★ (5/5): “Smooth ride, thank you”"
    )
    expect(page.locator("#rate")).to_be_hidden()
    rated = rider.call("GET", f"/v1/bookings/{booking_id}")
    assert (rated["my_rating"]["stars"], rated["my_rating"]["comment"]) == (
        5,
        "Smooth ride, thank you",
    )
    assert rated["driver_rating"] == {"average": 5.0, "count": 1}
    expect(page.locator("#ride-driver")).to_have_text(f"Driver #{driver.id} · ★ 5.00 (1 rating)")
    # A second rating is refused by the API; the page offers none.
    rider.call("POST", f"/v1/bookings/{booking_id}/rating", expect=409, json={"stars": 1})
    history = page.locator(f'#history tr[data-booking-id="{booking_id}"]')
    expect(history.locator(".status")).to_have_text("completed")
    expect(history.locator(".number")).to_have_text(euros(completed["fare"]["amount"]))
    screenshot(page, "rider-completed-rated")
    assert page.errors == [], page.errors


def test_a_rider_cancels_an_assigned_ride_with_a_reason(admin, stack, page, committed_sessions):
    with committed_sessions.begin() as s:  # As beat would store it: demand above supply.
        s.add(SurgeLevel(region="default", multiplier_pct=150, demand=3, supply=2))
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    rider = new_user(admin, "rider")
    sign_in(page, stack.url, "/rider", rider.token)
    page.get_by_role("button", name="Get a price").click()
    expect(page.locator("#quote-surge")).to_have_text("Surge ×1.5")
    quote_id = int(page.locator("#quote").get_attribute("data-quote-id"))
    expect(page.locator("#quote-countdown")).to_have_text(re.compile(r"^Price held for \d+ s$"))
    page.get_by_role("button", name="Book").click()
    ride = page.locator("#ride")
    expect(ride).to_have_attribute("data-status", "assigned")
    booking_id = int(ride.get_attribute("data-booking-id"))
    booking = rider.call("GET", f"/v1/bookings/{booking_id}")
    assert (booking["quote_id"], booking["fare"]["surge_multiplier"]) == (quote_id, 1.5)
    expect(page.locator("#ride-driver")).to_contain_text(f"Driver #{driver.id}")

    page.fill("#cancel-reason", "Plans changed")
    page.get_by_role("button", name="Cancel ride").click()
    expect(ride).to_have_attribute("data-status", "cancelled")
    cancelled = rider.call("GET", f"/v1/bookings/{booking_id}")
    assert (cancelled["cancelled_by"], cancelled["cancel_reason"]) == ("rider", "Plans changed")
    # Within the grace period after assignment a cancel is free; after it, the tariff's fee.
    fee = cancelled["cancellation_fee"]
    if fee is None:
        expect(page.locator("#ride-fee")).to_be_hidden()
    else:
        expect(page.locator("#ride-fee")).to_have_text(euros(fee))
    expect(page.locator("#ride-fare")).to_have_text(
        f"{euros(booking['fare']['amount'])} (quoted, not charged)"
    )
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#rate")).to_be_hidden()
    expect(page.locator("#driver-position")).to_be_hidden()
    expect(page.get_by_role("button", name="Plan another trip")).to_be_visible()
    screenshot(page, "rider-cancelled")
    assert page.errors == [], page.errors


def test_a_quote_expired_on_the_server_asks_for_a_new_price(admin, stack, page, engine):
    rider = new_user(admin, "rider")
    sign_in(page, stack.url, "/rider", rider.token)
    page.get_by_role("button", name="Get a price").click()
    expect(page.locator("#quote")).to_be_visible()
    quote_id = int(page.locator("#quote").get_attribute("data-quote-id"))
    with engine.begin() as conn:  # Its time runs out while the page still counts down.
        conn.execute(
            text(
                "UPDATE quotes SET created_at = created_at - interval '1 hour', "
                "expires_at = now() - interval '1 second' WHERE id = :id"
            ),
            {"id": quote_id},
        )
    page.get_by_role("button", name="Book").click()
    expect(page.locator("#rider-error")).to_have_text(
        "This price has expired: get a new price, then book."
    )
    expect(page.locator("#quote")).to_be_hidden()
    assert rider.call("GET", "/v1/me/bookings")["bookings"] == []
    # Asked again, the new price books.
    page.get_by_role("button", name="Get a price").click()
    page.get_by_role("button", name="Book").click()
    expect(page.locator("#ride")).to_have_attribute("data-status", re.compile("pending|assigned"))
    expect(page.locator("#rider-error")).to_have_text("")
    # The only error the browser reports is the refused booking's answer.
    assert [e for e in page.errors if "409" not in e] == [], page.errors


def test_the_rider_page_refuses_a_driver_s_token_and_keeps_the_console_s_policy(admin, stack, page):
    driver = new_user(admin, "driver")
    page.goto(f"{stack.url}/rider")
    page.fill("#token", driver.token)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in-error")).to_have_text("That token is not a rider's.")
    expect(page.locator("#console")).to_be_hidden()
    headers = requests.get(f"{stack.url}/rider", timeout=10).headers
    assert headers["Content-Security-Policy"].startswith("default-src 'self'; connect-src 'self'")
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    # The only error the browser reports is GET /v1/riders/me's 403 to a driver's token.
    assert [e for e in page.errors if "403" not in e] == [], page.errors
    assert len(page.errors) == 1, page.errors
