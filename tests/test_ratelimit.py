"""The window limiter the sinks pace their requests with: never more than the limit in a
window, first come first served, urgent requests (command answers) first, and no slot
lost to a cancelled waiter."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.sinks.ratelimit import WindowLimiter


async def started(
    limiter: WindowLimiter, log: list[str], name: str, *, urgent: bool = False
) -> None:
    async with limiter.slot(urgent=urgent):
        log.append(name)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_gets_the_limit_at_once_and_the_rest_waits_in_order() -> None:
    limiter = WindowLimiter(2, 0.05)
    log: list[str] = []
    tasks = [asyncio.create_task(started(limiter, log, name)) for name in "abcde"]
    await settle()
    assert log == ["a", "b"]  # the window holds two
    await asyncio.gather(*tasks)
    assert log == list("abcde")  # and the rest in the order they came
    await asyncio.sleep(0.1)
    assert limiter.idle


async def test_an_urgent_request_goes_before_the_ones_already_waiting() -> None:
    limiter = WindowLimiter(1, 0.05)
    log: list[str] = []
    tasks = [asyncio.create_task(started(limiter, log, f"card{n}")) for n in range(3)]
    await settle()
    tasks.append(asyncio.create_task(started(limiter, log, "reply", urgent=True)))
    await asyncio.gather(*tasks)
    # The first card had the slot; the answer someone waits for comes next.
    assert log == ["card0", "reply", "card1", "card2"]


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    limiter = WindowLimiter(1, 0.02)
    log: list[str] = []
    first = asyncio.create_task(started(limiter, log, "a"))
    await settle()
    waiting = asyncio.create_task(started(limiter, log, "gone"))
    after = asyncio.create_task(started(limiter, log, "b"))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.gather(first, after)
    assert log == ["a", "b"]
    await asyncio.sleep(0.05)
    assert limiter.idle


async def test_a_waiter_cancelled_just_as_its_turn_came_passes_the_slot_on() -> None:
    limiter = WindowLimiter(1, 0.01)
    log: list[str] = []
    await limiter.acquire()
    waiting = asyncio.create_task(started(limiter, log, "gone"))
    after = asyncio.create_task(started(limiter, log, "b"))
    await settle()
    # What release() schedules for the end of the window, run now: the slot goes to
    # "gone", and it is cancelled in the same moment, before it could run.
    limiter._free()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(after, 1)
    assert log == ["b"]


async def started_in_background(limiter: WindowLimiter, log: list[str], name: str) -> None:
    async with limiter.slot(background=True):
        log.append(name)


async def test_background_requests_leave_half_the_window_and_go_after_the_others() -> None:
    # The preflight reads a hundred chats at start: a notification must not queue behind.
    limiter = WindowLimiter(4, 0.05)
    log: list[str] = []
    reads = [
        asyncio.create_task(started_in_background(limiter, log, f"read{n}")) for n in range(6)
    ]
    await settle()
    assert log == ["read0", "read1"]  # two of four slots: half stays free
    card = asyncio.create_task(started(limiter, log, "card"))
    await settle()
    assert log[-1] == "card", "a notification takes a free slot at once"
    await asyncio.gather(card, *reads)
    assert sorted(log) == sorted(["card", *(f"read{n}" for n in range(6))])
    await asyncio.sleep(0.1)
    assert limiter.idle


async def test_a_waiting_notification_goes_before_waiting_background_reads() -> None:
    limiter = WindowLimiter(1, 0.05)
    log: list[str] = []
    first = asyncio.create_task(started(limiter, log, "card0"))
    await settle()
    reads = [
        asyncio.create_task(started_in_background(limiter, log, f"read{n}")) for n in range(2)
    ]
    await settle()
    card = asyncio.create_task(started(limiter, log, "card1"))
    await asyncio.gather(first, card, *reads)
    assert log == ["card0", "card1", "read0", "read1"]


async def test_processes_sharing_a_token_each_take_their_part_of_the_window() -> None:
    """Three bot processes on one token: each sends a third of the limit per window; when
    the others are gone the whole limit is back at once, waiters included."""
    limiter = WindowLimiter(9, 0.2)
    limiter.share(3)
    log: list[str] = []
    tasks = [asyncio.create_task(started(limiter, log, name)) for name in "abcdefghi"]
    await settle()
    assert log == ["a", "b", "c"]
    limiter.share(1)
    await settle()
    assert log == list("abcdefghi")  # the six waiting went at once
    await asyncio.gather(*tasks)
    # Shrinking again while slots are held: the held ones free up without handing on
    # until the window holds no more than the new part.
    limiter.share(2, rank=1)
    await asyncio.sleep(0.3)
    more = [asyncio.create_task(started(limiter, log, name)) for name in "jklmnop"]
    await settle()
    assert log[9:] == ["j", "k", "l", "m"]  # 9 // 2, the second process's part
    await asyncio.gather(*more)
    await asyncio.sleep(0.3)
    assert limiter.idle


async def test_slots_held_for_other_processes_free_up_as_their_requests_leave_the_window() -> None:
    """Requests another process made (told from the database) hold slots for the time
    they have left; each telling replaces the last, and holds beyond the limit leave
    nothing free until enough have ended."""
    limiter = WindowLimiter(3, 10.0)
    limiter.hold_elsewhere([0.05, 10.0])
    log: list[str] = []
    tasks = [asyncio.create_task(started(limiter, log, name)) for name in "abc"]
    await settle()
    assert log == ["a"]  # one of three slots is free
    await asyncio.sleep(0.1)
    assert log == ["a", "b"]  # the first hold ended; the second has 10 s left
    assert not limiter.idle
    limiter.hold_elsewhere([])  # told again: nothing counts any more
    await settle()
    assert log == ["a", "b", "c"]
    await asyncio.gather(*tasks)
    # Told of more than the limit while its own slots are held: nothing goes until
    # the holds have ended and its own slots are free again.
    window = WindowLimiter(2, 0.05)
    await started(window, log, "d")
    window.hold_elsewhere([0.1, 0.1, 0.1])
    late = asyncio.create_task(started(window, log, "e"))
    await asyncio.sleep(0.07)
    assert log[-1] == "d", "its own slot freed up, but the window is full of others'"
    await late
    assert log[-1] == "e"
    await asyncio.sleep(0.1)
    assert window.idle


async def test_a_part_growing_back_while_background_reads_wait_hands_out_only_free_slots() -> None:
    """A process learns the others are gone while the preflight's reads wait for half the
    window: the grown part goes to whoever may take it, the reads keep waiting for half
    the window, and the heartbeat that called share() returns (it once spun forever,
    handing a slot to the background lane that would not take it and taking it back)."""
    limiter = WindowLimiter(10, 0.2)
    log: list[str] = []
    cards = [asyncio.create_task(started(limiter, log, f"card{n}")) for n in range(6)]
    await settle()
    reads = [
        asyncio.create_task(started_in_background(limiter, log, f"read{n}")) for n in range(2)
    ]
    await settle()
    assert [name for name in log if name.startswith("read")] == []  # 4 free of 10: waits
    limiter.share(2)
    # Back to one process, from a thread so that a spin fails the test instead of
    # hanging it (the event loop is blocked in join() meanwhile, so nothing races).
    grower = threading.Thread(target=limiter.share, args=(1,), daemon=True)
    grower.start()
    grower.join(timeout=5)
    assert not grower.is_alive(), "share() never returned"
    await asyncio.gather(*cards, *reads)
    assert sorted(log) == sorted([*(f"card{n}" for n in range(6)), "read0", "read1"])
    await asyncio.sleep(0.3)
    assert limiter.idle


def test_the_parts_of_processes_add_up_to_the_whole_limit() -> None:
    """50 requests a second for three processes: 17, 17 and 16 by rank, never 16 each
    (48, a fan-out 4% slower than the limit allows) nor 17 each (51, over it)."""
    parts = []
    for rank in range(3):
        limiter = WindowLimiter(50, 1.0)
        limiter.share(3, rank)
        parts.append(limiter.limit)
    assert parts == [17, 17, 16]
    assert sum(parts) == 50
    evenly = WindowLimiter(30, 1.0)
    evenly.share(3, 0)
    assert evenly.limit == 10
