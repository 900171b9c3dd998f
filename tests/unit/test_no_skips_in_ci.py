"""A CI run with a skipped test fails; a local run with one passes and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = """
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="needs a tool this machine lacks")
def test_needs_a_tool():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # The plugin, from this checkout.
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest('pytest_plugins = ["tests.plugins.no_skips_in_ci"]')
    return pytester


def test_a_skip_fails_a_ci_run_and_names_the_test(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*1 test(s) skipped in CI*", "*test_needs_a_tool*needs a tool this machine lacks*"]
    )


def test_a_skip_is_only_reported_on_a_local_run(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
