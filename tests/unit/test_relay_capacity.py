"""The relay's capacity as configured: its own connection cap is the only one."""

import resource

from smartroute.infra.settings import Settings
from web import relay


def test_the_default_cap_holds_a_city_and_eventlets_server_is_told_it():
    settings = Settings.from_env({})
    assert settings.relay_max_connections >= 20000
    # eventlet.wsgi.server's own max_size is 1024 unless given: above the relay's cap it is
    # never the one that turns a driver away.
    assert relay.server_options(settings)["max_size"] > settings.relay_max_connections
    small = Settings.from_env({"SMARTROUTE_RELAY_MAX_CONNECTIONS": "3"})
    assert relay.server_options(small)["max_size"] > 3


def test_the_open_files_limit_is_raised_for_the_cap_within_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        wanted = 512 if hard == resource.RLIM_INFINITY else min(512, hard)
        assert relay.allow_open_files(512) == wanted
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == wanted
        # Never lowered.
        assert relay.allow_open_files(300) == wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
