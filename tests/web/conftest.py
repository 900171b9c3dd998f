from dataclasses import replace

import pytest

from dispatch.users import ensure_bootstrap_admin
from web import create_app


@pytest.fixture(scope="session")
def app(settings):
    # No batch window: each booking is one message, which the tests can count.
    app = create_app(replace(settings, batch_window_s=0))
    app.config["TESTING"] = True
    yield app
    app.extensions["smartroute"].engine.dispose()


class Api:
    """The Flask test client with a bearer token and JSON by default."""

    def __init__(self, client, token: str | None = None):
        self.client, self.token = client, token

    def as_(self, token: str | None) -> "Api":
        return Api(self.client, token)

    def request(self, method: str, path: str, **kwargs):
        headers = kwargs.pop("headers", {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def user(self, role: str, name: str = "someone") -> dict:
        response = self.request("POST", "/v1/users", json={"name": name, "role": role})
        assert response.status_code == 201, response.get_json()
        return response.get_json()


@pytest.fixture
def api(app, clean_db, committed_sessions, settings) -> Api:
    with committed_sessions.begin() as s:
        ensure_bootstrap_admin(s, settings.admin_token)
    return Api(app.test_client(), settings.admin_token)
