"""Amaranth-pysim helpers for ``amaranth.lib.stream`` interfaces (``async def tb(ctx)`` testbenches).

``stream_put`` / ``stream_get`` transfer one beat, optionally after a random number of idle
cycles (``valid`` or ``ready`` held low), so tests exercise gaps and backpressure. Both follow the
stream rules: ``valid`` is raised independently of ``ready`` and the payload is held until the
transfer (the clock edge where ``valid`` and ``ready`` are both 1).
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["Gaps", "stream_put", "stream_get"]


class Gaps:
    """Random idle-cycle generator: before a beat, with probability ``p``, wait 1..``max_gap`` cycles."""

    def __init__(self, p: float = 0.0, max_gap: int = 3, seed: int | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"gap probability must be in [0, 1], got {p}")
        self.p = p
        self.max_gap = max_gap
        self.rng = random.Random(seed)

    def __call__(self) -> int:
        if self.p and self.rng.random() < self.p:
            return self.rng.randint(1, self.max_gap)
        return 0


async def stream_put(ctx: Any, stream: Any, payload: Any, gaps: Gaps | None = None) -> None:
    """Send one beat on the producer side of ``stream``; return after the transfer's clock edge."""
    idle = gaps() if gaps else 0
    if idle:
        ctx.set(stream.valid, 0)
        await ctx.tick().repeat(idle)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx: Any, stream: Any, gaps: Gaps | None = None) -> Any:
    """Receive one beat on the consumer side of ``stream`` (payload sampled at the transfer edge)."""
    idle = gaps() if gaps else 0
    if idle:
        ctx.set(stream.ready, 0)
        await ctx.tick().repeat(idle)
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload
