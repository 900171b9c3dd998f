"""When the relay gives memory back: well after its connections fell well below the peak."""

import heapq
import warnings

from web.relay_memory import MemoryReturn, drop_cancelled_timers


class Relay:
    def __init__(self) -> None:
        self.connections, self.now = 0, 0.0


def watching(relay: Relay) -> MemoryReturn:
    return MemoryReturn(lambda: relay.connections, settle_s=30, clock=lambda: relay.now)


def test_memory_goes_back_once_the_fall_has_settled():
    relay = Relay()
    memory = watching(relay)
    relay.connections = 5000
    assert not memory.check()
    relay.connections, relay.now = 100, 5.0
    assert not memory.check()  # The closed connections' ping tasks still sleep.
    relay.now = 30.0
    assert not memory.check()
    relay.now = 35.0
    assert memory.check()
    # Once, not at every check after: the peak is now what is left.
    relay.now = 100.0
    assert not memory.check() and memory.peak == 100


def test_a_small_or_passing_fall_changes_nothing():
    relay = Relay()
    memory = watching(relay)
    relay.connections = 5000
    memory.check()
    relay.connections, relay.now = 4200, 5.0  # Less than a fifth gone.
    assert not memory.check()
    relay.now = 100.0
    assert not memory.check()
    relay.connections, relay.now = 300, 101.0  # Most gone, then back before it settled.
    assert not memory.check()
    relay.connections, relay.now = 6000, 110.0
    assert not memory.check()
    relay.connections, relay.now = 5500, 200.0
    assert not memory.check()


def test_a_few_drivers_leaving_a_small_relay_change_nothing():
    relay = Relay()
    memory = watching(relay)
    relay.connections = 150
    memory.check()
    relay.connections, relay.now = 0, 1.0
    memory.check()
    relay.now = 100.0
    assert not memory.check()


def test_the_release_comes_before_the_memory_goes_back():
    relay, released = Relay(), []
    memory = MemoryReturn(
        lambda: relay.connections,
        settle_s=30,
        clock=lambda: relay.now,
        release=lambda: released.append(relay.now),
    )
    relay.connections = 5000
    memory.check()
    relay.connections, relay.now = 0, 1.0
    memory.check()
    assert released == []
    relay.now = 40.0
    assert memory.check() and released == [40.0]


def test_cancelled_timers_leave_the_hub_and_live_ones_stay():
    """Fewer than half cancelled: eventlet's own prune keeps them all until they fall due."""
    # Importing eventlet outside an eventlet process warns that it is deprecated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from eventlet import hubs

    hub = hubs.get_default_hub().Hub()  # A hub of the test's own, never run.
    timers = [hub.schedule_call_global(300 + i, lambda: None) for i in range(3000)]
    hub.prepare_timers()  # As the hub's loop does: new timers join the heap.
    for timer in timers[::2][:1400]:
        timer.cancel()  # Marks it called (and tells the thread's own hub, not this one).
    assert len(hub.timers) == 3000

    assert drop_cancelled_timers(hub) == 1400
    assert {id(t) for _, t in hub.timers} == {id(t) for t in timers if not t.called}
    assert len(hub.timers) == 1600 and hub.timers_canceled == 0
    # Still a heap: the hub pops the soonest first, the live ones in their order.
    popped = [heapq.heappop(hub.timers)[1] for _ in range(1600)]
    assert [t.seconds for t in popped] == [t.seconds for t in timers if not t.called]
