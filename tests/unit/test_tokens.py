"""Signed tokens, checked without a database: signature, algorithm, issuer and expiry."""

import datetime as dt
import warnings

import jwt

from dispatch.tokens import looks_signed, sign, verify, verify_again

SECRET = "a-secret-of-at-least-thirty-two-characters"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _token(**changes) -> str:
    fields = {
        "user_id": 7,
        "role": "driver",
        "token_id": 3,
        "issued_at": NOW,
        "expires_at": NOW + dt.timedelta(hours=1),
    } | changes
    return sign(SECRET, **fields)


def test_a_signed_token_says_who_and_until_when():
    claims = verify(SECRET, _token())
    assert (claims.user_id, claims.role, claims.token_id) == (7, "driver", 3)
    assert claims.expires_at == NOW + dt.timedelta(hours=1)
    assert looks_signed(_token()) and not looks_signed("an-opaque-bootstrap-token")


def test_an_expired_token_is_refused():
    expired = _token(issued_at=NOW - dt.timedelta(hours=2), expires_at=NOW - dt.timedelta(hours=1))
    assert verify(SECRET, expired) is None


def test_a_remembered_signature_still_expires_and_binds_to_its_key():
    token = _token()  # Valid for an hour from NOW (PyJWT checks it against the clock).
    assert verify_again(SECRET, token, NOW).token_id == 3
    assert verify_again(SECRET, token, NOW + dt.timedelta(hours=1, seconds=1)) is None
    assert verify_again("another-secret-of-thirty-two-characters!", token, NOW) is None
    assert verify_again(SECRET, token[:-2] + "xx", NOW) is None


def test_a_token_signed_with_another_key_is_refused():
    assert (
        verify(
            SECRET,
            sign(
                "another-secret-of-thirty-two-characters!",
                7,
                "driver",
                3,
                NOW,
                NOW + dt.timedelta(hours=1),
            ),
        )
        is None
    )


def test_a_tampered_payload_is_refused():
    header, payload, signature = _token().split(".")
    other_header, other_payload, _ = _token(user_id=8, role="admin").split(".")
    assert verify(SECRET, f"{header}.{other_payload}.{signature}") is None


def test_unsigned_and_foreign_algorithms_are_refused():
    claims = {
        "iss": "smartroute",
        "sub": "7",
        "role": "admin",
        "jti": "3",
        "iat": NOW,
        "exp": NOW + dt.timedelta(hours=1),
    }
    assert verify(SECRET, jwt.encode(claims, None, algorithm="none")) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns that the key is short for SHA-512.
        assert verify(SECRET, jwt.encode(claims, SECRET, algorithm="HS512")) is None
    assert verify(SECRET, jwt.encode(claims | {"iss": "elsewhere"}, SECRET)) is None
    no_expiry = {k: v for k, v in claims.items() if k != "exp"}
    assert verify(SECRET, jwt.encode(no_expiry, SECRET)) is None
    assert verify(SECRET, "not.a.token") is None
