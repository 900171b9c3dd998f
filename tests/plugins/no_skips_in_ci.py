"""In CI, a skipped test fails the run.

Tests that need a tool from outside PyPI (Chromium, node, docker-compose, promtool, HAProxy,
PgBouncer) skip, saying why, when it is missing: a laptop without them can still run the
rest. CI installs every one of them (`.ci/run`), so there a skip means a check silently not
made, and the run must not go green. CI is told apart by the ``CI=true`` it sets.
"""

from __future__ import annotations

import os

import pytest


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    reporter.write_line(
        f"{len(skipped)} test(s) skipped in CI, where nothing may be: "
        "install what they need (.ci/run)",
        red=True,
    )
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reporter.write_line(f"  {report.nodeid}: {reason}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
