"""The layer rule (tests/plugins/layers.py): each test ends up unit or integration, never
both or neither, and a unit test cannot reach out unnoticed."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import subprocess
import sys

import pytest


@pytest.fixture
def settings():
    return "the services"


def run_python():
    return subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_pure():
    assert 1 + 1 == 2


def test_with_services(settings):
    assert settings


def test_through_a_helper():
    run_python()


@pytest.mark.integration
def test_said_so():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    integration: i\n")
    return pytester


def layers(result: pytest.RunResult) -> dict[str, str]:
    """Test name -> layer, from a run that prints them."""
    found = {}
    for line in result.outlines:
        if line.startswith("LAYER "):
            _, name, layer = line.split()
            found[name] = layer
    return found


def test_each_test_gets_the_layer_of_what_it_reaches(suite):
    suite.makepyfile(test_suite=SUITE)
    suite.makeconftest(
        "pytest_plugins = ['tests.plugins.layers']\n"
        "import pytest\n"
        "@pytest.hookimpl(trylast=True)\n"
        "def pytest_collection_finish(session):\n"
        "    for item in session.items:\n"
        "        layer = [m.name for m in item.iter_markers() if m.name in LAYERS]\n"
        "        print('LAYER', item.name, ','.join(layer))\n"
        "LAYERS = ('unit', 'integration')\n"
    )
    result = suite.runpytest("--collect-only", "-q", "-s")
    assert layers(result) == {
        "test_pure": "unit",
        "test_with_services": "integration",
        "test_through_a_helper": "integration",
        "test_said_so": "integration",
    }


def test_a_unit_mark_on_a_test_that_reaches_a_service_stops_the_run(suite):
    suite.makeconftest("pytest_plugins = ['tests.plugins.layers']\n")
    suite.makepyfile(
        test_suite="""
import pytest


@pytest.fixture
def settings():
    return "the services"


@pytest.mark.unit
def test_claims_to_be_unit(settings):
    pass
"""
    )
    result = suite.runpytest("-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_claims_to_be_unit: integration and unit*"])


def test_a_unit_test_that_starts_a_process_fails_naming_it(suite):
    suite.makeconftest("pytest_plugins = ['tests.plugins.layers']\n")
    suite.makepyfile(
        test_suite="""
import sys


def test_sneaky():
    # Out of the rule's sight: the module's name is built at run time.
    run = getattr(__import__("sub" + "process"), "run")
    run([sys.executable, "-c", "pass"])
"""
    )
    result = suite.runpytest("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*a unit test started a process*"])
