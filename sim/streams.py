"""cocotb 2 drivers and monitors for Amaranth ``stream`` interfaces (valid / ready / payload).

An Amaranth stream port ``cmd`` of a component appears in the converted Verilog as
``cmd__valid``, ``cmd__ready`` and ``cmd__payload`` (the payload flattened to one vector).
:func:`pack` / :func:`unpack` translate between Python values and that vector using the
Amaranth ``data.Layout`` field offsets, so a payload layout is described once (in the RTL) and
never hand-packed in a testbench:

* ``StructLayout`` <-> ``dict`` (missing fields pack as 0), ``ArrayLayout`` <-> ``list``,
  plain shapes <-> ``int`` (signed shapes sign-extended on unpack, two's complement on pack).

:class:`StreamSource` drives a stream into the DUT with random idle cycles (``valid`` low between
beats), :class:`StreamSink` accepts a stream from the DUT with random backpressure (``ready``
low) and checks the stream rules on the way: once ``valid`` is high it stays high with a stable
payload until the transfer. Both sample the handshake at the rising clock edge, so every beat is
transferred exactly once (counted on both sides). Pauses come from seeded generators
(:func:`random_pauses`), one draw per clock cycle.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cocotb
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.queue import Queue
from cocotb.triggers import Event, RisingEdge, with_timeout

# --------------------------------------------------------------------------------------------
# Payload packing
# --------------------------------------------------------------------------------------------


def shape_width(layout: Any) -> int:
    """Bit width of a layout or shape."""
    if isinstance(layout, data.Layout):
        return layout.size
    return Shape.cast(layout).width


class Codec:
    """Packs / unpacks one layout or shape; built once from the Amaranth layout's field offsets."""

    def __init__(self, layout: Any):
        self.layout = layout
        self.width = shape_width(layout)
        self.mask = (1 << self.width) - 1
        self.kind = "int"
        self.signed = False
        if isinstance(layout, data.Layout):
            self.kind = "array" if isinstance(layout, data.ArrayLayout) else "struct"
            self.fields = [(key, f.offset, Codec(f.shape)) for key, f in layout]
            self.keys = {key for key, _, _ in self.fields}
        else:
            shape = Shape.cast(layout)
            self.signed = shape.signed
            self.lo, self.hi = ((-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1)
                                if shape.signed and shape.width else (0, self.mask))
            self.sign_bit = 1 << (shape.width - 1) if shape.signed and shape.width else 0

    def pack(self, value: Any) -> int:
        if self.kind == "int":
            v = int(value)
            if not self.lo <= v <= self.hi:
                raise ValueError(f"{v} does not fit {self.layout!r}")
            return v & self.mask
        if self.kind == "array":
            items = list(value)
            if len(items) != len(self.fields):
                raise ValueError(f"{self.layout!r} needs {len(self.fields)} elements, got {len(items)}")
            return sum(c.pack(v) << off for (_, off, c), v in zip(self.fields, items, strict=True))
        if not isinstance(value, dict):
            raise TypeError(f"{self.layout!r} packs from a dict, got {type(value).__name__}")
        unknown = set(value) - self.keys
        if unknown:
            raise KeyError(f"{sorted(unknown)} not fields of {self.layout!r}")
        return sum(c.pack(value[k]) << off for k, off, c in self.fields if k in value)

    def unpack(self, raw: int) -> Any:
        if self.kind == "int":
            raw &= self.mask
            return raw - (self.sign_bit << 1) if raw & self.sign_bit else raw
        if self.kind == "array":
            return [c.unpack(raw >> off) for _, off, c in self.fields]
        return {k: c.unpack(raw >> off) for k, off, c in self.fields}


_codecs: dict[int, Codec] = {}


def codec(layout: Any) -> Codec:
    """The (cached) :class:`Codec` of ``layout``."""
    c = _codecs.get(id(layout))
    if c is None or c.layout is not layout:
        c = _codecs[id(layout)] = Codec(layout)
    return c


def pack(layout: Any, value: Any) -> int:
    """Python value -> unsigned integer of ``shape_width(layout)`` bits (Amaranth bit order)."""
    return codec(layout).pack(value)


