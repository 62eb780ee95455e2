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
from collections.abc import Iterable, Iterator
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


def pack(layout: Any, value: Any) -> int:
    """Python value -> unsigned integer of ``shape_width(layout)`` bits (Amaranth bit order)."""
    if isinstance(layout, data.Layout):
        if isinstance(layout, data.ArrayLayout):
            items = list(value)
            if len(items) != layout.length:
                raise ValueError(f"{layout!r} needs {layout.length} elements, got {len(items)}")
            fields = dict(layout)
            return sum(pack(fields[i].shape, v) << fields[i].offset for i, v in enumerate(items))
        if not isinstance(value, dict):
            raise TypeError(f"{layout!r} packs from a dict, got {type(value).__name__}")
        fields = dict(layout)
        unknown = set(value) - set(fields)
        if unknown:
            raise KeyError(f"{sorted(unknown)} not fields of {layout!r}")
        return sum(pack(fields[k].shape, v) << fields[k].offset for k, v in value.items())
    shape = Shape.cast(layout)
    v = int(value)
    lo, hi = ((-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed
              else (0, (1 << shape.width) - 1))
    if not lo <= v <= hi:
        raise ValueError(f"{v} does not fit {shape!r}")
    return v & ((1 << shape.width) - 1)


def unpack(layout: Any, raw: int) -> Any:
    """Unsigned integer -> Python value (``dict`` / ``list`` / ``int``)."""
    if isinstance(layout, data.Layout):
        out = {k: unpack(f.shape, (raw >> f.offset) & ((1 << f.width) - 1)) for k, f in layout}
        if isinstance(layout, data.ArrayLayout):
            return [out[i] for i in range(layout.length)]
        return out
    shape = Shape.cast(layout)
    raw &= (1 << shape.width) - 1
    if shape.signed and raw >> (shape.width - 1):
        raw -= 1 << shape.width
    return raw


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
# Source and sink
# --------------------------------------------------------------------------------------------


class _StreamPort:
    def __init__(self, dut: Any, prefix: str, layout: Any, clock: Any, pauses: Iterable[bool] | None):
        self.dut = dut
        self.prefix = prefix
        self.layout = layout
        self.clock = clock
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        width = len(self.payload)
        if width != shape_width(layout):
            raise ValueError(f"{prefix}__payload is {width} bits, the layout {shape_width(layout)}")
        self.set_pauses(pauses)
        self.transfers = 0  # beats transferred so far
        self.cycles = 0     # clock edges seen since start

    def set_pauses(self, pauses: Iterable[bool] | None) -> None:
        self._pauses = iter(pauses) if pauses is not None else no_pauses()


class StreamSource(_StreamPort):
    """Drives ``<prefix>__valid/payload`` of a DUT input stream from a queue of beats.

    ``send_nowait(beat)`` / ``await send(beat)`` queue a beat (``dict`` / ``list`` / ``int`` as
    :func:`pack` takes, or an ``int`` already packed with ``packed=True``); ``await idle()`` waits
    until every queued beat has been transferred. A pause draw happens only when a new beat could
    be presented, so ``valid`` never drops before its transfer.
    """

    def __init__(self, dut: Any, prefix: str, layout: Any, clock: Any, pauses: Iterable[bool] | None = None):
        super().__init__(dut, prefix, layout, clock, pauses)
        self._queue: deque[int] = deque()
        self._driving = False
        self._empty = Event()
        self._empty.set()
        self.valid.value = 0
        self.payload.value = 0
        self._task = cocotb.start_soon(self._run())

    def send_nowait(self, beat: Any, *, packed: bool = False) -> None:
        self._queue.append(int(beat) if packed else pack(self.layout, beat))
        self._empty.clear()

    async def send(self, beat: Any, *, packed: bool = False) -> None:
        self.send_nowait(beat, packed=packed)

    def pending(self) -> int:
        return len(self._queue) + (1 if self._driving else 0)

    async def idle(self, timeout_ns: float | None = None) -> None:
        if timeout_ns is None:
            await self._empty.wait()
        else:
            await with_timeout(self._empty.wait(), timeout_ns, "ns")

    def stop(self) -> None:
        self._task.cancel()
        self.valid.value = 0

    async def _run(self) -> None:
        while True:
            await RisingEdge(self.clock)
            self.cycles += 1
            if self._driving and value_int(self.ready):
                self.transfers += 1
                self._driving = False
            if not self._driving:
                if self._queue and not next(self._pauses):
                    self.payload.value = self._queue.popleft()
                    self.valid.value = 1
                    self._driving = True
                else:
                    self.valid.value = 0
                    if not self._queue:
                        self._empty.set()


class StreamSink(_StreamPort):
    """Accepts a DUT output stream with random backpressure, checking the stream rules.

    Received beats (unpacked) go to a queue: ``await recv(timeout_cycles)``. ``protocol_errors``
    lists violations (``valid`` dropped or payload changed before the transfer); a violation also
    raises in the monitor task, which fails the running cocotb test.
    """

    def __init__(self, dut: Any, prefix: str, layout: Any, clock: Any, pauses: Iterable[bool] | None = None,
                 *, strict: bool = True):
        super().__init__(dut, prefix, layout, clock, pauses)
        self.queue: Queue = Queue()
        self.protocol_errors: list[str] = []
        self.strict = strict
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        self._task.cancel()
        self.ready.value = 0

    async def recv(self, timeout_ns: float | None = None) -> Any:
        if timeout_ns is None:
            return await self.queue.get()
        return await with_timeout(self.queue.get(), timeout_ns, "ns")

    def recv_nowait(self) -> Any:
        return self.queue.get_nowait()

    def __len__(self) -> int:
        return self.queue.qsize()

    async def _run(self) -> None:
        ready = False
        pending: int | None = None  # payload of a valid beat not yet transferred
        while True:
            await RisingEdge(self.clock)
            self.cycles += 1
            valid = value_int(self.valid)
            raw = value_int(self.payload) if valid else None
            if pending is not None:
                err = None
                if not valid:
                    err = "valid dropped before the transfer"
                elif raw != pending:
                    err = f"payload changed before the transfer ({pending:#x} -> {raw:#x})"
                if err:
                    msg = f"{self.prefix}: cycle {self.cycles}: {err}"
                    self.protocol_errors.append(msg)
                    if self.strict:
                        raise AssertionError(msg)
            if valid and ready:
                self.transfers += 1
                self.queue.put_nowait(unpack(self.layout, raw))
                pending = None
            else:
                pending = raw if valid else None
            ready = not next(self._pauses)
            self.ready.value = int(ready)
