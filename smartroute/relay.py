"""The relay's process: ``python -m smartroute.relay`` (what ``smartroute relay`` and
``smartroute up`` run).

eventlet must patch the standard library before anything else is imported, or Redis calls
hang (Flask-SocketIO #235) and locks made at import stay un-greened. ``web.relay`` sits in
a package whose ``__init__`` imports Flask, SQLAlchemy, redis and Celery, so the patch
happens here, in a module that imports nothing before it.

It patches everything, psycopg2 included: psycopg2 waits on PostgreSQL in C, where
eventlet cannot switch, unless the patch installs eventlet's wait callback. Without it,
one driver action's query would stall every connection of the relay
(tests/integration/test_relay_actions.py holds a row lock to show it).
"""

import os

if (os.environ.get("SMARTROUTE_RELAY_ASYNC_MODE") or "eventlet") == "eventlet":
    import eventlet

    eventlet.monkey_patch()

from web.relay import main  # noqa: E402 - after the patch, always.

if __name__ == "__main__":
    main()
