from smartroute.cli.scaling import QueueReport, plan, processes_needed


def test_an_empty_queue_needs_no_process():
    assert processes_needed(0, 5.0, 4, 5.0) == 0


def test_processes_follow_the_measured_rate():
    # 4 processes drain 8/s, so 2/s each; 100 waiting within 5 s needs 10.
    assert processes_needed(100, 8.0, 4, 5.0) == 10
    assert processes_needed(10, 8.0, 4, 5.0) == 1


def test_with_no_rate_yet_grow_one_step():
    assert processes_needed(50, 0.0, 2, 5.0) == 3


def _report(needed: int) -> QueueReport:
    return QueueReport("dispatch", 0, [], 0.0, needed)


def test_plan_spreads_over_nodes_within_bounds():
    sizes = {"a@h": 2, "b@h": 2}
    assert [r.target for r in plan([_report(9)], sizes, 1, 8)] == [5, 5]
    assert [r.target for r in plan([_report(40)], sizes, 1, 8)] == [8, 8]
    assert [r.target for r in plan([_report(0)], sizes, 1, 8)] == [1, 1]
    assert plan([_report(3)], {}, 1, 8) == []
