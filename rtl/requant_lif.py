"""Requant + LIF unit: accumulator beats in, spike beats out, membranes kept on chip.

Per lane (channel ``c = group * P + lane``) and beat, exactly ``golden_model.intops``::

    y  = sat16( ((acc * M[c] + (1 << (S[c] - 1))) >> S[c]) + B[c] )     requant(out_bits=16)
    v' = v + (((y - v) * L) >> K);  s = v' >= theta;  v = 0 if s else v'   lif_step

``v`` is the membrane of (neuron ``index``, channel ``c``), 0 after ``reset_state`` or when the
beat has ``first = 1`` (the first time step of a clip: no clear sweep needed). The driver sends
time step t of every neuron, then time step t + 1 of the same neurons, and so on.

Widths: ``acc`` signed ``acc_w`` (<= 32, so ``|acc| <= 2**31``); ``|acc * M| <= 2**31 * 2**15 =
2**46`` and the rounding constant is ``< 2**46``, so the sum fits 48 bits plus sign (it is formed at
49 bits, the product register is 48 bits); ``>> S`` is arithmetic (floor), ``+ B`` at 49 bits, then
saturation to 16 bits. LIF: ``y - v`` is 17 bits signed, ``L <= 2**15`` unsigned 16 bits, the
product 33 bits signed; the new membrane lies between ``v`` and ``y`` (``intops.lif_step``) so it is
stored in 16 bits without saturation.

Pipeline (one beat per cycle, every stage stalls together when the output register is full and
``out.ready`` is low): S0 accept, parameter row read -> S1 product ``acc * M`` (registered, DSP
friendly) -> S2 round, shift, offset, saturate; membrane row read -> S3 LIF, membrane write-back,
spikes into the output register. The membrane read (S2) and write (S3) of consecutive beats are one
cycle apart, which the read port's transparency covers, so the same neuron may come back to back.
Latency: ``out.valid`` rises 4 cycles after the beat's transfer (``golden_model.perf``).

Parameters are written through ``param`` (``we`` for one cycle): ``lif = 0`` writes channel
``(group, lane)``'s ``M, S, B`` (``data.chan``), ``lif = 1`` the layer's ``L, K, theta``
(``data.lif``). Write them while the unit is idle (``busy = 0``). ``reset_state`` (one cycle)
zeroes every membrane: once the pipeline has drained, a sweep writes ``neurons * groups`` zero rows,
one per cycle, with ``inp.ready`` low.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["CHAN_PARAM_LAYOUT", "LIF_PARAM_LAYOUT", "RES_BITS", "acc_beat_layout", "spike_beat_layout",
           "param_signature", "RequantLIF"]

RES_BITS = 16
CHAN_PARAM_LAYOUT = data.StructLayout({"m": signed(16), "s": unsigned(6), "b": signed(32)})
LIF_PARAM_LAYOUT = data.StructLayout({"leak": unsigned(16), "shift": unsigned(4), "theta": signed(16)})


def acc_beat_layout(lanes: int, groups: int, neurons: int, acc_w: int = 32) -> data.StructLayout:
    """Input beat: P signed accumulators of channel group ``group`` for neuron (token) ``index``."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(acc_w), lanes),
        "group": range(groups),
        "index": range(neurons),
        "first": 1,
    })


def spike_beat_layout(lanes: int, groups: int, neurons: int) -> data.StructLayout:
    """Output beat: P spikes (bit l = channel ``group * P + l``) of neuron ``index``."""
    return data.StructLayout({"spikes": lanes, "group": range(groups), "index": range(neurons)})


def param_signature(lanes: int, groups: int) -> wiring.Signature:
    """Parameter write port (driven by the host side): one write per cycle with ``we``."""
    return wiring.Signature({
        "we": Out(1),
        "lif": Out(1),
        "group": Out(range(groups)),
        "lane": Out(range(lanes)),
        "data": Out(data.UnionLayout({"chan": CHAN_PARAM_LAYOUT, "lif": LIF_PARAM_LAYOUT})),
    })


def _sat(x, bits: int):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(x > hi, hi, Mux(x < lo, lo, x))