def unpack(layout: Any, raw: int) -> Any:
    """Unsigned integer -> Python value (``dict`` / ``list`` / ``int``)."""
    return codec(layout).unpack(raw)


def payload_layout(component: Any, port: str) -> Any:
    """The payload shape of stream port ``port`` of an Amaranth component (from its signature)."""
    return component.signature.members[port].signature.members["payload"].shape


def value_int(handle: Any) -> int:
    """Current value of a signal handle as an unsigned int (1-bit signals read as ``Logic``)."""
    v = handle.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


# --------------------------------------------------------------------------------------------
# Pause generators
# --------------------------------------------------------------------------------------------


def random_pauses(seed: int, prob: float, *, burst: int = 1) -> Iterator[bool]:
    """Seeded infinite sequence of per-cycle pause flags.

    With probability ``prob`` a pause starts, lasting 1 to ``burst`` cycles (uniform). ``prob = 0``
    never pauses, ``prob = 1`` always pauses (only sensible for a temporary full stall).
    """
    rng = random.Random(seed)
    while True:
        if prob > 0 and rng.random() < prob:
            for _ in range(rng.randint(1, burst)):
                yield True
        else:
            yield False


def no_pauses() -> Iterator[bool]:
    while True:
        yield False


# --------------------------------------------------------------------------------------------
# Clocked endpoints
# --------------------------------------------------------------------------------------------


class ClockLoop:
    """One coroutine per clock that runs every endpoint once per rising edge.

    Each cycle first *samples* every endpoint (reads of the values just before the edge: the
    handshake that happened at this edge), then lets every endpoint *drive* its outputs for the
    next cycle. One loop instead of one coroutine per endpoint keeps the Python cost per simulated
    cycle low; the two phases keep reads independent of the order of writes.
    """

    def __init__(self, clock: Any):
        self.clock = clock
        self.cycle = 0
        self._endpoints: list[_Endpoint] = []
        self._task = cocotb.start_soon(self._run())

    def add(self, endpoint: _Endpoint) -> None:
        self._endpoints.append(endpoint)

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        edge = RisingEdge(self.clock)
        while True:
            await edge
            self.cycle += 1
            for ep in self._endpoints:
                ep._sample()
            for ep in self._endpoints:
                ep._drive()


class _Endpoint:
    def __init__(self, dut: Any, prefix: str, layout: Any, clock: Any):
        self.dut = dut
        self.prefix = prefix
        self.layout = layout
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        width = len(self.payload)
        if width != shape_width(layout):
            raise ValueError(f"{prefix}__payload is {width} bits, the layout {shape_width(layout)}")
        self.loop = clock if isinstance(clock, ClockLoop) else ClockLoop(clock)
        self.transfers = 0  # beats transferred so far
        self._callbacks: list[Callable[[Any], None]] = []
        self.loop.add(self)

    @property
    def cycle(self) -> int:
        return self.loop.cycle

    def add_callback(self, fn: Callable[[Any], None]) -> None:
        """``fn(beat)`` for every transferred beat (unpacked), in order, at its clock edge."""
        self._callbacks.append(fn)

    def _transferred(self, raw: int) -> Any:
        self.transfers += 1
        beat = unpack(self.layout, raw)
        for fn in self._callbacks:
            fn(beat)
        return beat

    def _sample(self) -> None:
        pass

    def _drive(self) -> None:
        pass


