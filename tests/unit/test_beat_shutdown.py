"""Beat's stop handler runs once: a second signal during its exit is ignored."""

import signal

import pytest

from workers.beat_shutdown import STOP_SIGNALS, stop_once


@pytest.fixture
def restored_handlers():
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_the_first_stop_signal_runs_beats_handler_and_later_ones_are_ignored(restored_handlers):
    synced = []

    def beats_sync(signum, _frame):  # What celery beat installs: save, then exit.
        synced.append(signum)
        raise SystemExit()

    for signum in STOP_SIGNALS:
        signal.signal(signum, beats_sync)
    stop_once(sender=None)

    with pytest.raises(SystemExit):
        signal.raise_signal(signal.SIGINT)
    assert synced == [signal.SIGINT]
    # The supervisor's SIGTERM comes next, during the exit: nothing runs, nothing raises.
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGINT)
    assert synced == [signal.SIGINT]
    # A Python handler, not SIG_IGN, so a signal already on its way is not an error either.
    assert all(callable(signal.getsignal(s)) for s in STOP_SIGNALS)
