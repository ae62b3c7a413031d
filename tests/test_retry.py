"""The one retry policy: exponential backoff with jitter, bounded."""

from __future__ import annotations

import pytest

from botkit import BotkitError, RetryPolicy, RetryPolicyError


def test_full_jitter_waits_anywhere_up_to_a_doubling_bounded_ceiling() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=2.0)
    for retry in range(10):
        ceiling = min(2.0, 0.5 * 2**retry)
        waits = [policy.delay(retry) for _ in range(200)]
        assert all(0.0 <= wait <= ceiling for wait in waits)
        assert min(waits) < ceiling / 2  # full jitter reaches below half (equal jitter would not)


def test_jitter_zero_waits_the_ceiling_and_a_half_jitter_the_upper_half() -> None:
    exact = RetryPolicy(attempts=None, base_delay=1.0, max_delay=5.0, jitter=0.0)
    assert [exact.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    half = RetryPolicy(attempts=None, base_delay=1.0, max_delay=5.0, jitter=0.5)
    assert all(2.0 <= half.delay(2) <= 4.0 for _ in range(100))


def test_attempts_bound_the_tries_and_none_never_gives_up() -> None:
    three = RetryPolicy(attempts=3, base_delay=1.0, max_delay=3.0)
    assert [three.gives_up(after=n) for n in (1, 2, 3)] == [False, False, True]
    assert three.longest_backoffs() == 1.0 + 2.0
    forever = RetryPolicy(attempts=None)
    assert not forever.gives_up(after=10**6)
    assert forever.longest_backoffs() == float("inf")


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"attempts": 0}, "attempts"),
        ({"base_delay": -1.0}, "negative"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_impossible_values_are_a_named_error(values: dict[str, float], says: str) -> None:
    with pytest.raises(RetryPolicyError, match=says) as raised:
        RetryPolicy(**values)  # type: ignore[arg-type]
    assert isinstance(raised.value, BotkitError)
