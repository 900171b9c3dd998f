"""/health names the dependency that is down, and recovers when it is back."""

from dataclasses import replace

from smartroute.infra.embedded import redis_socket_path, start_redis, stop_redis
from tests.support import wait_for
from web import create_app


def test_health_is_503_naming_redis_while_it_is_stopped(settings, tmp_path):
    url, started = start_redis(tmp_path)
    assert started
    app = create_app(replace(settings, redis_url=url, broker_url=None))
    client = app.test_client()
    scraper = {"Authorization": f"Bearer {settings.metrics_token}"}

    def health_is(status: int):
        # The checks are cached for a moment: poll until a fresh look says ``status``.
        return wait_for(
            lambda: (r := client.get("/health", headers=scraper)).status_code == status and r,
            10,
            f"/health to answer {status}",
        )

    try:
        health_is(200)

        stop_redis(redis_socket_path(tmp_path))
        body = health_is(503).get_json()
        assert body["status"] == "degraded" and "redis" in body["failing"]
        assert body["redis"]["status"] == "down" and body["database"]["status"] == "ok"
        assert client.get("/health/live").status_code == 200  # The process itself is fine.

        start_redis(tmp_path)
        health_is(200)
    finally:
        stop_redis(redis_socket_path(tmp_path))
        app.extensions["smartroute"].engine.dispose()


def test_health_reports_memory_uptime_and_the_broker(api):
    body = api.request("GET", "/health").get_json()
    assert body["memory"]["rss_mb"] > 0 and body["uptime_s"] >= 0
    assert body["broker"]["status"] == "ok"


def test_debug_mode_cannot_be_switched_on_from_the_environment(settings, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app(settings)
    try:
        assert app.debug is False
        # An unexpected error is a JSON 500 that leaks nothing, not a debugger page.
        app.add_url_rule("/boom", "boom", lambda: 1 / 0)
        response = app.test_client().get("/boom")
        assert response.status_code == 500
        assert response.get_json()["error"] == {
            "code": "internal_error",
            "message": "something went wrong on our side",
        }
    finally:
        app.extensions["smartroute"].engine.dispose()
