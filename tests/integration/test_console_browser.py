"""The admin dashboard and the driver console in a real headless Chromium, against the
real stack: gunicorn serving the pages, a Celery worker matching, the relay pushing.

Playwright drives Debian's Chromium (``/usr/bin/chromium``); it downloads no browser.
Every wait is on a DOM condition (Playwright's ``expect``), never a sleep. Screenshots
of both pages go to ``test-artifacts/screenshots/`` for people to look at.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import (
    STACK_TUNING,
    expected_demand,
    new_user,
    online_driver,
    relay_metric_families,
)
from tests.support import wait_for

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CENTRE = (38.7223, -9.1393)
TRIP = {"pickup": {"lat": CENTRE[0], "lng": CENTRE[1]}, "dropoff": {"lat": 38.75, "lng": -9.15}}
WAIT_MS = 20_000

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)"
)
expect = playwright_api.expect
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not shutil.which("chromium"),
        reason="Chromium is not installed (apt-get install chromium; .ci/run does it)",
    ),
]
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            headless=True,
        )
        yield chromium
        chromium.close()


@pytest.fixture
def pages(browser):
    """New pages in one browser context; each records the script errors it sees."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    opened = []

    def open_(size: tuple[int, int] | None = None):
        page = context.new_page()
        if size:
            page.set_viewport_size({"width": size[0], "height": size[1]})
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
        opened.append(page)
        return page

    yield open_
    context.close()


def sign_in(page, url: str, path: str, token: str) -> None:
    page.goto(f"{url}{path}")
    page.fill("#token", token)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#relay-status")).to_have_text("Live")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def booking_row(page, booking_id: int):
    return page.locator(f'#bookings tr[data-booking-id="{booking_id}"] .status')


def test_an_admin_sees_a_new_booking_appear_and_change_status(admin, stack, pages):
    page = pages()
    sign_in(page, stack.url, "/admin", stack.settings.admin_token)
    driver = online_driver(admin, CENTRE[0] + 0.004, CENTRE[1] + 0.003)
    # Two more drivers, farther out, so the map has a spread to fit.
    online_driver(admin, CENTRE[0] - 0.012, CENTRE[1] - 0.018, "west")
    online_driver(admin, CENTRE[0] + 0.015, CENTRE[1] + 0.02, "east")
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]

    expect(booking_row(page, booking_id)).to_have_text("assigned")
    expect(page.locator(f'#feed li[data-booking-id="{booking_id}"]').first).to_be_visible()
    driver.call("POST", f"/v1/bookings/{booking_id}/accept")
    expect(booking_row(page, booking_id)).to_have_text("accepted")
    expect(page.locator("#feed li").first).to_contain_text(f"#{booking_id}")
    expect(page.locator("#feed li").first).to_contain_text("accepted")
    # The counts and the map follow the pushes: the booking and its driver are drawn.
    expect(page.locator("#count-accepted")).to_have_text("1")
    expect(page.locator("#map")).to_have_attribute("data-bookings", "1")
    expect(page.locator("#map")).to_have_attribute("data-drivers", "3")

    booking_row(page, booking_id).click()
    expect(page.locator("#dispatch-log")).to_be_visible()
    expect(page.locator("#log-body")).to_contain_text("offered")
    expect(page.locator("#log-body tr.chosen")).to_contain_text(str(driver.id))
    screenshot(page, "admin-dashboard")
    assert page.errors == []


def test_a_driver_accepts_an_offer_in_the_console_and_the_admin_sees_it(admin, stack, pages):
    dashboard = pages()
    sign_in(dashboard, stack.url, "/admin", stack.settings.admin_token)
    driver = new_user(admin, "driver", "Dora")
    console = pages((480, 900))
    sign_in(console, stack.url, "/driver", driver.token)
    console.fill("#lat", str(CENTRE[0] + 0.003))
    console.click("#toggle-online")  # Shares the location in the form first.
    expect(console.locator("#driver-status")).to_have_text("available")

    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    card = console.locator("#ride")
    expect(card).to_have_attribute("data-booking-id", str(booking_id))
    expect(card).to_have_attribute("data-status", "assigned")
    expect(console.locator("#countdown")).to_have_text(re.compile(r"Offer ends in \d+ s"))
    screenshot(console, "driver-console-offer")

    done_before = relay_actions_done(stack)
    console.get_by_role("button", name="Accept").click()
    expect(card).to_have_attribute("data-status", "accepted")
    expect(booking_row(dashboard, booking_id)).to_have_text("accepted")
    expect(dashboard.locator("#count-accepted")).to_have_text("1")
    expect(dashboard.locator("#map")).to_have_attribute("data-drivers", "1")
    screenshot(dashboard, "admin-dashboard-accepted")

    console.get_by_role("button", name="Start ride").click()
    expect(card).to_have_attribute("data-status", "in_progress")
    console.get_by_role("button", name="Complete ride").click()
    expect(card).to_be_hidden()
    expect(console.locator("#driver-status")).to_have_text("available")
    expect(booking_row(dashboard, booking_id)).to_have_text("completed")
    assert dashboard.errors == [] and console.errors == []
    # The console acted over its relay connection, not through the API.
    done = relay_actions_done(stack)
    assert {a: done.get(a, 0) - done_before.get(a, 0) for a in ("accept", "start", "complete")} == {
        "accept": 1,
        "start": 1,
        "complete": 1,
    }


