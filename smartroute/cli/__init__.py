"""The entry points: the ``smartroute`` command (``smartroute.cli.main``), one module per
command group, and the relay's process (``smartroute.cli.relay``).

This file imports nothing: ``python -m smartroute.cli.relay`` runs it first, and eventlet's
patch of the standard library must come before any other import.
"""
