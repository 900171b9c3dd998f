"""The relay's process: ``python -m smartroute.cli.relay`` (what ``smartroute relay`` and
``smartroute up`` run).

eventlet must patch the standard library before anything else is imported, or Redis calls
hang and locks made at import stay un-greened. ``web.relay`` sits in a package whose
``__init__`` imports Flask, SQLAlchemy, redis and Celery, so the patch happens here, in a
module that imports nothing before it, inside packages (``smartroute``, ``smartroute.cli``)
that import nothing either (tests/unit/test_relay_entry_point.py).

It patches everything, psycopg2 included: psycopg2 waits on PostgreSQL in C, where
eventlet cannot switch, unless the patch installs eventlet's wait callback. Without it,
one driver action's query would stall every connection of the relay
(tests/integration/test_relay_actions.py holds a row lock to show it).

``SMARTROUTE_RELAY_ASYNC_MODE`` is ``eventlet`` (the default) or ``threading``; both read a
client's message with a limit on the whole message (web.relay_transport). eventlet is the
default because an idle connection costs it about 46 KB and no thread: 10,000 connections held
in 617 MB by one OS thread (``benchmarks/relay_sockets.py``). The threading mode costs about
115 KB and four threads a connection, on Werkzeug's server, which
Flask-SocketIO calls unfit for production; it is there for when eventlet, now in bugfix-only
maintenance, can no longer be used. A relay holds ``SMARTROUTE_RELAY_MAX_CONNECTIONS``
connections at once (20000) and answers the next with a 503; the relay raises its open-files
soft limit to fit them (web.relay.allow_open_files), as far as the hard limit allows.

The relay runs on the C library's allocator (``PYTHONMALLOC=malloc``): the module starts
the interpreter again with it when it is not set, so every way of starting a relay gets it.
A relay that held ten thousand drivers must give their memory back when they leave
(web.relay_memory). CPython's own allocator cannot: it returns a 1 MiB arena only once
every object in it is freed, and the few objects that outlive a crowd of connections (a
resized dict, a cached string) pin most of the arenas it filled. After 10,000 drivers left,
a relay on it kept 307 MB against 122 MB at start; on glibc's allocator, whose free pages
``malloc_trim`` hands back wherever they are, 141 MB against 126
(``benchmarks/relay_sockets.py --sockets 10000``). The CPU a ping costs the relay did not
change (0.024 ms either way, ``benchmarks/relay_locations.py``). An operator's own
``PYTHONMALLOC`` is left as it is.
"""

import os
import sys

if __name__ == "__main__" and "PYTHONMALLOC" not in os.environ:
    # Start again on the C library's allocator, before anything is allocated for good.
    os.execve(
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {**os.environ, "PYTHONMALLOC": "malloc"},
    )

if (os.environ.get("SMARTROUTE_RELAY_ASYNC_MODE") or "eventlet") == "eventlet":
    import eventlet

    eventlet.monkey_patch()

from web.relay import main  # noqa: E402 - after the patch, always.

if __name__ == "__main__":
    main()
