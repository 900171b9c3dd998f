"""One table answers errors for the API and the relay (web.errors.ANSWERS): each domain error
has its status there, and the database being unavailable is the same 503 on both."""

from __future__ import annotations

import inspect

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dispatch import drivers, ratings
from dispatch import errors as domain
from web.errors import ANSWERS, error_answer


def _domain_errors() -> list[type[domain.DispatchError]]:
    found = [
        cls
        for module in (domain, drivers, ratings)
        for _, cls in inspect.getmembers(module)
        if inspect.isclass(cls) and issubclass(cls, domain.DispatchError)
    ]
    return sorted(set(found), key=lambda cls: cls.__name__)


def test_every_domain_error_has_its_own_entry():
    missing = [cls.__name__ for cls in _domain_errors() if cls not in ANSWERS]
    assert missing == []


def test_a_domain_error_keeps_its_code_message_and_details():
    body, status = error_answer(domain.NotFound("no such booking", booking_id=7))
    assert (status, body) == (
        404,
        {"error": {"code": "not_found", "message": "no such booking", "booking_id": 7}},
    )


def test_the_database_unavailable_is_one_answer_for_both_kinds():
    for exc in (OperationalError("SELECT 1", {}, Exception("gone")), PoolTimeout("full")):
        body, status = error_answer(exc)
        assert status == 503 and body["error"]["code"] == "database_unavailable"


def test_anything_else_is_a_500_that_says_nothing_of_itself():
    body, status = error_answer(KeyError("secret detail"))
    assert status == 500
    assert body == {
        "error": {"code": "internal_error", "message": "something went wrong on our side"}
    }
