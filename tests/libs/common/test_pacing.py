"""The pacer of the outbox relay and of the consumers that handle a fetched batch at once."""

from __future__ import annotations

import asyncio

import pytest

from libs.common.pacing import Pacer

REAL_SLEEP = asyncio.sleep


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What `asyncio.sleep` was asked to sleep (it still sleeps)."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await REAL_SLEEP(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return asked


async def test_rounds_start_at_least_a_linger_apart_and_a_round_after_a_quiet_spell_at_once(
    slept: list[float],
) -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(0.05)
    await pacer.next_round()  # the first round: at once
    assert slept == []
    first = loop.time()
    await pacer.next_round()  # right after: waits out the linger
    second = loop.time()
    assert len(slept) == 1
    assert 0 < slept[0] <= 0.05
    assert second - first >= 0.05
    await REAL_SLEEP(0.06)  # a quiet spell longer than the linger (not recorded)
    await pacer.next_round()
    assert len(slept) == 1  # started at once


async def test_wait_without_mark_leaves_the_last_start_as_it_was(slept: list[float]) -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(0.05)
    pacer.mark()
    started = loop.time()
    await pacer.wait()
    await pacer.wait()  # nothing marked since: the linger is already over
    assert len(slept) == 1
    assert loop.time() - started >= 0.05


def test_a_negative_linger_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Pacer(-0.001)
    assert Pacer(0).linger == 0
