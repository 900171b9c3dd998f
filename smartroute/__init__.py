"""SmartRoute's runtime: settings, logging, embedded services and the ``smartroute`` command."""
