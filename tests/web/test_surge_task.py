"""Beat's surge task: scheduled, and moving each region's multiplier with demand, run
in-process on the test services as a worker would run it."""

from __future__ import annotations

from beat_schedule import beat_schedule
from smartroute.infra import snapshots
from tests import factories as make
from tests.security.conftest import worker_context  # noqa: F401 - the in-process task context


def test_beat_recomputes_surge_on_its_own_interval(settings):
    entry = beat_schedule(settings)["refresh-surge"]
    assert entry["task"] == "workers.tasks.refresh_surge"
    assert entry["schedule"] == settings.surge_every_s
    assert entry["options"]["queue"] == "maintenance"


def test_the_task_moves_surge_with_demand_and_the_stats_snapshot_shows_it(
    worker_context,  # noqa: F811
    committed_sessions,
    now,
):
    from workers import tasks

    assert tasks.refresh_surge() == {"default": 100}  # nobody booking
    with committed_sessions.begin() as s:
        make.driver(s, now=now)
        for i in range(4):
            make.booking(s, make.rider(s, f"r{i}"), now=now)
    # Four waiting against one free driver: ×3 (the cap), reached half-way at a time.
    assert tasks.refresh_surge() == {"default": 200}
    assert tasks.refresh_surge() == {"default": 250}
    tasks.refresh_stats()
    cached = snapshots.load(tasks.cache(), snapshots.STATS_KEY)
    assert cached["surge"]["default"]["multiplier"] == 2.5
    assert cached["surge"]["default"]["demand"] == 4
