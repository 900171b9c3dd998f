"""When the relay gives memory back: well after its connections fell well below the peak."""

from web.relay_memory import MemoryReturn


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
