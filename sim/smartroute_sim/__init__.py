"""SmartRoute's load tools, outside the engine: the demo, the load generator (``bench e2e``),
the city simulation (``simulate``) and the offline matching replay (``bench matching``).

Every one of them drives the engine through the same two parts: ``client`` (the HTTP API as
an app calls it) and ``driver`` (a driver's app: relay connection, offers, steps, pings).
The ``smartroute`` command finds the commands and the demo through entry points, so a
production install of the engine carries none of this.
"""
