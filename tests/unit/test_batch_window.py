"""The adaptive batch window: shrinks when drivers are plentiful, grows under pressure."""

import pytest

from dispatch.matching.window import Pressure, WindowPolicy

POLICY = WindowPolicy(max_s=1.0, min_s=0.02)
RELAXED = Pressure(bookings=2, free_drivers=40)


def test_plenty_of_drivers_shrinks_the_window_to_its_minimum():
    window, seen = 1.0, []
    while window > POLICY.min_s:
        window = POLICY.next_window_s(window, RELAXED)
        seen.append(window)
    assert seen == [0.5, 0.25, 0.125, 0.02]


@pytest.mark.parametrize(
    "pressure",
    [
        Pressure(bookings=20, free_drivers=30),  # Bookings compete for the drivers.
        Pressure(bookings=2, free_drivers=40, lost=1),  # Another batch took a driver.
        Pressure(bookings=2, free_drivers=40, full=True),  # More wait than a batch takes.
        Pressure(bookings=2, free_drivers=40, run_s=5.0),  # The workers are behind.
    ],
)
def test_pressure_grows_the_window_to_its_maximum(pressure):
    window, seen = POLICY.min_s, []
    while window < POLICY.max_s:
        window = POLICY.next_window_s(window, pressure)
        seen.append(window)
    assert seen == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_between_the_two_ratios_the_window_holds():
    assert POLICY.next_window_s(0.4, Pressure(bookings=12, free_drivers=30)) == 0.4


def test_an_empty_batch_says_nothing_about_pressure():
    assert POLICY.next_window_s(0.4, Pressure(bookings=0, free_drivers=0)) == 0.4


def test_equal_bounds_are_a_fixed_window():
    fixed = WindowPolicy(max_s=1.0, min_s=1.0)
    assert not fixed.adaptive
    assert fixed.next_window_s(1.0, RELAXED) == 1.0
