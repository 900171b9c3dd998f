"""Python's garbage collector in long-running server processes.

A full collection walks every object the collector tracks, and every thread of the
process waits while it does. An API process holds about 120,000 such objects once its
app is loaded (Flask, SQLAlchemy, the models, the libraries): a full collection of them
takes 30 ms or more, and a request arriving meanwhile answers that much later. What is
loaded before a process serves lives as long as the process, so it is collected once
and moved out of the collector's reach (``gc.freeze``); later collections walk only what
requests and tasks allocate.
"""

from __future__ import annotations

import gc


def freeze_loaded_objects() -> None:
    """Collect once, then keep everything alive now out of every later collection. Call
    it when a process has loaded what it serves with, before it serves."""
    gc.collect()
    gc.freeze()
