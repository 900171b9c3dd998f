"""What Prometheus and Grafana are given: the files under deploy/ are valid, every metric
they read is exported by a live engine, each endpoint wants the metrics token, and the
API's numbers add up across its processes whichever process answers."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from smartroute.infra.metrics import scrape_allowed
from smartroute.infra.settings import ConfigError, Settings
from tests.deploy.conftest import AUTH, METRICS_TOKEN
from tests.integration.conftest import new_user, online_driver
from tests.support import free_port, wait_for
from workers.metrics_server import guarded

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool") or next(
    (str(p) for p in [ROOT / ".ci" / "bin" / "promtool"] if p.exists()), None
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (.ci/run fetches it)"
)

CENTRE = (38.7223, -9.1393)
TRIP = {"pickup": {"lat": CENTRE[0], "lng": CENTRE[1]}, "dropoff": {"lat": 38.75, "lng": -9.15}}


# What the dashboards and alerts read.

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
# Series Prometheus makes itself for every target; no endpoint exports them.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names in braces or grouping lists, or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # Label values may hold anything.
    expr = re.sub(r"\{[^}]*\}", "", expr)  # Label matchers.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # Range selectors and subqueries.
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def dashboard_exprs() -> list[str]:
    exprs = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [target["expr"] for target in panel.get("targets", [])]
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def wanted_metrics() -> set[str]:
    return {n for e in dashboard_exprs() + alert_exprs() for n in metric_names(e)} - SYNTHETIC


def test_metric_names_are_read_out_of_promql():
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, route) (rate(http_x_bucket{status=~"5..", '
        'route="/a{b}"}[$__rate_interval]))) / on (job) group_left max(b:c) > bool 0.5 '
        "and up == 0 or absent(d_total offset 5m)"
    ) == {"http_x_bucket", "b:c", "up", "d_total"}


def test_the_dashboard_and_alerts_read_metrics():
    # An empty set would make the live test below pass on nothing.
    assert len(dashboard_exprs()) >= 15 and len(alert_exprs()) >= 5
    assert {
        "smartroute_bookings_created_total",
        "smartroute_push_latency_seconds_bucket",
        "smartroute_workers_alive",
        "smartroute_queue_depth",
        "database_connections_active",
    } <= wanted_metrics()


# The files under deploy/.


@needs_promtool
def test_alert_rules_pass_promtool_and_their_unit_tests():
    for argv in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            [PROMTOOL, *argv], cwd=DEPLOY / "prometheus", capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_prometheus_config_passes_promtool(tmp_path):
    # promtool checks that the token file exists: Compose's secret is not here, so the
    # config is checked as written with that one path moved to a file that is.
    token = tmp_path / "metrics_token"
    token.write_text(METRICS_TOKEN)
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert config.count("credentials_file: /run/secrets/metrics_token") == 3
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/run/secrets/metrics_token", str(token))
    )
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    done = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_prometheus_finds_every_replica_of_each_service_and_presents_the_token():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"api", "worker", "relay"}
    for name, port in (("api", 8000), ("worker", 9808), ("relay", 8001)):
        job = jobs[name]
        assert job["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}
        assert job["dns_sd_configs"] == [
            {"names": [name], "type": "A", "port": port, "refresh_interval": "30s"}
        ]
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_provisions_the_data_source_the_dashboard_names():
    grafana = DEPLOY / "grafana"
    sources = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    providers = yaml.safe_load((grafana / "provisioning/dashboards/smartroute.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((grafana / "dashboards/smartroute.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel


# Who may scrape.


def test_only_the_metrics_token_may_scrape():
    token = METRICS_TOKEN
    assert scrape_allowed(token, f"Bearer {token}")
    assert scrape_allowed(token, f"bearer {token}")
    assert not scrape_allowed(token, None)
    assert not scrape_allowed(token, "Bearer ")
    assert not scrape_allowed(token, f"Basic {token}")
    assert not scrape_allowed(token, f"Bearer {token}x")
    assert not scrape_allowed(token, "Bearer " + token[:-1])
    # No token configured: nobody, whatever they present.
    assert not scrape_allowed(None, "Bearer ")
    assert not scrape_allowed(None, "Bearer None")
    assert not scrape_allowed("", "Bearer ")


def test_the_worker_metrics_port_is_a_tcp_port_or_nothing():
    assert Settings.from_env({}).worker_metrics_port is None
    assert Settings.from_env({"SMARTROUTE_WORKER_METRICS_PORT": " "}).worker_metrics_port is None
    configured = Settings.from_env(
        {"SMARTROUTE_WORKER_METRICS_PORT": "9808", "SMARTROUTE_WORKER_METRICS_HOST": "0.0.0.0"}
    )
    assert (configured.worker_metrics_port, configured.worker_metrics_host) == (9808, "0.0.0.0")
    assert Settings.from_env({}).worker_metrics_host == "127.0.0.1"
    for bad in ("0", "65536", "metrics"):
        with pytest.raises(ConfigError, match="SMARTROUTE_WORKER_METRICS_PORT"):
            Settings.from_env({"SMARTROUTE_WORKER_METRICS_PORT": bad})


def test_each_start_path_empties_a_multiprocess_folder_of_its_own(tmp_path, monkeypatch):
    from smartroute.cli.processes import own_metrics_env as _own_metrics_env

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings = Settings(data_dir=tmp_path)
    stale = tmp_path / "metrics-worker-worker@_h"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"a dead run's numbers")
    folders = [
        _own_metrics_env(settings, name)["PROMETHEUS_MULTIPROC_DIR"]
        for name in ("api-8000", "worker-worker@%h", "relay-8001", "worker-a/b")
    ]
    assert [Path(f).name for f in folders] == [
        "metrics-api-8000",
        "metrics-worker-worker@_h",
        "metrics-relay-8001",
        "metrics-worker-a_b",
    ]
    assert all(Path(f).is_dir() and not any(Path(f).iterdir()) for f in folders)
    # The operator's own folder is theirs: neither replaced nor emptied.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(stale))
    (stale / "counter_1.db").write_bytes(b"theirs")
    assert _own_metrics_env(settings, "worker-worker@%h") == {}
    assert (stale / "counter_1.db").exists()


def test_the_worker_endpoint_answers_401_without_the_token():
    def metrics_app(_environ, start_response):
        start_response("200 OK", [])
        return [b"secret numbers"]

    def call(token, header):
        statuses = []
        body = b"".join(
            guarded(metrics_app, token)(
                {"HTTP_AUTHORIZATION": header} if header else {},
                lambda status, _headers: statuses.append(status),
            )
        )
        return statuses[0].split()[0], body

    assert call(METRICS_TOKEN, f"Bearer {METRICS_TOKEN}") == ("200", b"secret numbers")
    for token, header in (
        (METRICS_TOKEN, None),
        (METRICS_TOKEN, "Bearer wrong"),
        (None, "Bearer "),
        (None, None),
    ):
        status, body = call(token, header)
        assert status == "401" and b"secret" not in body


def scrape(url: str) -> dict[str, float]:
    """Every sample of ``url``'s exposition by name and labels, e.g. 'a_total{x="1"}'."""
    response = requests.get(f"{url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: dict[str, float], name: str, **labels) -> float:
    def matches(key: str) -> bool:
        sample_name, _, sample_labels = key.partition("{")
        have = json.loads("{" + sample_labels)
        return sample_name == name and all(have.get(k) == v for k, v in labels.items())

    return sum(value for key, value in samples.items() if matches(key))


def names(samples: dict[str, float]) -> set[str]:
    return {key.partition("{")[0] for key in samples}


@pytest.mark.slow
def test_worker_and_relay_endpoints_refuse_scrapes_without_the_token(stack):
    for url in (stack.worker_metrics_url, stack.relay_url):
        for headers in (
            {},
            {"Authorization": "Bearer not-the-metrics-token"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
        ):
            refused = requests.get(f"{url}/metrics", headers=headers, timeout=10)
            assert refused.status_code == 401, (url, headers, refused.text)
            assert "smartroute_" not in refused.text
        assert requests.get(f"{url}/metrics", headers=AUTH, timeout=10).status_code == 200


@pytest.mark.slow
def test_every_metric_the_dashboard_and_alerts_read_is_exported_by_a_live_engine(
    stack, admin, listeners
):
    drivers = [
        online_driver(admin, CENTRE[0] + 0.002 * (i + 1), CENTRE[1], f"d{i}") for i in range(3)
    ]
    feeds = [listeners(driver.token) for driver in drivers]
    rider = new_user(admin, "rider")
    booked = [rider.call("POST", "/v1/bookings", expect=202, json=TRIP)["id"] for _ in range(2)]
    # A repeat with the same idempotency key is the same booking, not a new one.
    again = [
        rider.call(
            "POST",
            "/v1/bookings",
            expect=202,
            json=TRIP,
            headers={"Idempotency-Key": "same-booking"},
        )["id"]
        for _ in range(2)
    ]
    assert again[0] == again[1]
    booked.append(again[0])
    offers = {}
    for feed, driver in zip(feeds, drivers, strict=True):
        _, offer = feed.next("new_assignment")
        offers[driver.id] = (feed, offer["id"])
    assert sorted(booking for _, booking in offers.values()) == sorted(booked)
    # A driver acts over its connection; a reconnecting one is replayed what it missed.
    feed, booking_id = next(iter(offers.values()))
    answer = feed.client.call(
        "driver_action", {"booking_id": booking_id, "action": "accept"}, timeout=20
    )
    assert answer["booking"]["status"] == "accepted", answer
    listeners(drivers[0].token, last_event_id=0).next("new_assignment")
    # A 4xx for the API's statuses, and a task that raises for the worker's failures.
    requests.get(f"{stack.url}/v1/bookings", timeout=10)
    stack.celery.send_task("workers.tasks.mark_drivers_offline", args=[], queue="maintenance")

    def worker_saw_the_failure():
        samples = scrape(stack.worker_metrics_url)
        return samples if total(samples, "smartroute_task_failures_total") else None

    worker = wait_for(worker_saw_the_failure, 20, "the failed task on the worker's /metrics")
    # The pool's children run every task; the main process serving /metrics runs none.
    assert total(worker, "smartroute_tasks_total", state="success") >= len(booked)
    assert total(worker, "smartroute_task_failures_total", task="mark_drivers_offline") == 1
    assert total(worker, "smartroute_match_outcomes_total", outcome="assigned") == len(booked)
    assert (
        total(worker, "smartroute_push_latency_seconds_count")
        == total(worker, "smartroute_pushes_total")
        > 0
    )
    assert {
        "smartroute_task_duration_seconds_bucket",
        "smartroute_queue_depth",
        "database_connections_active",
    } <= names(worker)

    api = scrape(stack.url)
    assert total(api, "smartroute_bookings_created_total", region="default") == len(booked)
    assert total(api, "smartroute_workers_alive") >= 1
    assert total(api, "http_request_duration_seconds_count", status="401") >= 1

    def relay_caught_up():
        relay = scrape(stack.relay_url)
        pushed = total(scrape(stack.worker_metrics_url), "smartroute_pushes_total")
        return relay if total(relay, "smartroute_relay_pushes_total") == pushed else None

    # Every push the workers delivered reached the one relay; its replays are not pushes.
    relay = wait_for(relay_caught_up, 20, "the relay to count every push")
    assert total(relay, "smartroute_relay_connections", kind="driver") == len(feeds) + 1
    assert total(relay, "smartroute_relay_replayed_total") >= 1
    assert (
        total(relay, "smartroute_relay_driver_actions_total", action="accept", outcome="done") == 1
    )

    exported = names(api) | names(worker) | names(relay)
    assert wanted_metrics() - exported == set()


# The API on its own start path: `smartroute api` with several gunicorn processes.


@contextlib.contextmanager
def api_command(settings, data_dir: Path):
    """``smartroute api`` with three processes, PROMETHEUS_MULTIPROC_DIR unset; yields its
    URL and the multiprocess folder it should have made (already holding a dead run's
    file, which a scrape would trip on if it were not emptied)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {
        **settings.to_env(),
        "SMARTROUTE_DATA_DIR": str(data_dir),
        "SMARTROUTE_METRICS_TOKEN": METRICS_TOKEN,
        "SMARTROUTE_LOG_FORMAT": "json",
    }
    folder = data_dir / f"metrics-api-{port}"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"a dead run's numbers")
    log = data_dir / "api.log"
    with open(log, "wb") as out:
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smartroute",
                "api",
                "--port",
                str(port),
                "--processes",
                "3",
                "--threads",
                "4",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: cli.poll() is not None or _answers(url), 60, "the API to start")
        assert cli.poll() is None, log.read_text()
        assert not (folder / "counter_999999.db").exists()
        yield url, folder
    finally:
        os.killpg(cli.pid, signal.SIGTERM)
        try:
            cli.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/metrics", headers=AUTH, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def not_found_many(url: str, count: int) -> None:
    """``count`` requests for a page that does not exist, eight at a time on new connections,
    so gunicorn's processes share them."""
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda _: requests.get(f"{url}/no-such-page", timeout=10).status_code, range(count)
            )
        )
    assert statuses == [404] * count


