"""Work that must wait for a transaction to commit: sent after it does, dropped if it does not.

A request (or a relay action) that asks for a booking to be matched or its events pushed
says so with ``after_commit(session, send)`` while its transaction is open. Nothing is
sent before the commit, so a worker never looks for a row that is not there yet, and
nothing is sent at all if the transaction rolls back or the session closes without
committing. The caller no longer has to remember to ask "only after commit".

The pending work lives on ``session.info``. When the outermost transaction commits (a
savepoint's release is not a commit), a listener on every ``Session`` marks it sent-to-be;
it is sent once that transaction has ended and its database connection is back in the
pool, and dropped if it ended any other way. A send is a Redis or broker round trip: made
while the connection was still checked out, it kept the connection from the next request
(or, on the relay's busy event loop, the next green thread) for as long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

PENDING = "smartroute.after_commit"
COMMITTED = "smartroute.after_commit.committed"


def after_commit(session: Session, send: Callable[[], None]) -> None:
    """Call ``send`` once the transaction ``session`` is in commits; never if it rolls back.

    ``send`` runs inside ``session.commit()``, after the database has committed and the
    session has handed its connection back, in the order the calls were registered. It must
    not touch the session (it is between transactions then) and should not raise; if it
    does, the error is logged and the commit, which has already happened, still returns
    normally.
    """
    session.info.setdefault(PENDING, []).append(send)


def pending(session: Session) -> int:
    """How many sends wait for this session's commit."""
    return len(session.info.get(PENDING, ()))


@event.listens_for(Session, "after_commit")
def _mark_committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # A savepoint released: the outer transaction may still roll back.
    # The connection is still checked out here; it is returned just before the
    # transaction's end, below, where the sends go out.
    session.info[COMMITTED] = session.info.pop(PENDING, [])


@event.listens_for(Session, "after_transaction_end")
def _send_committed(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    session.info.pop(PENDING, None)  # Ended without a commit: nothing is sent.
    for send in session.info.pop(COMMITTED, ()):
        try:
            send()
        except Exception:
            log.exception("after-commit work failed; the sweeps will catch up")
