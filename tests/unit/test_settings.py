import pytest

from smartroute.infra.settings import ConfigError, Settings


def test_default_pools_keep_5_and_open_at_most_20_connections():
    s = Settings.from_env({})
    assert (s.db_pool_size, s.db_pool_size + s.db_max_overflow, s.db_pool_timeout_s) == (5, 20, 30)
    assert s.offer_window_s == 25
    assert s.max_body_bytes == 64 * 1024


def test_variables_are_read():
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://db/x",
            "SMARTROUTE_OFFER_WINDOW_S": "9",
            "SMARTROUTE_MATCH_RADIUS_KM": "2.5",
        }
    )
    assert (s.database_url, s.offer_window_s, s.match_radius_km) == ("postgresql://db/x", 9, 2.5)


@pytest.mark.parametrize(
    "name,value",
    [
        ("SMARTROUTE_OFFER_WINDOW_S", "soon"),
        ("SMARTROUTE_OFFER_WINDOW_S", "0"),
        ("SMARTROUTE_LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_are_named(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_broker_defaults_to_redis_and_speaks_kombu_for_sockets():
    assert (
        Settings.from_env({"REDIS_URL": "redis://h:6379/0"}).celery_broker_url == "redis://h:6379/0"
    )
    assert (
        Settings.from_env({"REDIS_URL": "unix:///tmp/r.sock"}).celery_broker_url
        == "redis+socket:///tmp/r.sock"
    )
    assert (
        Settings.from_env(
            {"REDIS_URL": "redis://a", "CELERY_BROKER_URL": "amqp://b"}
        ).celery_broker_url
        == "amqp://b"
    )


def test_no_broker_is_a_clear_error():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        _ = Settings.from_env({}).celery_broker_url


def test_the_relays_limits_are_checked_when_read():
    assert Settings.from_env({}).relay_action_limit_per_token == "60/minute"
    assert (
        Settings.from_env({"SMARTROUTE_RELAY_MAX_CONNECTIONS": "4096"}).relay_max_connections
        == 4096
    )
    with pytest.raises(ConfigError, match="SMARTROUTE_RELAY_ACTION_LIMIT_PER_TOKEN"):
        Settings.from_env({"SMARTROUTE_RELAY_ACTION_LIMIT_PER_TOKEN": "lots"})
    with pytest.raises(ConfigError, match="SMARTROUTE_RELAY_MAX_CONNECTIONS"):
        Settings.from_env({"SMARTROUTE_RELAY_MAX_CONNECTIONS": "0"})


@pytest.mark.parametrize("token", ["12345", "x" * 31])
def test_a_short_admin_token_is_refused_by_name(token):
    with pytest.raises(ConfigError, match="SMARTROUTE_ADMIN_TOKEN"):
        Settings.from_env({"SMARTROUTE_ADMIN_TOKEN": token})


def test_an_admin_token_of_32_characters_is_taken():
    assert Settings.from_env({"SMARTROUTE_ADMIN_TOKEN": "x" * 32}).admin_token == "x" * 32


PORTO = "porto:41.0,-8.8,41.3,-8.5"


def test_the_ride_settings_have_their_defaults_and_are_read():
    default = Settings.from_env({})
    assert (default.no_show_wait_s, default.start_timeout_s, default.max_ride_s) == (
        300,
        1800,
        4 * 3600,
    )
    assert default.stuck_ride_action("default") == "rematch"
    read = Settings.from_env(
        {
            "SMARTROUTE_NO_SHOW_WAIT_S": "120",
            "SMARTROUTE_START_TIMEOUT_S": "600",
            "SMARTROUTE_MAX_RIDE_S": "7200",
            "SMARTROUTE_STUCK_EVERY_S": "5",
        }
    )
    assert (read.no_show_wait_s, read.start_timeout_s, read.max_ride_s, read.stuck_every_s) == (
        120,
        600,
        7200,
        5.0,
    )


def test_the_stuck_ride_policy_is_set_for_all_regions_then_by_region():
    settings = Settings.from_env(
        {"SMARTROUTE_REGIONS": PORTO, "SMARTROUTE_STUCK_RIDE_POLICY": "rematch, porto=cancel"}
    )
    assert settings.stuck_ride_action("porto") == "cancel"
    assert settings.stuck_ride_action("default") == "rematch"
    everywhere = Settings.from_env({"SMARTROUTE_STUCK_RIDE_POLICY": "cancel"})
    assert everywhere.stuck_ride_action("default") == "cancel"


@pytest.mark.parametrize(
    "policy,complaint",
    [
        ("sometimes", "not one of rematch, cancel"),
        ("porto=cancel", "the first entry is an action for every region"),
        ("rematch,cancel", "the first entry is an action for every region"),
        ("rematch,lisbon=cancel", "no region named 'lisbon'"),
        ("rematch,porto=later", "not one of rematch, cancel"),
    ],
)
def test_a_bad_stuck_ride_policy_is_named(policy, complaint):
    with pytest.raises(ConfigError, match=f"SMARTROUTE_STUCK_RIDE_POLICY: .*{complaint}"):
        Settings.from_env({"SMARTROUTE_REGIONS": PORTO, "SMARTROUTE_STUCK_RIDE_POLICY": policy})


def test_the_relays_redis_pool_is_configurable_and_checked():
    settings = Settings.from_env(
        {"SMARTROUTE_RELAY_REDIS_CONNECTIONS": "8", "SMARTROUTE_RELAY_REDIS_WAIT_S": "2.5"}
    )
    assert (settings.relay_redis_connections, settings.relay_redis_wait_s) == (8, 2.5)
    with pytest.raises(ConfigError, match="SMARTROUTE_RELAY_REDIS_CONNECTIONS"):
        Settings.from_env({"SMARTROUTE_RELAY_REDIS_CONNECTIONS": "1"})
    with pytest.raises(ConfigError, match="SMARTROUTE_RELAY_REDIS_WAIT_S"):
        Settings.from_env({"SMARTROUTE_RELAY_REDIS_WAIT_S": "soon"})


def test_rebalancing_settings_are_read_and_a_share_above_one_is_refused():
    s = Settings.from_env(
        {"SMARTROUTE_REBALANCE_EVERY_S": "45", "SMARTROUTE_REBALANCE_MAX_SHARE": "0.5"}
    )
    assert (s.rebalance_every_s, s.rebalance_max_share) == (45.0, 0.5)
    assert Settings.from_env({}).rebalance_every_s == 30.0
    with pytest.raises(ConfigError, match="SMARTROUTE_REBALANCE_MAX_SHARE"):
        Settings.from_env({"SMARTROUTE_REBALANCE_MAX_SHARE": "1.5"})


def test_the_engine_rebalances_by_default_with_the_policy_the_replay_judges():
    """``bench matching`` judges ``RebalancePolicy()``; the engine's defaults are the same."""
    from dispatch.rebalancing import RebalancePolicy

    judged = RebalancePolicy()
    for settings in (Settings(), Settings.from_env({})):
        assert (
            settings.rebalance_cell_km,
            settings.rebalance_horizon_s,
            settings.rebalance_max_move_km,
            settings.rebalance_max_share,
        ) == (judged.cell_km, judged.horizon_s, judged.max_move_km, judged.max_share)