def not_found_counted(url: str) -> float:
    return total(
        scrape(url), "http_request_duration_seconds_count", route="unmatched", status="404"
    )


@pytest.mark.slow
def test_the_api_counts_every_process_s_requests_whichever_process_answers(settings, tmp_path):
    with api_command(settings, tmp_path) as (url, folder):

        def served_by_each() -> list[float]:
            counts = []
            for path in folder.glob("histogram_*.db"):
                for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
                    counts += [
                        s.value
                        for s in metric.samples
                        if s.name == "http_request_duration_seconds_count"
                        and s.labels["route"] == "unmatched"
                    ]
            return [c for c in counts if c]

        # Which process accepts a connection is the kernel's choice: on a busy machine one
        # can take a whole round, so send rounds until two processes have served some.
        sent = 0
        while sent < 1200 and (sent == 0 or len(served_by_each()) < 2):
            not_found_many(url, 120)
            sent += 120
        assert len(served_by_each()) >= 2, "the requests did not spread over two processes"
        # Each scrape on a new connection, so different processes answer them.
        assert [not_found_counted(url) for _ in range(9)] == [sent] * 9


@pytest.mark.slow
@pytest.mark.chaos
def test_a_killed_api_process_keeps_its_counts_and_leaves_the_live_gauges(settings, tmp_path):
    with api_command(settings, tmp_path) as (url, folder):
        not_found_many(url, 60)

        # Each process's database_connections_active. A process still booting (or one
        # gunicorn replaced on a busy machine) writes its file a moment later.
        def three_live_files():
            found = sorted(folder.glob("gauge_livesum_*.db"))
            return found if len(found) == 3 else None

        live = wait_for(three_live_files, 30, "a live gauge file per process")
        victim = int(live[0].stem.removeprefix("gauge_livesum_"))
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: not (folder / f"gauge_livesum_{victim}.db").exists(),
            20,
            "gunicorn to mark the killed process dead (child_exit)",
        )
        assert not_found_counted(url) == 60


@pytest.mark.slow
@pytest.mark.chaos
def test_a_killed_pool_process_leaves_the_worker_s_live_gauges(stack):
    folder = stack.folders["worker-obs"]

    def children_with_gauges() -> list[int]:
        # Sweeps that use the database, so each child that runs one has a pool gauge.
        for _ in range(4):
            stack.celery.send_task("workers.tasks.lapse_offers", queue="maintenance")
        return [
            pid for pid in stack.worker_children() if (folder / f"gauge_livesum_{pid}.db").exists()
        ]

    victim = wait_for(children_with_gauges, 20, "a pool process with a live gauge")[0]
    os.kill(victim, signal.SIGKILL)  # As the hard time limit or the OOM killer would.
    wait_for(lambda: victim not in stack.worker_children(), 20, "the pool to notice")
    scrape(stack.worker_metrics_url)
    assert not (folder / f"gauge_livesum_{victim}.db").exists()
    assert total(scrape(stack.worker_metrics_url), "smartroute_tasks_total") > 0
