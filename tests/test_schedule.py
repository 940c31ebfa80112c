"""Refresh timing, backoff, and the deadline scheduler."""

import asyncio
import random

from hypothesis import given
from hypothesis import strategies as st

from broker.service.schedule import Scheduler, backoff_delay, refresh_deadline, refresh_margin


def test_margin_examples_from_the_issue():
    assert refresh_margin(3600) == 900  # 15 minutes before an hour-long token
    assert refresh_margin(5) == 2.5  # halfway for very short ones
    assert refresh_margin(120) == 60
    assert refresh_margin(200) == 60  # max(60, 50) = 60, below 100


@given(st.floats(1, 10**7), st.floats(0, 10**9))
def test_deadline_is_before_expiry_and_after_issue(lifetime, obtained):
    rng = random.Random(1)
    when = refresh_deadline(obtained, obtained + lifetime, rng)
    margin = refresh_margin(lifetime)
    assert obtained + lifetime - margin * 1.1 - 1e-6 <= when <= obtained + lifetime - margin + 1e-6
    assert when >= obtained - 1e-6


def test_jitter_spreads_deadlines():
    rng = random.Random(7)
    deadlines = {round(refresh_deadline(0, 3600, rng), 3) for _ in range(50)}
    assert len(deadlines) > 40


def test_backoff_grows_and_is_capped():
    rng = random.Random(3)
    delays = [backoff_delay(n, rng) for n in range(1, 12)]
    assert delays[0] <= 5 and delays[3] > delays[0]
    assert max(delays) <= 300


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_scheduler_fires_in_order_and_reschedules():
    async def main():
        clock = FakeClock()
        fired = []
        sched = Scheduler(fired.append, clock=clock, max_sleep=0.05)
        task = asyncio.create_task(sched.run())
        sched.set("b", 1002)
        sched.set("a", 1001)
        sched.set("c", 1003)
        sched.set("c", None)  # cancelled
        sched.set("b", 1005)  # moved later
        await asyncio.sleep(0.1)
        assert fired == []
        clock.now = 1001.5
        sched.set("wake", 10**9)
        await asyncio.sleep(0.05)
        assert fired == ["a"]
        clock.now = 1010
        await asyncio.sleep(0.15)
        assert fired == ["a", "b"]  # c never fires, b once
        task.cancel()

    asyncio.run(main())


def test_scheduler_notices_a_clock_jump_without_a_new_event():
    """A suspended laptop: the wall clock leaps while the loop sleeps."""

    async def main():
        clock = FakeClock()
        fired = []
        sched = Scheduler(fired.append, clock=clock, max_sleep=0.05)
        task = asyncio.create_task(sched.run())
        sched.set("x", 1000 + 3600)
        await asyncio.sleep(0.02)
        clock.now += 7200  # nothing calls set() or wakes it
        await asyncio.sleep(0.15)
        assert fired == ["x"]
        task.cancel()

    asyncio.run(main())


def test_scheduler_sleeps_instead_of_spinning():
    async def main():
        clock = FakeClock()
        sched = Scheduler(lambda n: None, clock=clock, max_sleep=10)
        task = asyncio.create_task(sched.run())
        for i in range(200):
            sched.set(f"c{i}", 5000 + i)
        await asyncio.sleep(0.3)
        assert sched.wakeups <= 3  # woken by the set() calls, then asleep
        task.cancel()

    asyncio.run(main())
