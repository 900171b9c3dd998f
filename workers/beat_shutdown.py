"""Beat stops on the first signal and ignores the rest.

Celery beat saves its schedule and raises ``SystemExit`` on SIGTERM or SIGINT, on every one
it gets. Ctrl-C in a terminal reaches the whole foreground process group, so under
``smartroute up`` beat gets SIGINT from the terminal and then SIGTERM from the supervisor.
The second one, landing while the interpreter runs its exit callbacks, printed "Exception
ignored in atexit callback" and a traceback on an orderly stop. Once beat is stopping, its
handlers are swapped for one that does nothing (SIGKILL still ends it). Not for SIG_IGN: a
signal that arrived just before the swap, and whose Python handler has yet to run, would
then raise "Signal 15 ignored due to race condition" instead.
"""

from __future__ import annotations

import signal

from celery.signals import beat_init

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@beat_init.connect
def stop_once(**_kwargs) -> None:
    """Wrap the stop handlers beat installed before it started (``install_sync_handler``)."""
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def _first(signum, frame) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, _already_stopping)
        handler = handlers[signum]
        if callable(handler):
            handler(signum, frame)
        else:
            raise SystemExit()

    for signum in STOP_SIGNALS:
        signal.signal(signum, _first)


def _already_stopping(_signum, _frame) -> None:
    """A stop signal after the first: beat is already saving its schedule and exiting."""
