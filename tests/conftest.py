"""Test services: real PostgreSQL and Redis, embedded unless URLs are given.

With DATABASE_URL / REDIS_URL unset (a fresh machine, CI), the embedded services
start in ``.smartroute/test``. With them set, the tests use a ``<name>_test``
database on that server and Redis database 15, never the data behind the URLs.

Isolation: the schema is migrated once per run with Alembic (never
``create_all``); tests of the domain run in a rolled-back outer transaction;
tests that commit across processes truncate every table first.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest
import redis
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dispatch.db import make_engine, make_sessionmaker
from dispatch.models import Base
from smartroute.infra import heartbeat, migrate
from smartroute.infra.embedded import ensure_database, ensure_services
from smartroute.infra.settings import Settings

# A skipped test fails a CI run (tests/plugins/no_skips_in_ci.py); every test is marked unit or
# integration by what it reaches (tests/plugins/layers.py); pytester runs pytest within a test,
# for the plugins' own tests.
pytest_plugins = ["tests.plugins.no_skips_in_ci", "tests.plugins.layers", "pytester"]

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA_DIR = ROOT / ".smartroute" / "test"
QUEUES = ("dispatch.default", "notify", "maintenance")


def _test_database_url(url: str) -> str:
    parsed = make_url(url)
    name = parsed.database or "smartroute"
    test_name = name if name.endswith("_test") else f"{name}_test"
    admin = parsed.set(drivername="postgresql", database="postgres")
    ensure_database(admin.render_as_string(hide_password=False), test_name)
    return parsed.set(database=test_name).render_as_string(hide_password=False)


def _test_redis_url(url: str) -> str:
    if url.startswith("unix://"):
        return url  # The embedded test Redis is ours alone.
    return url.rsplit("/", 1)[0] + "/15" if url.count("/") > 2 else url + "/15"


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings for the test run, with live service URLs."""
    base = Settings.from_env(
        {k: v for k, v in os.environ.items() if k in ("DATABASE_URL", "REDIS_URL")}
    )
    services = ensure_services(base.database_url, base.redis_url, TEST_DATA_DIR)
    database_url = (
        _test_database_url(base.database_url) if base.database_url else services.database_url
    )
    redis_url = _test_redis_url(base.redis_url) if base.redis_url else services.redis_url
    settings = replace(
        base.with_services(database_url, redis_url),
        data_dir=TEST_DATA_DIR,
        admin_token="test-admin-token-that-is-32-chars-or-more",
        secret_key="test-secret-key-that-signs-tokens-0123456789",
        metrics_token="test-metrics-token-for-health-and-metrics",
    )
    reset_schema(database_url)
    migrate.upgrade(database_url)
    redis.Redis.from_url(redis_url).flushdb()
    yield settings
    services.stop()


def reset_schema(database_url: str) -> None:
    conn = psycopg2.connect(
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        conn.close()


@pytest.fixture(scope="session")
def engine(settings):
    engine = make_engine(settings.database_url, application_name="smartroute-tests")
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine) -> Session:
    """A session inside an outer transaction that is rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        with Session(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        ) as s:
            yield s
        outer.rollback()


def truncate_all(engine, attempts: int = 5) -> None:
    """Empty every table. A worker still finishing an earlier test's task can deadlock with
    TRUNCATE's table locks; PostgreSQL then aborts the side whose deadlock check runs first.
    As superuser (the embedded PostgreSQL) we wait longer than the workers before checking,
    so it is their transaction that goes (tasks retry); otherwise, if it is us, we go again.
    """
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if conn.scalar(text("SELECT current_setting('is_superuser') = 'on'")):
                    conn.execute(text("SET LOCAL deadlock_timeout = '10s'"))
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise


def empty_redis(redis_url: str) -> None:
    """Queues, SmartRoute's own keys (replay streams, token cache, driver index) and
    rate-limit counters: ids restart with the tables, so these would name others.
    The live workers' heartbeats stay: they name processes, which live on."""
    cache = redis.Redis.from_url(redis_url)
    keys = [k for k in cache.keys("smartroute:*") if k.decode() != heartbeat.KEY]
    cache.delete(*QUEUES, *keys, *cache.keys("LIMITS*"))


@pytest.fixture
def clean_db(engine, settings):
    """Empty tables and queues, for tests whose data is committed and seen by other processes."""
    truncate_all(engine)
    empty_redis(settings.redis_url)
    yield
    truncate_all(engine)


@pytest.fixture
def committed_sessions(engine, clean_db):
    """A sessionmaker whose commits are real (the tables are emptied around the test)."""
    return make_sessionmaker(engine)


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
