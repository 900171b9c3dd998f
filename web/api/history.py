"""A rider's or driver's own rides, newest first, a page at a time."""

from __future__ import annotations

from dispatch import bookings as service
from dispatch.ratings import party_payloads
from dispatch.states import Role
from web.api import api, parse_query
from web.auth import actor, requires
from web.runtime import db
from web.schemas import HistoryQuery, encode_page_cursor


@api.get("/me/bookings")
@requires(Role.RIDER, Role.DRIVER)
def my_bookings():
    query = parse_query(HistoryQuery)
    # The primary, not the replica: a rider who has just booked sees that ride at once.
    session = db()
    page = service.history_for(
        session, actor(), status=query.status, limit=query.limit, after=query.after()
    )
    return {
        "bookings": party_payloads(session, page.bookings, actor()),
        "next_cursor": encode_page_cursor(page.next) if page.next is not None else None,
    }
