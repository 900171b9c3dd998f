"""The relay runs on the C library's allocator, however it is started, so that the memory
of drivers who left can go back to the system (smartroute.cli.relay, web.relay_memory)."""

import psutil


def test_the_relay_started_without_pythonmalloc_runs_on_malloc(stack):
    assert "PYTHONMALLOC" not in stack.env
    relay = psutil.Process(stack.relay.pid)  # Started again in place: the same process.
    assert stack.relay_up()
    assert relay.environ().get("PYTHONMALLOC") == "malloc"
    assert any("smartroute.cli.relay" in part for part in relay.cmdline())
