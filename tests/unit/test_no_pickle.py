"""No pickle anywhere: Celery speaks JSON only and no SmartRoute module imports pickle."""

import ast
from pathlib import Path

import celeryconfig

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dispatch", "web", "workers", "smartroute", "migrations")
UNSAFE = {"pickle", "cPickle", "dill", "shelve", "marshal"}


def test_celery_accepts_and_sends_only_json():
    assert celeryconfig.accept_content == ["json"]
    assert celeryconfig.task_serializer == "json"
    assert getattr(celeryconfig, "result_serializer", "json") == "json"


def test_no_module_imports_an_unsafe_deserialiser():
    found = []
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "celeryconfig.py", ROOT / "beat_schedule.py"]
    assert len(files) > 20
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [(path.name, n) for n in names if n.split(".")[0] in UNSAFE]
    assert not found
