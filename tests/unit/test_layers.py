"""The import contract of pyproject.toml (``[tool.importlinter]``): dependencies point one way,
entry points → web | workers → infrastructure → domain, the domain imports no framework, and
the engine imports nothing of the load tools.

``lint-imports`` checks the repository as it is, and a copy with one wrong import added
shows the check fails and names the contract that broke."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dispatch", "web", "workers", "smartroute")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages in ``where``, not on the installed ones."""
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_the_engine(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", "static"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_repository_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_copy_as_it_is_keeps_them(tmp_path):
    result = lint_imports(copy_of_the_engine(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_domain_importing_the_api_breaks_the_layers(tmp_path):
    copy = copy_of_the_engine(tmp_path)
    (copy / "dispatch" / "_wrong.py").write_text("import web  # noqa: F401\n")
    result = lint_imports(copy)
    assert result.returncode != 0, result.stdout
    assert (
        "Layers: entry points, then web | workers, then infrastructure, then the domain "
        "BROKEN" in result.stdout
    )
    assert "dispatch._wrong -> web" in result.stdout


def test_the_api_importing_the_workers_breaks_the_layers(tmp_path):
    copy = copy_of_the_engine(tmp_path)
    (copy / "web" / "_wrong.py").write_text("from workers import tasks  # noqa: F401\n")
    result = lint_imports(copy)
    assert result.returncode != 0, result.stdout
    assert "web is not allowed to import workers" in result.stdout
    assert "web._wrong -> workers.tasks" in result.stdout


def test_the_domain_importing_redis_breaks_the_forbidden_contract(tmp_path):
    copy = copy_of_the_engine(tmp_path)
    (copy / "dispatch" / "_wrong.py").write_text("import redis  # noqa: F401\n")
    result = lint_imports(copy)
    assert result.returncode != 0, result.stdout
    assert "The domain imports no web framework, task queue or Redis BROKEN" in result.stdout


def test_the_engine_importing_the_load_tools_breaks_their_contract(tmp_path):
    copy = copy_of_the_engine(tmp_path)
    (copy / "workers" / "_wrong.py").write_text("import smartroute_sim  # noqa: F401\n")
    result = lint_imports(copy)
    assert result.returncode != 0, result.stdout
    assert "The engine imports nothing of the load tools BROKEN" in result.stdout