def relay_actions_done(stack) -> dict[str, float]:
    """Driver actions the relay has carried out so far, by action."""
    return {
        sample.labels["action"]: sample.value
        for family in relay_metric_families(stack)
        if family.name == "smartroute_relay_driver_actions"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["outcome"] == "done"
    }


def test_the_admin_map_moves_a_driver_to_where_the_relay_last_placed_it(
    admin, stack, pages, listeners
):
    driver = online_driver(admin, *CENTRE)
    online_driver(admin, CENTRE[0] + 0.01, CENTRE[1] + 0.01, "still")
    page = pages()
    sign_in(page, stack.url, "/admin", stack.settings.admin_token)
    expect(page.locator("#map")).to_have_attribute("data-drivers", "2")
    expect(page.locator("#map")).to_have_attribute("data-live", "0")

    app = listeners(driver.token)
    app.client.emit("location", {"lat": CENTRE[0] - 0.01, "lng": CENTRE[1], "at": time.time()})

    # The relay's batch after its next flush, without waiting for the dashboard's poll.
    expect(page.locator("#map")).to_have_attribute("data-live", "1")
    expect(page.locator("#map")).to_have_attribute("data-drivers", "2")
    assert page.errors == []


def test_the_driver_console_shares_its_location_over_the_live_relay(admin, stack, pages):
    driver = new_user(admin, "driver", "Lia")
    console = pages((480, 900))
    sign_in(console, stack.url, "/driver", driver.token)
    console.click("#toggle-online")  # The first location goes over HTTP, as going online needs.
    expect(console.locator("#driver-status")).to_have_text("available")
    expect(console.locator("#relay-status")).to_have_text("Live")
    pings_before = relay_location_pings(stack)

    console.fill("#lat", str(CENTRE[0] + 0.004))
    console.click("#share-location")

    expect(console.locator("#location-note")).to_contain_text(f"{CENTRE[0] + 0.004:.4f}")
    wait_for(
        lambda: driver.call("GET", "/v1/drivers/me")["location"]["lat"] == CENTRE[0] + 0.004,
        20,
        "the location to reach PostgreSQL, written behind",
    )
    assert relay_location_pings(stack) == pings_before + 1
    assert console.errors == []


