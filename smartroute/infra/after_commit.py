"""Work that must wait for a transaction to commit: sent after it does, dropped if it does not.

A request (or a relay action) that asks for a booking to be matched or its events pushed
says so with ``after_commit(session, send)`` while its transaction is open. Nothing is
sent before the commit, so a worker never looks for a row that is not there yet, and
nothing is sent at all if the transaction rolls back or the session closes without
committing. The caller no longer has to remember to ask "only after commit".

The pending work lives on ``session.info``; one SQLAlchemy listener on every ``Session``
sends it after the outermost transaction commits (a savepoint's release is not a commit)
and clears it when that transaction ends, however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

PENDING = "smartroute.after_commit"


def after_commit(session: Session, send: Callable[[], None]) -> None:
    """Call ``send`` once the transaction ``session`` is in commits; never if it rolls back.

    ``send`` runs inside ``session.commit()``, after the database has committed, in the
    order the calls were registered. It must not touch the session (it is between
    transactions then) and should not raise; if it does, the error is logged and the
    commit, which has already happened, still returns normally.
    """
    session.info.setdefault(PENDING, []).append(send)


def pending(session: Session) -> int:
    """How many sends wait for this session's commit."""
    return len(session.info.get(PENDING, ()))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # A savepoint released: the outer transaction may still roll back.
    for send in session.info.pop(PENDING, ()):
        try:
            send()
        except Exception:
            log.exception("after-commit work failed; the sweeps will catch up")


@event.listens_for(Session, "after_transaction_end")
def _drop_pending(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(PENDING, None)
