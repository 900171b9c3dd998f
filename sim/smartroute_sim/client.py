"""The engine's HTTP API as an app calls it: the one client of the demo, the load generator,
the city simulation and the chaos suite's load.

A client knows one or several API servers (``Endpoints``): it stays on one while it answers
and moves to the next when it cannot be reached, as an app given a list of hosts does. It
sends the bearer token it was made with (or one given per call), keeps one keep-alive
session per thread (requests sessions are not thread-safe), and retries once, when asked,
a request whose connection broke. Whoever wants every answer (the chaos suite's invariant
checks) passes ``observe``: it is called with an ``Answer`` for each attempt.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
import urllib3
from requests.adapters import HTTPAdapter

HTTP_TIMEOUT_S = 10.0
# Set-up requests (users, a driver going online) may meet an API server that has just found
# its pooled database connections dead; an app tries again.
SET_UP_TIMEOUT_S = 30.0
SET_UP_TRIES = 5


@dataclass
class Answer:
    """One answer (or failure to answer) and how long it took."""

    path: str
    status: int | None  # None: no answer at all (refused, reset or timed out).
    started: float  # time.monotonic() when the request was sent.
    seconds: float
    code: str | None = None  # The error body's code, for an error in JSON.
    url: str | None = None  # The server asked (an API's or, for driver actions, a relay's).
    # With no answer: "unsent" (the connection was refused: the server never saw it) or
    # "cut" (sent, then the connection failed or timed out: it may or may not have run).
    failure: str | None = None


def failure_of(exc: requests.RequestException) -> str:
    """Whether a failed request never left ("unsent") or may have run ("cut")."""
    if isinstance(exc, requests.ConnectTimeout):
        return "unsent"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.ConnectionError) and isinstance(
        reason, urllib3.exceptions.NewConnectionError
    ):
        return "unsent"
    return "cut"


def error_of(response: requests.Response) -> dict:
    """The error object of an error answer in JSON, else an empty one."""
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        error = response.json().get("error")
        return error if isinstance(error, dict) else {}
    return {}


class Endpoints:
    """One client's view of a service's servers: it stays on one while it can reach it,
    and moves to the next when it cannot."""

    def __init__(self, urls: list[str] | str, start: int = 0) -> None:
        self.urls = [u.rstrip("/") for u in ([urls] if isinstance(urls, str) else urls)]
        self.index = start % len(self.urls)
        self.lock = threading.Lock()

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def unreachable(self, url: str) -> None:
        with self.lock:
            if self.urls[self.index] == url:
                self.index = (self.index + 1) % len(self.urls)


class _Sent:
    """Requests sent by a client and every copy of it made by ``with_token``."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.n += 1


class Api:
    """The engine's HTTP API at ``urls`` (one or several servers), as the user of ``token``.

    Paths are the API's own (``/v1/bookings``)."""

    def __init__(
        self,
        urls: list[str] | str,
        token: str | None = None,
        *,
        start: int = 0,
        timeout_s: float = HTTP_TIMEOUT_S,
        observe: Callable[[Answer], None] | None = None,
    ) -> None:
        self.endpoints = Endpoints(urls, start)
        self.token = token
        self.timeout_s = timeout_s
        self.observe = observe
        self._local = threading.local()
        self._sent = _Sent()

    @property
    def base_url(self) -> str:
        return self.endpoints.current

    @property
    def sent(self) -> int:
        """Requests sent so far (retries included), by this client and its copies."""
        return self._sent.n

    def with_token(self, token: str) -> Api:
        """The same client (servers, sessions, count) acting as another user: a fleet of
        thousands shares a few keep-alive connections instead of opening one each."""
        other = copy.copy(self)
        other.token = token
        return other

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
            self._local.session = session
        return session

    def call(
        self,
        method: str,
        path: str,
        json: dict | None = None,
        *,
        headers: dict | None = None,
        token: str | None = None,
        retry: bool = False,
        timeout_s: float | None = None,
    ) -> requests.Response:
        """One request; with ``retry``, once more if the connection broke (gunicorn closes
        idle keep-alive connections, and a request can race that close; or the server went
        away and the next one is asked). Retry only what is safe to send twice: location
        pings, driver actions, bookings with an Idempotency-Key."""
        token = token or self.token
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        for attempt in (1, 2):
            url = self.endpoints.current
            self._sent.add()
            started = time.monotonic()
            try:
                response = self._session().request(
                    method,
                    url + path,
                    json=json,
                    headers=headers,
                    timeout=timeout_s or self.timeout_s,
                )
            except requests.RequestException as exc:
                if self.observe is not None:
                    self.observe(
                        Answer(
                            path,
                            None,
                            started,
                            time.monotonic() - started,
                            url=url,
                            failure=failure_of(exc),
                        )
                    )
                self.endpoints.unreachable(url)
                if retry and attempt == 1 and isinstance(exc, requests.ConnectionError):
                    continue
                raise
            if self.observe is not None:
                self.observe(
                    Answer(
                        path,
                        response.status_code,
                        started,
                        time.monotonic() - started,
                        error_of(response).get("code"),
                        url=url,
                    )
                )
            return response
        raise AssertionError("unreachable")

    def answer(
        self, method: str, path: str, json: dict | None = None, **kwargs
    ) -> requests.Response | None:
        """``call``, with None when nothing answered (refused, reset or timed out)."""
        try:
            return self.call(method, path, json, **kwargs)
        except requests.RequestException:
            return None

    def ok(self, method: str, path: str, json: dict | None = None, **kwargs) -> dict:
        """A request that must succeed (set-up, the demo): tried again on a 503 a few
        times, as an app would, then any error status raised; the JSON body returned."""
        kwargs.setdefault("timeout_s", SET_UP_TIMEOUT_S)
        for _ in range(SET_UP_TRIES):
            response = self.call(method, path, json, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(0.2)
        response.raise_for_status()
        return response.json()

    def create_user(self, role: str, name: str) -> tuple[int, str]:
        """A new user (this client acting as an admin): its id and token."""
        body = self.ok("POST", "/v1/users", {"name": name, "role": role})
        return body["id"], body["token"]
