"""Every test is in one layer: ``unit`` or ``integration``.

A ``unit`` test runs in this process alone: no database, no Redis, no Celery worker, no relay,
no child process. ``pytest -m unit`` (``make test-fast``) is then a quick loop that starts no
service. Everything else is ``integration``: it reaches PostgreSQL, Redis, a worker or a relay,
or runs a program (the engine's own commands, ruff, promtool, docker-compose, HAProxy, node).

The layer is worked out from what a test uses, so that it stays true as tests are added:

* a test in a folder whose tests all run a live stack (``tests/integration``, ``tests/chaos``);
* a test that uses, directly or through other fixtures, a fixture that starts or reaches a
  service (``SERVICE_FIXTURES``: every fixture the conftests define on top of ``settings``,
  which starts the embedded PostgreSQL and Redis);
* a test whose body, fixtures, or the helpers of its own test module that it calls, start a
  process (``subprocess``, ``Popen``, pytester's ``runpytest_subprocess``).

A test may say ``@pytest.mark.integration`` itself where the rule cannot see what it reaches.
Saying ``unit`` on a test the rule finds to be ``integration`` leaves it with both, and both,
or neither, stops the run at collection. A ``unit`` test that starts a process or connects to
PostgreSQL or Redis all the same fails, naming what it did.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

LAYERS = ("unit", "integration")

# Folders whose every test runs against a live stack of processes.
SERVICE_DIRS = ("integration", "chaos")

# Fixtures that start or reach a service. ``settings`` starts the embedded PostgreSQL and
# Redis; the others are built on it, or start a stack, a worker or a relay of their own.
SERVICE_FIXTURES = frozenset(
    {
        # tests/conftest.py
        "settings",
        "engine",
        "session",
        "clean_db",
        "committed_sessions",
        # tests/integration/conftest.py (and tests/deploy/conftest.py's own ``stack``)
        "stack",
        "beats",
        "beat",
        "admin",
        # tests/chaos/conftest.py
        "chaos",
        "chaos_engine",
        "chaos_admin",
        # tests/ops/conftest.py
        "worker",
        # tests/web/conftest.py
        "app",
        "api",
        # tests/security/conftest.py
        "app_with",
        "api_server",
        "worker_context",
        "relay",
        "relay_with_own_redis",
    }
)

# Source text that starts a process.
STARTS_A_PROCESS = re.compile(r"\bsubprocess\b|\bPopen\b|runpytest_subprocess|\bos\.(fork|spawn)")

TESTS_ROOT = Path(__file__).resolve().parent.parent


def _in(obj: object, folders: tuple[Path, ...]) -> bool:
    """Whether ``obj`` is defined in a file under one of ``folders`` (the tests' own code,
    not the engine's or a library's)."""
    try:
        source_file = inspect.getsourcefile(obj)
    except TypeError:
        return False
    return source_file is not None and any(
        Path(source_file).resolve().is_relative_to(folder) for folder in folders
    )


def _callees(function: types.FunctionType) -> Iterator[object]:
    """The module-level objects ``function`` names: the helpers it may call."""
    codes = [function.__code__]
    while codes:
        code = codes.pop()
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        for name in code.co_names:
            if name in function.__globals__:
                yield function.__globals__[name]


def _starts_a_process(function: object, folders: tuple[Path, ...], seen: set[object]) -> bool:
    function = inspect.unwrap(function)
    if (
        not isinstance(function, types.FunctionType)
        or function in seen
        or not _in(function, folders)
    ):
        return False
    seen.add(function)
    try:
        if STARTS_A_PROCESS.search(inspect.getsource(function)):
            return True
    except OSError:
        return False
    return any(_starts_a_process(callee, folders, seen) for callee in _callees(function))


def layer_of(item: pytest.Item) -> str:
    """``integration`` when the test reaches a service or starts a process, else ``unit``."""
    path = Path(str(item.path)).resolve()
    if path.is_relative_to(TESTS_ROOT):
        first_folder = path.relative_to(TESTS_ROOT).parts[0]
        if first_folder in SERVICE_DIRS:
            return "integration"
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & SERVICE_FIXTURES:
        return "integration"
    seen: set[object] = set()
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for name in fixtures:
            functions.extend(d.func for d in info.name2fixturedefs.get(name, ()))
    folders = (TESTS_ROOT, path.parent)
    if any(_starts_a_process(f, folders, seen) for f in functions if f is not None):
        return "integration"
    return "unit"


def layers_of(item: pytest.Item) -> list[str]:
    return sorted({m.name for m in item.iter_markers() if m.name in LAYERS})


# First, so that ``-m unit`` selects on the layers given here.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        if not layers_of(item):
            item.add_marker(layer_of(item))
        elif layers_of(item) == ["unit"] and layer_of(item) == "integration":
            item.add_marker("integration")
        if len(layers_of(item)) != 1:
            wrong.append(f"  {item.nodeid}: {' and '.join(layers_of(item)) or 'no layer'}")
    if wrong:
        raise pytest.UsageError(
            "each test is either unit or integration, and these are not:\n" + "\n".join(wrong)
        )


class ReachedOut(AssertionError):
    """A unit test started a process or connected to a service."""


def _refuse(what: str):
    def refused(*_args, **_kwargs):
        raise ReachedOut(f"a unit test {what}: mark it integration (tests/plugins/layers.py)")

    return refused


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if "unit" not in layers_of(item):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", _refuse("started a process"))
        try:
            import psycopg2

            patch.setattr(psycopg2, "connect", _refuse("connected to PostgreSQL"))
        except ImportError:
            pass
        try:
            import redis.connection

            patch.setattr(
                redis.connection.AbstractConnection, "connect", _refuse("connected to Redis")
            )
        except (ImportError, AttributeError):
            pass
        yield
