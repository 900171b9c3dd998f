"""What the web and worker processes stand on: settings, the database engine, Redis, the
push channel, token caches, metrics and logs. Imports the domain (``dispatch``), never
``web``, ``workers`` or the command line."""