def relay_location_pings(stack) -> float:
    return sum(
        sample.value
        for family in relay_metric_families(stack)
        if family.name == "smartroute_relay_location_pings"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def test_the_relay_lets_in_the_console_s_origin_and_no_other(stack):
    handshake = f"{stack.relay_url}/socket.io/?EIO=4&transport=polling"
    ours = requests.get(handshake, headers={"Origin": stack.url}, timeout=10)
    assert ours.status_code == 200
    assert ours.headers["Access-Control-Allow-Origin"] == stack.url
    # python-socketio clients send the relay's own origin: still welcome.
    assert requests.get(handshake, headers={"Origin": stack.relay_url}, timeout=10).ok
    theirs = requests.get(handshake, headers={"Origin": "http://elsewhere.example"}, timeout=10)
    assert theirs.status_code == 400
    config = requests.get(f"{stack.url}/console/config.json", timeout=10).json()
    assert config["relay_url"] == stack.relay_url


LAST_EVENT = "Number(sessionStorage.getItem('smartroute.driver.last_event_id'))"


def until(page, expression: str, what: str, timeout: float = 20) -> None:
    """Wait until ``expression`` is true in the page, polled from the test. Playwright's own
    wait_for_function polls by evaluating a string inside the page, which the console's
    Content-Security-Policy (no 'unsafe-eval') refuses."""
    wait_for(lambda: page.evaluate(expression), timeout, what)


@pytest.mark.chaos
def test_the_driver_console_catches_up_by_itself_after_the_relay_comes_back(admin, stack, pages):
    console = pages((480, 900))
    handshakes = []  # The auth payload of each Socket.IO CONNECT the page sends.

    def watch(socket):
        socket.on(
            "framesent",
            lambda frame: (
                isinstance(frame, str)
                and frame.startswith("40{")
                and handshakes.append(json.loads(frame[2:]))
            ),
        )

    console.on("websocket", watch)
    driver = online_driver(admin, CENTRE[0] + 0.002, CENTRE[1])
    sign_in(console, stack.url, "/driver", driver.token)
    rider = new_user(admin, "rider")
    first_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    expect(console.locator("#ride")).to_have_attribute("data-booking-id", str(first_id))
    until(console, f"{LAST_EVENT} > 0", "the offer to come as a push")
    first_event = console.evaluate(LAST_EVENT)
    console.get_by_role("button", name="Decline").click()
    expect(console.locator("#ride")).to_be_hidden()

    stack.relay.terminate()  # The relay goes away (a deploy, a crash): the page notices.
    stack.relay.wait(timeout=20)
    expect(console.locator("#relay-status")).not_to_have_text("Live")
    second_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    wait_for(
        lambda: admin.call("GET", f"/v1/bookings/{second_id}")["status"] == "assigned",
        20,
        "the second booking to be offered while the relay is down",
    )
    stack.relay = stack.start_relay()
    wait_for(stack.relay_up, 30, "the relay to come back")

    expect(console.locator("#relay-status")).to_have_text("Live")
    expect(console.locator("#ride")).to_have_attribute("data-booking-id", str(second_id))
    # The reconnect asked for what came after the last event the page saw, and the relay
    # sent the offer it had missed (the page's poll would show the ride too, but would not
    # move last_event_id on).
    until(console, f"{LAST_EVENT} > {first_event}", "the missed offer to be replayed")
    assert handshakes[-1] == {"token": driver.token, "last_event_id": first_event}
    console.get_by_role("button", name="Accept").click()
    expect(console.locator("#ride")).to_have_attribute("data-status", "accepted")
    # The console kept the driver where SmartRoute last saw them.
    assert admin.call("GET", "/v1/admin/drivers")["drivers"][0]["location"]["lat"] == pytest.approx(
        CENTRE[0] + 0.002
    )
    screenshot(console, "driver-console-after-reconnect")
    assert console.errors == [] or all(
        "WebSocket" in e or "ERR_CONNECTION" in e for e in console.errors
    ), console.errors


def test_the_driver_console_reloads_over_http_when_the_relay_cannot_replay(admin, stack, pages):
    import redis

    from smartroute.infra.push import REPLAY_PREFIX

    console = pages((480, 900))
    handshakes = []  # The auth payload of each Socket.IO CONNECT the page sends.

    def watch(socket):
        socket.on(
            "framesent",
            lambda frame: (
                isinstance(frame, str)
                and frame.startswith("40{")
                and handshakes.append(json.loads(frame[2:]))
            ),
        )

    console.on("websocket", watch)
    driver = online_driver(admin, CENTRE[0] + 0.002, CENTRE[1])
    sign_in(console, stack.url, "/driver", driver.token)
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    until(console, f"{LAST_EVENT} > 0", "the offer to come as a push")
    last_event = console.evaluate(LAST_EVENT)

    # The relay's replay log is lost (a Redis restart), then the page reconnects.
    cache = redis.Redis.from_url(stack.settings.redis_url)
    cache.delete(*cache.keys(REPLAY_PREFIX + "*"))
    console.reload()
    expect(console.locator("#relay-status")).to_have_text("Live")
    assert handshakes[-1] == {"token": driver.token, "last_event_id": last_event}
    # Told to resync: the page forgets the place it can no longer replay from, and shows
    # the offer from GET /v1/drivers/me.
    until(
        console,
        "sessionStorage.getItem('smartroute.driver.last_event_id') === null",
        "the console to forget its replay place",
    )
    expect(console.locator("#ride")).to_have_attribute("data-booking-id", str(booking_id))
    expect(console.locator("#ride")).to_have_attribute("data-status", "assigned")
    assert console.errors == [], console.errors


def euros(amount: int) -> re.Pattern:
    """An amount of euro cents as the console shows it, whatever the browser's locale puts
    between the units and the cents or around the sign."""
    units, cents = divmod(amount, 100)
    return re.compile(rf"€\s?{units:,}[.,]{cents:02d}|{units:,}[.,]{cents:02d}\s?€")


def test_a_driver_waits_at_the_pickup_and_reports_a_no_show_with_its_fee(admin, stack, pages):
    """The stack's no-show wait is short (SMARTROUTE_NO_SHOW_WAIT_S in STACK_TUNING)."""
    dashboard = pages()
    sign_in(dashboard, stack.url, "/admin", stack.settings.admin_token)
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1], "Nuno")
    console = pages((480, 900))
    sign_in(console, stack.url, "/driver", driver.token)
    rider = new_user(admin, "rider")
    booking = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)
    assert booking["fare"]["currency"] == "EUR"

    card = console.locator("#ride")
    expect(card).to_have_attribute("data-status", "assigned")
    expect(console.locator("#ride-fare")).to_have_text(euros(booking["fare"]["amount"]))
    console.get_by_role("button", name="Accept").click()
    expect(card).to_have_attribute("data-status", "accepted")
    console.get_by_role("button", name="I have arrived").click()
    expect(card).to_have_attribute("data-status", "arrived")

    arrived = admin.call("GET", f"/v1/bookings/{booking['id']}")
    waited_from = max(
        dt.datetime.fromisoformat(arrived["arrived_at"]),
        dt.datetime.fromisoformat(arrived["pickup_at"]),
    )
    allowed_at = waited_from + dt.timedelta(seconds=int(STACK_TUNING["SMARTROUTE_NO_SHOW_WAIT_S"]))
    wait_for(
        lambda: dt.datetime.now(dt.UTC) > allowed_at + dt.timedelta(milliseconds=200),
        30,
        "the no-show wait to be over",
    )
    console.get_by_role("button", name="Rider did not come").click()
    expect(card).to_be_hidden()
    ended = admin.call("GET", f"/v1/bookings/{booking['id']}")
    assert ended["status"] == "no_show" and ended["cancellation_fee"] is not None
    expect(console.locator("#ride-outcome")).to_contain_text("No-show recorded")
    expect(console.locator("#ride-outcome")).to_contain_text(euros(ended["cancellation_fee"]))
    expect(console.locator("#driver-status")).to_have_text("available")

    row = dashboard.locator(f'#bookings tr[data-booking-id="{booking["id"]}"]')
    expect(row.locator(".status .pill")).to_have_text("no show")
    expect(row.locator(".fare")).to_have_text(euros(booking["fare"]["amount"]))
    expect(dashboard.locator(f'#drivers tr[data-driver-id="{driver.id}"] .rating')).to_have_text(
        "unrated"
    )
    screenshot(console, "driver-console-no-show")
    assert dashboard.errors == [] and console.errors == []


