"""PostgreSQL's fences hold for every connection SmartRoute makes, whatever connects it.

The limits live on the role (``smartroute db upgrade`` sets them with ALTER ROLE, since
PgBouncer refuses per-connection options): a runaway statement and a long lock wait are
ended, a transaction left idle is ended, an engine refuses a database whose role has no
limits, and 0 for the idle fence is refused before anything starts.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from sqlalchemy import create_engine, make_url, pool, text
from sqlalchemy.exc import OperationalError

from dispatch.db import SessionLimitsMissing, make_engine, make_sessionmaker, sqlalchemy_url
from dispatch.users import ensure_bootstrap_admin
from smartroute.infra import migrate
from smartroute.infra.embedded import ensure_database
from smartroute.infra.settings import ConfigError, Settings
from tests import factories as make
from tests.conftest import reset_schema
from tests.support import wait_for
from web import create_app

# Short limits, so each fence shows within a second or two. The idle fence outlasts the
# lock timeout: a lock holder idling while another waits must not be ended first.
LIMITS = {
    "db_statement_timeout_s": 1.0,
    "db_lock_timeout_s": 0.3,
    "db_idle_in_transaction_timeout_s": 3.0,
}


def _database(settings, name: str) -> str:
    """A database of the test's own, emptied: one an earlier run left behind may stand at
    another revision history."""
    url = make_url(settings.database_url)
    ensure_database(url.set(database="postgres").render_as_string(hide_password=False), name)
    own = url.set(database=name).render_as_string(hide_password=False)
    reset_schema(own)
    return own


def _raw(url: str):
    return create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)


@pytest.fixture(scope="module")
def limited_url(settings) -> str:
    """A database of its own, upgraded with short limits (the main test database keeps the
    defaults, which would take seconds to show)."""
    url = _database(settings, "smartroute_limits_test")
    migrate.upgrade(url, settings=replace(Settings(), **LIMITS))
    return url


@pytest.fixture
def limited(limited_url):
    engine = make_engine(limited_url, pool_size=2, application_name="smartroute-limits")
    yield engine
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE users, cab_bookings, drivers RESTART IDENTITY CASCADE"))
    engine.dispose()


def test_zero_for_the_idle_fence_is_refused_at_config_time():
    with pytest.raises(ConfigError, match="SMARTROUTE_DB_IDLE_IN_TRANSACTION_TIMEOUT_S"):
        Settings.from_env({"SMARTROUTE_DB_IDLE_IN_TRANSACTION_TIMEOUT_S": "0"})


def test_upgrade_sets_the_limits_on_the_role_not_on_the_connection(limited_url):
    # A plain connection, with no options of its own (as PgBouncer hands out), has them.
    engine = _raw(limited_url)
    try:
        with engine.connect() as conn:
            shown = [
                conn.scalar(text(f"SHOW {name}"))
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                )
            ]
    finally:
        engine.dispose()
    assert shown == ["1s", "300ms", "3s"]


def test_a_statement_past_the_statement_timeout_is_ended(limited):
    started = time.monotonic()
    with pytest.raises(OperationalError, match="statement timeout"), limited.connect() as conn:
        conn.execute(text("SELECT pg_sleep(10)"))
    assert time.monotonic() - started < 5


def test_a_lock_wait_past_the_lock_timeout_fails(limited, now):
    with make_sessionmaker(limited).begin() as s:
        rider_id = make.rider(s).id
    with limited.connect() as holder, limited.connect() as waiter:
        holder.begin()
        holder.execute(text("SELECT 1 FROM users WHERE id = :u FOR UPDATE"), {"u": rider_id})
        started = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            waiter.execute(text("UPDATE users SET name = 'x' WHERE id = :u"), {"u": rider_id})
        assert time.monotonic() - started < 2.5
        holder.rollback()


def test_a_transaction_left_idle_is_ended_by_the_role_fence(limited):
    conn = limited.connect()
    try:
        conn.begin()
        pid = conn.scalar(text("SELECT pg_backend_pid()"))

        def ended() -> bool:
            # A fresh connection each time: pg_stat_activity is a per-transaction snapshot.
            with limited.connect() as probe:
                return not probe.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
                )

        wait_for(ended, 15, "PostgreSQL to end the idle transaction")
        with pytest.raises(OperationalError):
            conn.execute(text("SELECT 1"))
    finally:
        conn.invalidate()  # Its server side is gone: nothing to roll back or return.
        conn.close()


def test_an_engine_refuses_a_role_without_the_limits(settings):
    url = _database(settings, "smartroute_nolimits_test")
    engine = _raw(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER ROLE CURRENT_USER IN DATABASE smartroute_nolimits_test RESET ALL"))
    engine.dispose()
    guarded = make_engine(url, pool_size=1)
    try:
        with pytest.raises(SessionLimitsMissing, match="smartroute db upgrade"):
            guarded.connect()
    finally:
        guarded.dispose()


def test_a_lock_timeout_is_a_503_on_the_api_not_a_500(settings, limited_url, limited, now):
    app = create_app(replace(settings, database_url=limited_url, batch_window_s=0))
    runtime = app.extensions["smartroute"]
    try:
        with runtime.sessions.begin() as s:
            ensure_bootstrap_admin(s, settings.admin_token)
            booking_id = make.booking(s, make.rider(s), now=now).id
        client = app.test_client()
        with limited.connect() as holder:
            holder.begin()
            holder.execute(
                text("SELECT 1 FROM cab_bookings WHERE id = :b FOR UPDATE"), {"b": booking_id}
            )
            # The admin may cancel anyone's booking, so this one waits for the row, and gives
            # up at the lock timeout.
            answer = client.post(
                f"/v1/bookings/{booking_id}/cancel",
                headers={"Authorization": f"Bearer {settings.admin_token}"},
                json={"reason": "rider asked support to cancel"},
            )
            holder.rollback()
        assert answer.status_code == 503, answer.get_json()
        assert answer.get_json()["error"]["code"] == "database_unavailable"
    finally:
        runtime.engine.dispose()
        runtime.read_sessions.kw["bind"].dispose()


@pytest.mark.slow
def test_migrations_are_not_cut_short_by_the_roles_statement_timeout(settings):
    # A database whose migrations have real work to do: 0004 copies every user's token
    # over (and back on the way down), far longer than this role's 50 ms statement timeout.
    url = _database(settings, "smartroute_migration_timeout_test")
    migrate.upgrade(url, settings=Settings())
    engine = _raw(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("TRUNCATE users RESTART IDENTITY CASCADE"))
            conn.execute(
                text(
                    "INSERT INTO users (name, role) "
                    "SELECT 'rider ' || g, 'rider' FROM generate_series(1, 100000) g"
                )
            )
            conn.execute(
                text(
                    "ALTER ROLE CURRENT_USER IN DATABASE "
                    "smartroute_migration_timeout_test SET statement_timeout = 50"
                )
            )
        migrate.downgrade(url, "0003")
        migrate.upgrade(url, settings=Settings())
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM access_tokens")) == 100000
    finally:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("TRUNCATE users RESTART IDENTITY CASCADE"))
        engine.dispose()