class RequantLIF(wiring.Component):
    """Requant (``out_bits = 16``) and one integer LIF step per beat, P lanes in parallel.

    Parameters
    ----------
    lanes : int
        P, channels per beat.
    groups : int
        Channel groups (channels = ``lanes * groups``).
    neurons : int
        Neuron (token) indices with a membrane row each (membrane memory depth ``neurons * groups``).
    acc_w : int
        Accumulator width (signed, at most 32 as ``intops.requant`` takes int32 accumulators).
    """

    def __init__(self, *, lanes: int, groups: int = 1, neurons: int = 16, acc_w: int = 32):
        if lanes < 1 or groups < 1 or neurons < 1:
            raise ValueError("lanes, groups and neurons must be positive")
        if not 2 <= acc_w <= 32:
            raise ValueError(f"acc_w must be in 2..32, got {acc_w}")
        self.lanes, self.groups, self.neurons, self.acc_w = lanes, groups, neurons, acc_w
        super().__init__({
            "inp": In(stream.Signature(acc_beat_layout(lanes, groups, neurons, acc_w))),
            "out": Out(stream.Signature(spike_beat_layout(lanes, groups, neurons))),
            "param": In(param_signature(lanes, groups)),
            "reset_state": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        P, G, NN = self.lanes, self.groups, self.neurons

        m.submodules.prm_mem = prm_mem = Memory(shape=data.ArrayLayout(CHAN_PARAM_LAYOUT, P), depth=G, init=[])
        prm_wr = prm_mem.write_port(granularity=1)
        prm_rd = prm_mem.read_port()
        m.submodules.v_mem = v_mem = Memory(shape=data.ArrayLayout(signed(RES_BITS), P), depth=NN * G, init=[])
        v_wr = v_mem.write_port()
        v_rd = v_mem.read_port(transparent_for=(v_wr,))

        leak = Signal(unsigned(16), init=1)
        shift = Signal(unsigned(4), init=1)
        theta = Signal(signed(16), init=1)

        # parameter writes
        prm = self.param
        m.d.comb += [
            prm_wr.addr.eq(prm.group),
            prm_wr.data.eq(Cat(*[prm.data.chan.as_value()] * P)),
            prm_wr.en.eq(Mux(prm.we & ~prm.lif, 1 << prm.lane, 0)),
        ]
        with m.If(prm.we & prm.lif):
            m.d.sync += [leak.eq(prm.data.lif.leak), shift.eq(prm.data.lif.shift), theta.eq(prm.data.lif.theta)]

        ce = Signal(1)
        m.d.comb += ce.eq(~(self.out.valid & ~self.out.ready))

        # stage registers
        s1_valid, s2_valid, s3_valid = Signal(1), Signal(1), Signal(1)
        s1 = Signal(acc_beat_layout(P, G, NN, self.acc_w))
        s2_prod = Signal(data.ArrayLayout(signed(48), P))
        s2_meta = Signal(acc_beat_layout(1, G, NN, 1))  # group, index, first (data unused)
        s2_s = Signal(data.ArrayLayout(unsigned(6), P))
        s2_b = Signal(data.ArrayLayout(signed(32), P))
        s3_y = Signal(data.ArrayLayout(signed(RES_BITS), P))
        s3_meta = Signal(acc_beat_layout(1, G, NN, 1))
        s3_addr = Signal.like(v_rd.addr)

        clear_req = Signal(1)
        clearing = Signal(1)
        clear_ptr = Signal(range(NN * G + 1))
        drained = Signal(1)
        m.d.comb += drained.eq(~s1_valid & ~s2_valid & ~s3_valid)

        m.d.comb += self.inp.ready.eq(ce & ~clear_req & ~clearing)
        take = self.inp.valid & self.inp.ready

        # S0: accept, read the channel group's parameters
        m.d.comb += [prm_rd.addr.eq(self.inp.payload.group), prm_rd.en.eq(ce)]
        with m.If(ce):
            m.d.sync += [s1_valid.eq(take), s1.eq(self.inp.payload)]

        # S1: products
        with m.If(ce):
            m.d.sync += [s2_valid.eq(s1_valid),
                         s2_meta.group.eq(s1.group), s2_meta.index.eq(s1.index), s2_meta.first.eq(s1.first)]
            for lane in range(P):
                p = prm_rd.data[lane]
                m.d.sync += [s2_prod[lane].eq(s1.data[lane] * p.m), s2_s[lane].eq(p.s), s2_b[lane].eq(p.b)]

        # S2: round, shift, offset, saturate; membrane row read
        addr2 = Signal.like(v_rd.addr)
        m.d.comb += [addr2.eq(s2_meta.index * G + s2_meta.group), v_rd.addr.eq(addr2), v_rd.en.eq(ce)]
        with m.If(ce):
            m.d.sync += [s3_valid.eq(s2_valid), s3_meta.eq(s2_meta), s3_addr.eq(addr2)]
            for lane in range(P):
                sh = s2_s[lane]
                rounded = Signal(signed(49), name=f"rounded{lane}")
                m.d.comb += rounded.eq(s2_prod[lane] + (C(1, 1) << (sh - 1)[:6]))
                y = (rounded >> sh) + s2_b[lane]
                m.d.sync += s3_y[lane].eq(_sat(y, RES_BITS))

        # S3: LIF, write-back, spikes
        spikes = Signal(P)
        v_new = Signal(data.ArrayLayout(signed(RES_BITS), P))
        for lane in range(P):
            v_old = Mux(s3_meta.first, 0, v_rd.data[lane])
            d = ((s3_y[lane] - v_old) * leak) >> shift
            v1 = Signal(signed(RES_BITS + 1), name=f"v1_{lane}")
            m.d.comb += [v1.eq(v_old + d), spikes[lane].eq(v1 >= theta)]
            m.d.comb += v_new[lane].eq(Mux(spikes[lane], 0, v1))

        with m.If(clearing):
            m.d.comb += [v_wr.addr.eq(clear_ptr), v_wr.data.eq(0), v_wr.en.eq(1)]
        with m.Else():
            m.d.comb += [v_wr.addr.eq(s3_addr), v_wr.data.eq(v_new), v_wr.en.eq(s3_valid & ce)]

        with m.If(self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        with m.If(s3_valid & ce):
            m.d.sync += [
                self.out.valid.eq(1),
                self.out.payload.spikes.eq(spikes),
                self.out.payload.group.eq(s3_meta.group),
                self.out.payload.index.eq(s3_meta.index),
            ]

        # membrane clear sweep
        with m.If(self.reset_state):
            m.d.sync += clear_req.eq(1)
        with m.If(clear_req & ~clearing & drained):
            m.d.sync += [clear_req.eq(self.reset_state), clearing.eq(1), clear_ptr.eq(0)]
        with m.If(clearing):
            m.d.sync += clear_ptr.eq(clear_ptr + 1)
            with m.If(clear_ptr == NN * G - 1):
                m.d.sync += clearing.eq(0)

        m.d.comb += self.busy.eq(s1_valid | s2_valid | s3_valid | self.out.valid | clear_req | clearing)
        return m
