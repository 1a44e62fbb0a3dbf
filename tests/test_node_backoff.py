"""The one retry schedule of the node layer (``Backoff``): bounded, growing, jittered,
and repeatable under a seeded generator."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chanserv_trio.node._backoff import Backoff


@st.composite
def backoffs(draw: st.DrawFn, jitter: st.SearchStrategy[float] | None = None) -> Backoff:
    initial = draw(st.floats(min_value=1e-3, max_value=10.0))
    factor = draw(st.floats(min_value=1.0, max_value=4.0))
    ceiling = draw(st.floats(min_value=initial, max_value=100.0))
    if jitter is None:
        jitter = st.floats(min_value=0.0, max_value=1.0)
    return Backoff(initial, factor, ceiling, draw(jitter))


def first(backoff: Backoff, count: int, seed: int) -> list[float]:
    return list(itertools.islice(backoff.delays(random.Random(seed)), count))


@given(backoffs(), st.integers())
def test_every_delay_lies_within_zero_and_the_ceiling(backoff: Backoff, seed: int) -> None:
    for delay in first(backoff, 60, seed):
        assert 0 < delay <= backoff.ceiling


@given(backoffs(), st.integers())
def test_each_delay_lies_within_its_jitter_band_below_the_nominal_one(
    backoff: Backoff, seed: int
) -> None:
    nominal = backoff.initial
    for delay in first(backoff, 40, seed):
        assert nominal * (1 - backoff.jitter) - 1e-12 <= delay <= nominal
        nominal = min(nominal * backoff.factor, backoff.ceiling)


@given(backoffs(jitter=st.just(0.0)), st.integers())
def test_without_jitter_the_delays_grow_by_the_factor_to_the_ceiling(
    backoff: Backoff, seed: int
) -> None:
    delays = first(backoff, 200, seed)
    assert delays[0] == backoff.initial
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    if backoff.factor >= 1.1:  # slower factors take longer than 200 steps to get there
        assert delays[-1] == backoff.ceiling


@given(backoffs(), st.integers())
def test_jittered_delays_reach_the_ceilings_band_and_stay_there(
    backoff: Backoff, seed: int
) -> None:
    steps = 0
    nominal = backoff.initial
    while nominal < backoff.ceiling and steps < 200:
        nominal = min(nominal * backoff.factor, backoff.ceiling)
        steps += 1
    if nominal < backoff.ceiling:
        return  # a factor too close to 1 to get there in 200 steps
    for delay in first(backoff, steps + 30, seed)[steps:]:
        assert backoff.ceiling * (1 - backoff.jitter) - 1e-12 <= delay <= backoff.ceiling


@given(backoffs(jitter=st.floats(min_value=0.2, max_value=1.0)), st.integers())
def test_jitter_spreads_the_delays_over_their_band(backoff: Backoff, seed: int) -> None:
    at_ceiling = Backoff(backoff.ceiling, 1.0, backoff.ceiling, backoff.jitter)
    delays = first(at_ceiling, 50, seed)
    # Fifty uniform draws all within half the band: odds about 50 * 2**-49.
    assert max(delays) - min(delays) > backoff.ceiling * backoff.jitter / 2


@given(backoffs(jitter=st.floats(min_value=0.1, max_value=1.0)), st.integers())
def test_two_generators_draw_apart_and_one_seed_repeats_itself(
    backoff: Backoff, seed: int
) -> None:
    assert first(backoff, 10, seed) == first(backoff, 10, seed)
    assert first(backoff, 10, seed) != first(backoff, 10, seed + 1)


def test_each_run_of_retries_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(0.1, 2.0, 5.0, jitter=0.0)
    first_run = backoff.delays()
    assert [next(first_run) for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert next(backoff.delays()) == 0.1


def test_the_default_is_equal_jitter_from_a_shared_generator() -> None:
    backoff = Backoff(1.0, 2.0, 8.0)
    assert backoff.jitter == 0.5
    delays = list(itertools.islice(backoff.delays(), 100))
    assert 0.5 <= delays[0] <= 1.0
    assert all(4.0 <= delay <= 8.0 for delay in delays[3:])
    assert len(set(delays[3:])) > 90


@pytest.mark.parametrize(
    ("initial", "factor", "ceiling", "jitter"),
    [(0.0, 2.0, 1.0, 0.5), (2.0, 2.0, 1.0, 0.5), (0.1, 0.5, 1.0, 0.5), (0.1, 2.0, 1.0, 1.5)],
    ids=["zero-first-delay", "first-above-ceiling", "shrinking", "jitter-above-one"],
)
def test_a_backoff_that_cannot_work_is_refused(
    initial: float, factor: float, ceiling: float, jitter: float
) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, factor, ceiling, jitter)
