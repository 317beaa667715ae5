"""The RAM-floor benchmark's search: bracketing from the computed floor, then bisection to 16 MiB."""

from __future__ import annotations

import pytest

from benchmarks.ramfloor import STEP, WAYS, bisect


@pytest.mark.parametrize("start", [100, 432, 512, 600, 1000])
@pytest.mark.parametrize("floor", [208, 480, 496, 512, 768])
def test_bisect_finds_the_smallest_size_that_boots(start: int, floor: int) -> None:
    tried: list[int] = []

    def boots(memory: int) -> bool:
        tried.append(memory)
        return memory >= floor

    assert bisect(boots, start) == (floor, floor - STEP)
    assert all(m % STEP == 0 for m in tried)
    assert len(tried) == len(set(tried))  # no size booted twice


def test_a_good_start_costs_few_boots() -> None:
    tried: list[int] = []

    def boots(memory: int) -> bool:
        tried.append(memory)
        return memory >= 512

    bisect(boots, 500)  # 512 boots, 448 fails, then 480 and 496
    assert tried == [512, 448, 480, 496]


def test_the_ways_have_distinct_names_and_floors_of_the_manifest() -> None:
    assert len({w.name for w in WAYS}) == len(WAYS)
    assert {w.floor_key for w in WAYS} <= {"need_mib", "live_ram_mib"}
