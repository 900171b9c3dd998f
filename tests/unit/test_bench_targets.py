"""The benchmark's verdict on a result: every performance target, the ratio included."""

from smartroute_sim.e2e import targets_met

PASSING = {
    "accept_p99_ms": 40.0,
    "push_p99_ms": 200.0,
    "book_to_push_p99_ms": 900.0,
    "batch_window_s": 0.25,
    "lost": 0,
    "bookings": 100,
    "double_assigned": 0,
    "max_rss_mb": 130.0,
    "rate_offered": 600.0,
    "rate_sustained": 600.0,
    "ratio": 0.6,
}


def test_a_result_within_every_target_meets_them_all():
    assert targets_met(PASSING) == dict.fromkeys(
        (
            "accept_p99",
            "push_p99",
            "nothing_lost",
            "no_double_assignment",
            "rss_under_200mb",
            "kept_up",
            "ratio",
            "all",
        ),
        True,
    )


def test_each_target_missed_on_its_own_fails_the_result():
    for key, value, target in [
        ("accept_p99_ms", 50.1, "accept_p99"),
        ("push_p99_ms", 1501.0, "push_p99"),
        # Send → push may take the batch window and 1.5 s more, no longer.
        ("book_to_push_p99_ms", 1751.0, "push_p99"),
        ("lost", 1, "nothing_lost"),
        ("double_assigned", 1, "no_double_assignment"),
        ("max_rss_mb", 200.0, "rss_under_200mb"),
        ("rate_sustained", 569.0, "kept_up"),
        ("ratio", 0.052, "ratio"),
        ("ratio", None, "ratio"),
    ]:
        checks = targets_met({**PASSING, key: value})
        assert [k for k, ok in checks.items() if not ok] == [target, "all"], key
