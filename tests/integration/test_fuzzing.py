"""schemathesis against the live API: no 500s, no answer that breaks /openapi.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import new_user, online_driver

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.slow
@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed")
@pytest.mark.parametrize("role", ["rider", "driver", "admin"])
def test_the_api_survives_fuzzing_and_keeps_to_its_schema(admin, stack, role, tmp_path):
    if role == "admin":
        client = admin
    elif role == "driver":
        client = online_driver(admin, 38.72, -9.14)
    else:
        client = new_user(admin, role)
    token = client.http.headers["Authorization"]
    out = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{stack.url}/openapi.json",
            "-H",
            f"Authorization: {token}",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--checks",
            "all",
            # A pickup time must lie between five minutes ago and thirty days ahead: a rule of
            # the clock that a schema cannot state, so schema-valid times can still be refused.
            "--exclude-checks",
            "positive_data_acceptance",
            # Revoking tokens (the only DELETEs) would sign the fuzzer out mid-run, or revoke the
            # admin it runs as, and so would refreshing (it revokes the token it is given);
            # tests/web/test_tokens.py and tests/security cover them.
            "--exclude-method",
            "DELETE",
            "--exclude-path",
            "/v1/tokens",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
