"""The code passes ruff's rules and its formatter, and mypy's type checks (the rules, the
reasons for each exception and the modules mypy reads are in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUFF = shutil.which("ruff") or str(BIN / "ruff")
MYPY = str(BIN / "mypy") if (BIN / "mypy").exists() else shutil.which("mypy") or "mypy"


@pytest.mark.skipif(not Path(RUFF).exists(), reason="ruff is not installed (requirements-dev.txt)")
def test_ruff_finds_nothing():
    out = subprocess.run(
        [RUFF, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(not Path(RUFF).exists(), reason="ruff is not installed (requirements-dev.txt)")
def test_the_code_is_formatted_as_ruff_format_writes_it():
    out = subprocess.run(
        [RUFF, "format", "--check", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(
    shutil.which(MYPY) is None, reason="mypy is not installed (requirements-dev.txt)"
)
def test_mypy_finds_nothing():
    # No arguments: mypy checks the files pyproject.toml names, with its settings there.
    out = subprocess.run([MYPY], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