class StreamSource(_Endpoint):
    """Drives ``<prefix>__valid/payload`` of a DUT input stream from a queue of beats.

    ``send_nowait(beat)`` queues a beat (``dict`` / ``list`` / ``int`` as :func:`pack` takes,
    or an already packed ``int`` with ``packed=True``); ``await idle(timeout_ns)`` waits until every
    queued beat has been transferred. ``pauses`` (one draw per cycle in which a new beat could be
    presented) insert idle cycles between beats; ``valid`` never drops before its transfer.
    """

    def __init__(self, dut: Any, prefix: str, layout: Any, clock: Any, pauses: Iterable[bool] | None = None):
        super().__init__(dut, prefix, layout, clock)
        self.set_pauses(pauses)
        self._queue: deque[int] = deque()
        self._driving: int | None = None
        self._valid_out = 0
        self._empty = Event()
        self._empty.set()
        self.valid.value = 0
        self.payload.value = 0

    def set_pauses(self, pauses: Iterable[bool] | None) -> None:
        self._pauses = iter(pauses) if pauses is not None else no_pauses()

    def send_nowait(self, beat: Any, *, packed: bool = False) -> None:
        self._queue.append(int(beat) if packed else pack(self.layout, beat))
        self._empty.clear()

    def pending(self) -> int:
        """Beats queued or presented but not yet transferred."""
        return len(self._queue) + (self._driving is not None)

    async def idle(self, timeout_ns: float | None = None) -> None:
        if timeout_ns is None:
            await self._empty.wait()
        else:
            await with_timeout(self._empty.wait(), timeout_ns, "ns")

    def _sample(self) -> None:
        if self._driving is not None and self.ready.value:
            raw, self._driving = self._driving, None
            self._transferred(raw)

    def _drive(self) -> None:
        if self._driving is not None:
            return
        if self._queue and not next(self._pauses):
            self._driving = self._queue.popleft()
            self.payload.value = self._driving
            if not self._valid_out:
                self.valid.value = self._valid_out = 1
        else:
            if self._valid_out:
                self.valid.value = self._valid_out = 0
            if not self._queue:
                self._empty.set()


class StreamMonitor(_Endpoint):
    """Passive monitor: every transfer (``valid & ready`` at a rising edge) of a stream, unpacked.

    Register consumers with :meth:`add_callback`; use it on a DUT input to feed the reference
    model with exactly what the DUT accepted (decoded from the DUT's own ports).
    """

    def _sample(self) -> None:
        if self.valid.value and self.ready.value:
            self._transferred(value_int(self.payload))


class StreamSink(_Endpoint):
    """Accepts a DUT output stream with random backpressure, checking the stream rules.

    Received beats (unpacked) go to the callbacks and (``keep``) to ``queue``: ``await
    recv(timeout_ns)``. A violation of the
    stream rules (``valid`` dropped or payload changed before the transfer) is appended to
    ``protocol_errors`` and, with ``strict``, raised in the clock loop, failing the running test.
    """

    def __init__(self, dut: Any, prefix: str, layout: Any, clock: Any, pauses: Iterable[bool] | None = None,
                 *, strict: bool = True, keep: bool = True):
        super().__init__(dut, prefix, layout, clock)
        self.set_pauses(pauses)
        self.keep = keep  # False: beats go only to the callbacks (a scoreboard), not to ``queue``
        self.queue: Queue = Queue()
        self.protocol_errors: list[str] = []
        self.strict = strict
        self._ready_out = 0
        self._pending: int | None = None  # payload of a valid beat not yet transferred
        self.ready.value = 0

    def set_pauses(self, pauses: Iterable[bool] | None) -> None:
        self._pauses = iter(pauses) if pauses is not None else no_pauses()

    async def recv(self, timeout_ns: float | None = None) -> Any:
        if timeout_ns is None:
            return await self.queue.get()
        return await with_timeout(self.queue.get(), timeout_ns, "ns")

    def __len__(self) -> int:
        return self.queue.qsize()

    def _sample(self) -> None:
        valid = self.valid.value
        raw = value_int(self.payload) if valid else None
        if self._pending is not None and raw != self._pending:
            err = ("valid dropped before the transfer" if raw is None else
                   f"payload changed before the transfer ({self._pending:#x} -> {raw:#x})")
            msg = f"{self.prefix}: cycle {self.cycle}: {err}"
            self.protocol_errors.append(msg)
            if self.strict:
                raise AssertionError(msg)
        if raw is not None and self._ready_out:
            self._pending = None
            beat = self._transferred(raw)
            if self.keep:
                self.queue.put_nowait(beat)
        else:
            self._pending = raw

    def _drive(self) -> None:
        ready = 0 if next(self._pauses) else 1
        if ready != self._ready_out:
            self.ready.value = self._ready_out = ready
