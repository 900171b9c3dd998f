"""The relay's process patches the standard library before anything else is imported: the
packages on its way (``smartroute``, ``smartroute.cli``) import nothing themselves."""

import subprocess
import sys

# Anything that makes sockets, locks or threads at import, and the frameworks that pull them.
EARLY = (
    "redis",
    "psycopg2",
    "requests",
    "sqlalchemy",
    "flask",
    "celery",
    "kombu",
    "socketio",
    "click",
    "web",
    "workers",
    "dispatch",
)


def test_python_m_smartroute_cli_relay_imports_nothing_before_the_patch():
    probe = (
        "import sys; import smartroute.cli; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {EARLY!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