def test_the_driver_console_says_why_when_the_rider_cancels(admin, stack, pages):
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1], "Rui")
    console = pages((480, 900))
    sign_in(console, stack.url, "/driver", driver.token)
    rider = new_user(admin, "rider")
    booking_id = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"]
    card = console.locator("#ride")
    expect(card).to_have_attribute("data-status", "assigned")
    console.get_by_role("button", name="Accept").click()
    expect(card).to_have_attribute("data-status", "accepted")

    rider.call("POST", f"/v1/bookings/{booking_id}/cancel", json={"reason": "plans changed"})
    # Only the relay's push carries the reason: a poll would clear the card without one.
    expect(console.locator("#ride-outcome")).to_have_text("The rider cancelled: plans changed")
    expect(card).to_be_hidden()
    expect(console.locator("#driver-status")).to_have_text("available")
    screenshot(console, "driver-console-rider-cancelled")
    assert console.errors == []


def test_money_shows_minor_units_with_each_currency_s_own_decimals(stack, pages):
    page = pages()
    page.goto(f"{stack.url}/driver")
    shown = page.evaluate(
        "import('/console/static/console.js').then(({ money }) => [money(1234, 'EUR'),"
        " money(500, 'JPY'), money(1234, 'KWD'), money(null, 'EUR'), money(5, undefined)])"
    )
    assert re.fullmatch(r"€\s?12[.,]34|12[.,]34\s?€", shown[0]), shown
    assert re.fullmatch(r"(¥|JP¥|￥)\s?500", shown[1]), shown  # Not ¥5: the yen has no cents.
    assert re.search(r"1[.,]234", shown[2]), shown  # Three decimals for the dinar.
    assert shown[3:] == ["–", "–"]


def test_an_idle_driver_sees_where_rebalancing_suggests_waiting_and_why(
    admin, stack, pages, committed_sessions, rebalancing_beat
):
    expected_demand(committed_sessions, dt.datetime.now(dt.UTC))
    # About 1.5 km east of the centre, where the bookings are.
    driver = online_driver(admin, CENTRE[0], CENTRE[1] + 0.0173, "Ines")
    console = pages((480, 900))
    sign_in(console, stack.url, "/driver", driver.token)
    suggestion = console.locator("#reposition")
    expect(suggestion).to_be_visible()
    expect(console.locator("#reposition-zone")).to_have_text(re.compile(r"^r\d+c\d+$"))
    expect(console.locator("#reposition-reason")).to_contain_text("bookings in the next 10 min")
    screenshot(console, "driver-console-reposition")
    assert console.errors == []
