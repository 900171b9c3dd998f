"""The browser console: the admin dashboard (``/admin``), the driver console (``/driver``) and
the rider's page (``/rider``).

Plain HTML, CSS and JavaScript from ``web/static``, with the Socket.IO client vendored, so
the pages load nothing from elsewhere and work offline. They call the same ``/v1`` API as
any client, with a token the user pastes in, and listen to the relay for pushes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, request

from web.runtime import runtime

console = Blueprint("console", __name__, static_folder="static", static_url_path="/console/static")


def relay_url() -> str:
    """Where the browser reaches the relay: the setting, or this host on the API port + 1."""
    configured = runtime().settings.relay_public_url
    if configured:
        return configured
    here = urlsplit(request.host_url)
    port = here.port or (443 if here.scheme == "https" else 80)
    host = f"[{here.hostname}]" if ":" in (here.hostname or "") else here.hostname
    return f"{here.scheme}://{host}:{port + 1}"


def _page(name: str):
    response = console.send_static_file(name)
    relay = relay_url()
    websocket = relay.replace("http", "ws", 1)
    # Only this origin and the relay: a page holding a token runs no one else's code.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; connect-src 'self' {relay} {websocket}; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@console.get("/admin")
def admin_page():
    return _page("admin.html")


@console.get("/driver")
def driver_page():
    return _page("driver.html")


@console.get("/rider")
def rider_page():
    return _page("rider.html")


@console.get("/console/config.json")
def config():
    settings = runtime().settings
    return {"relay_url": relay_url(), "offer_window_s": settings.offer_window_s}
