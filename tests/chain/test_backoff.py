"""The shared backoff helper (gridshare/chain/backoff.py): delay sequence and early wake."""

from __future__ import annotations

import threading
import time

import pytest

from gridshare.chain.backoff import Backoff, sleep, stop_requested


def test_delays_double_up_to_the_cap_and_reset_starts_over() -> None:
    backoff = Backoff(0.5, max_s=30.0)
    assert [backoff.next_delay_s() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert [backoff.next_delay_s() for _ in range(2)] == [0.5, 1.0]


def test_factor_one_is_a_fixed_poll_and_other_factors_scale() -> None:
    fixed = Backoff(0.2, factor=1.0)
    assert [fixed.next_delay_s() for _ in range(3)] == [0.2, 0.2, 0.2]
    triple = Backoff(0.1, max_s=1.0, factor=3.0)
    assert [triple.next_delay_s() for _ in range(4)] == pytest.approx([0.1, 0.3, 0.9, 1.0])


def test_initial_delay_above_the_cap_is_capped() -> None:
    backoff = Backoff(60.0, max_s=30.0)
    assert [backoff.next_delay_s() for _ in range(2)] == [30.0, 30.0]


@pytest.mark.parametrize(("initial_s", "max_s", "factor"),
                         [(-0.1, 1.0, 2.0), (0.1, -1.0, 2.0), (0.1, 1.0, 0.5)])
def test_bad_parameters_are_refused(initial_s: float, max_s: float, factor: float) -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s, max_s, factor)


def test_sleep_without_stop_sleeps_the_whole_delay() -> None:
    started = time.monotonic()
    assert sleep(0.1) is False
    assert time.monotonic() - started >= 0.1


def test_backoff_sleep_uses_the_next_delay() -> None:
    backoff = Backoff(0.05, max_s=0.05)
    started = time.monotonic()
    assert backoff.sleep(lambda: False) is False
    assert 0.05 <= time.monotonic() - started < 1.0


def _set_later(flag: threading.Event, after_s: float) -> None:
    threading.Timer(after_s, flag.set).start()


def test_sleep_wakes_early_when_an_event_is_set() -> None:
    stop = threading.Event()
    _set_later(stop, 0.1)
    started = time.monotonic()
    assert Backoff(30.0).sleep(stop) is True
    assert time.monotonic() - started < 2.0


def test_sleep_wakes_early_when_a_callable_flag_turns_true() -> None:
    """The oracle's SIGTERM handler sets a plain flag read by a callable."""
    flag = threading.Event()
    _set_later(flag, 0.1)
    started = time.monotonic()
    assert sleep(30.0, flag.is_set) is True
    assert time.monotonic() - started < 2.0


def test_stop_requested_accepts_events_callables_and_none() -> None:
    event = threading.Event()
    assert not stop_requested(None) and not stop_requested(event)
    event.set()
    assert stop_requested(event) and stop_requested(lambda: True)
