"""SmartRoute's domain: bookings, drivers, offers and matching.

Nothing here imports Flask, Celery or Socket.IO, so the same code runs in a worker,
a benchmark and a simulator. Functions that take a session never commit: the
caller owns the transaction.
"""
