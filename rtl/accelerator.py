"""Accelerator top: the host protocol v1 (``docs/protocol.md``) on a byte stream, the engines behind it.

``docs/accelerator.md`` is the prose version of this module (block diagram, op timing, resources);
``driver.emulator`` is the byte-level reference it is held to (``sim/tb_accelerator.py``).

Blocks (one ``sync`` domain, one byte per cycle on each side):

* :class:`FrameReceiver` hunts for the sync byte ``0xA5``, reads the header, writes the payload into
  the byte-wide **frame buffer**, keeps the first :data:`HEAD_BYTES` payload bytes (an op's header)
  in registers, checks the CRC-16/CCITT-FALSE on the fly and answers an oversize length at once; a
  frame whose next byte does not come within ``frame_timeout`` cycles becomes an ``ERR_TRUNCATED``
  job. A complete frame is held (``rx.ready = 0``) until the executor has finished with it.
* The **executor** (one FSM in :class:`Accelerator`) runs one job at a time, only once the
  transmitter has finished reading the previous response: the frame checks in the protocol's order
  (CRC, version, opcode, payload length, ranges, written marks) and only then the op, which writes
  the response data into the byte-wide **response buffer**.
* :class:`FrameTransmitter` sends ``0x5A``, the header, the status byte, the response buffer and the
  CRC, one byte per cycle, holding each byte until ``tx.ready`` (nothing lost under backpressure).
  It overlaps with the reception of the next frame.
* Engines: ``rtl.spike_accum.SpikeAccumulator`` (LINEAR; its weight memory is written through its
  ``wload`` stream), ``rtl.attention.AttentionEngine`` (ATTENTION), and a serial requant unit (one
  channel per cycle, per-channel ``M, S, B`` memory) behind both: ``intops.requant`` and saturation to
  ``out_bits``. LIF runs on a serial ``intops.lif_step`` datapath with the membrane memory
  (``membrane_rows`` rows of ``P`` int16, per-lane writes).

``rtl.requant_lif.RequantLIF`` is not used: its parameters are addressed per ``(group, lane)``, so a
LINEAR with a ``p_base`` that is not a multiple of ``P`` would need two parameter rows per beat, and
its membranes are tied to a requantised input. The serial units fit the byte-wide buffers: a value
cannot leave faster than its bytes are written.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.attention import OP_CONFIG as ATT_CONFIG
from rtl.attention import OP_KV as ATT_KV
from rtl.attention import OP_Q as ATT_Q
from rtl.attention import AttentionEngine
from rtl.counters import EventCounters
from rtl.spike_accum import OP_CONFIG as LIN_CONFIG
from rtl.spike_accum import OP_TOKEN as LIN_TOKEN
from rtl.spike_accum import SpikeAccumulator, thermometer

__all__ = [
    "VERSION", "SYNC_HOST", "SYNC_DEVICE", "HEAD_BYTES",
    "OP_INFO", "OP_RESET", "OP_WRITE_WEIGHTS", "OP_WRITE_PARAMS", "OP_WRITE_LIF", "OP_LINEAR", "OP_LIF",
    "OP_ATTENTION", "OP_COUNTERS", "OP_CLEAR_COUNTERS",
    "OK", "ERR_CRC", "ERR_VERSION", "ERR_OPCODE", "ERR_LENGTH", "ERR_RANGE", "ERR_TRUNCATED", "ERR_UNLOADED",
    "ERR_ENGINE", "ENGINE_LINEAR", "ENGINE_ATTENTION", "COUNTER_NAMES",
    "JOB_FRAME", "JOB_OVERSIZE", "JOB_TRUNCATED",
    "crc16", "crc16_byte", "FrameReceiver", "FrameTransmitter", "AcceleratorConfig", "Accelerator",
    "COLLISION_FREE_MEMORIES", "yosys_collision_free", "ONE_HOT_FSMS", "yosys_one_hot_fsms", "yosys_after_read",
]

VERSION = 1
SYNC_HOST, SYNC_DEVICE = 0xA5, 0x5A
OP_INFO, OP_RESET, OP_WRITE_WEIGHTS, OP_WRITE_PARAMS, OP_WRITE_LIF = 0x01, 0x02, 0x03, 0x04, 0x05
OP_LINEAR, OP_LIF, OP_ATTENTION, OP_COUNTERS, OP_CLEAR_COUNTERS = 0x06, 0x07, 0x08, 0x09, 0x0A
OK = 0
ERR_CRC, ERR_VERSION, ERR_OPCODE, ERR_LENGTH, ERR_RANGE, ERR_TRUNCATED, ERR_UNLOADED, ERR_ENGINE = range(1, 9)
ENGINE_LINEAR, ENGINE_ATTENTION = 1, 2
CMD_KV, CMD_V_PAIR, CMD_Q, CMD_CONST = 1, 2, 3, 4
COUNTER_NAMES = (
    "frames", "errors", "garbage_bytes", "bytes_in", "bytes_out",
    "linear_busy", "linear_starved", "linear_blocked", "linear_spikes", "linear_acc_ops",
    "attention_busy", "attention_starved", "attention_blocked", "attention_spikes", "attention_acc_ops",
    "requant_lif_busy",
)
HEAD_BYTES = 13            # the longest op header (LINEAR), kept in registers by the receiver
JOB_FRAME, JOB_OVERSIZE, JOB_TRUNCATED = 0, 1, 2
MAX_SHIFT = 47             # intops.MAX_SHIFT
_LIN_HDR, _LIF_HDR, _ATT_HDR, _WW_HDR, _WP_HDR, _WL_LEN = 13, 9, 7, 4, 2, 5
_PARAM_BYTES = 7           # i16 M, u8 S, i32 B
_OVERHEAD = 9              # response frame bytes besides the data: header 6, status 1, CRC 2
#: The accelerator's memories whose read data is never used in a cycle in which their (single) write
#: port can write: the frame buffer is written only while no job runs (the receiver holds a complete
#: frame until the executor is done with it); the written marks and the requant parameters are written
#: by WRITE_WEIGHTS / WRITE_PARAMS and RESET jobs, and read only by LINEAR / ATTENTION jobs (the
#: parameters by the requant pipeline, drained before a job ends); the membranes are read (read enable
#: high) only in LIF5 and LIF_SUB, and written only in the cycle after SWEEP or LIF_STEP (never one of
#: those); the response buffer is written only during a job, which starts once the transmitter is done
#: with the previous response, and the transmitter uses a data byte from it at the earliest 7 cycles
#: (the frame header) after the job's last write; the attention engine's KV memory forwards the write
#: of a read's cycle from a register instead of using the read (``b_hit2``); the spike-accumulate
#: engine's weight rows are written by WRITE_WEIGHTS jobs only, never while a LINEAR job reads them.
#: A read during a write is therefore a
#: don't-care, and synthesis need not emulate the read-first result (on the iCE40 and ECP5 block RAMs
#: that is a compare of the read address with the write address, behind the executor's pointers).
COLLISION_FREE_MEMORIES = ("frame_buf", "weight_marks", "param_marks", "params_m", "params_s", "params_b",
                           "membranes", "resp_buf", "kv_mem", "w_mem")


def yosys_collision_free() -> str:
    """Yosys commands, to run after ``read_rtlil``: the read ports of :data:`COLLISION_FREE_MEMORIES`
    get ``COLLISION_X_MASK = 1`` (each memory has one write port), what Yosys' Verilog frontend sets for
    a ``(* no_rw_check *)`` memory. Simulation is unaffected (the design never reads during a write)."""
    return "\n".join(f"setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:MEMID=\\{name} %i"
                     for name in COLLISION_FREE_MEMORIES)


#: The state registers of the accelerator's FSMs (``m.FSM(name=...)`` names them ``<name>_state``) that
#: synthesis re-encodes one-hot: the executor's (about 70 states; binary, its next-state logic and the
#: state decodes in front of every enable were the slowest paths at 64 lanes) and the receiver's.
ONE_HOT_FSMS = ("exec_state", "rx_state")


def yosys_one_hot_fsms() -> str:
    """Yosys commands, to run after ``read_rtlil``: :data:`ONE_HOT_FSMS` lose their ``init`` attribute
    and get ``fsm_encoding "one-hot"``, so that ``synth_*``'s ``fsm`` pass extracts and re-encodes them.

    Yosys' ``fsm_detect`` skips any register with an initial value (a re-encoding could not keep the
    power-up state). Both FSMs have a synchronous reset to their initial state, and every board top
    (:mod:`bitstreams.boards`) holds ``sync`` in reset from configuration until its PLL locks
    (``ResetSynchronizer``, whose own flip-flops start set), so the initial value is never what starts
    them. Simulation runs the Verilog with the initial values and is unaffected."""
    wires = " ".join(f"w:{name}" for name in ONE_HOT_FSMS)
    return f'setattr -unset init {wires}\nsetattr -set fsm_encoding "one-hot" {wires}'


def yosys_after_read() -> str:
    """Every Yosys command the builds run after ``read_rtlil``: :func:`yosys_collision_free` and
    :func:`yosys_one_hot_fsms`, one per line."""
    return yosys_collision_free() + "\n" + yosys_one_hot_fsms()


# --------------------------------------------------------------------------------------------
# CRC-16/CCITT-FALSE
# --------------------------------------------------------------------------------------------

def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE in Python (poly 0x1021, init 0xFFFF, MSB first, no xorout): the bitwise
    algorithm :func:`crc16_byte` unrolls (``crc16(b"123456789") == 0x29B1``)."""
    for byte in bytes(data):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _crc16_terms() -> list[list[int]]:
    """For each bit of the next CRC, the input bits it is the XOR of (0..15 the CRC, 16..23 the byte).

    The 8 unrolled steps of ``c = (c << 1) ^ (c[15] ? 0x1021 : 0)`` after ``c ^= byte << 8``, done on
    sets of input bits (the CRC is linear over GF(2))."""
    c = [{i} ^ ({16 + i - 8} if i >= 8 else set()) for i in range(16)]
    for _ in range(8):
        top = c[15]
        c = [set() if i == 0 else set(c[i - 1]) for i in range(16)]
        for i in range(16):
            if (0x1021 >> i) & 1:
                c[i] ^= top
    return [sorted(bits) for bits in c]


_CRC16_TERMS = _crc16_terms()


def crc16_byte(crc, byte):
    """The CRC after one more byte, as a flat XOR network (one XOR of input bits per output bit)."""
    src = Cat(crc, byte)
    outs = []
    for bits in _CRC16_TERMS:
        v = src[bits[0]]
        for b in bits[1:]:
            v = v ^ src[b]
        outs.append(v)
    return Cat(*outs)


def _sat(x, bits: int):
    """Signed ``x`` saturated to ``bits`` bits. ``x`` fits when its bits from ``bits - 1`` up are all equal
    (no compare: a carry chain per bound would be long and, on the iCE40, a CARRY cell per bit)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    top = x[bits - 1:]
    return Mux(~top.any() | top.all(), x[:bits].as_signed(), Mux(x[-1], lo, hi))


# --------------------------------------------------------------------------------------------
# Receiver
# --------------------------------------------------------------------------------------------

class FrameReceiver(wiring.Component):
    """Byte stream -> frames: sync hunt, header, payload into the frame buffer, CRC, timeout.

    Every accepted byte pulses ``byte_in`` (and ``garbage`` when it is skipped while hunting). A
    finished frame (``job_kind = JOB_FRAME``, ``crc_ok``), an oversize length (``JOB_OVERSIZE``, as
    soon as the length is in; the payload is not consumed) or a timeout (``JOB_TRUNCATED``: no byte for
    ``frame_timeout`` cycles inside a frame; ``opcode`` / ``tag`` are 0 when not received) raise
    ``job_valid`` and hold it, with ``rx.ready = 0``, until ``job_done``; the header fields, ``length``
    and ``head`` (the first :data:`HEAD_BYTES` payload bytes) stay valid meanwhile. Payload byte ``k``
    is written to frame buffer address ``k`` (``fb_we``, ``fb_addr``, ``fb_data``).
    """

    def __init__(self, *, max_payload: int, frame_timeout: int, head_bytes: int = HEAD_BYTES):
        if not 1 <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be in 1..65535, got {max_payload}")
        if frame_timeout < 2:
            raise ValueError(f"frame_timeout must be >= 2 cycles, got {frame_timeout}")
        self.max_payload = max_payload
        self.frame_timeout = frame_timeout
        self.head_bytes = head_bytes
        super().__init__({
            "rx": In(stream.Signature(8)),
            "fb_we": Out(1), "fb_addr": Out(range(max(2, max_payload))), "fb_data": Out(8),
            "byte_in": Out(1), "garbage": Out(1),
            "job_valid": Out(1), "job_kind": Out(2), "crc_ok": Out(1),
            "version": Out(8), "opcode": Out(8), "tag": Out(8), "length": Out(16),
            "head": Out(data.ArrayLayout(8, head_bytes)),
            "job_done": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        rx = self.rx
        byte = rx.payload
        take = Signal()
        m.d.comb += take.eq(rx.valid & rx.ready)

        crc = Signal(16)
        crc_lo = Signal(8)
        len_lo = Signal(8)
        hcnt = Signal(range(6))
        k = Signal(range(self.max_payload + 1))         # payload bytes received
        idle = Signal(range(self.frame_timeout))        # cycles since the frame's last byte
        crc_next = Signal(16)
        m.d.comb += crc_next.eq(crc16_byte(crc, byte))

        def in_frame() -> None:
            """Bytes count, the timer restarts on a byte, and a frame idle for frame_timeout cycles ends."""
            m.d.comb += [rx.ready.eq(1), self.byte_in.eq(take)]
            with m.If(take):
                m.d.sync += idle.eq(0)
            with m.Elif(idle == self.frame_timeout - 1):
                m.d.sync += self.job_kind.eq(JOB_TRUNCATED)
                m.next = "HOLD"
            with m.Else():
                m.d.sync += idle.eq(idle + 1)

        with m.FSM(name="rx"):
            with m.State("HUNT"):
                m.d.comb += [rx.ready.eq(1), self.byte_in.eq(take), self.garbage.eq(take & (byte != SYNC_HOST))]
                with m.If(take & (byte == SYNC_HOST)):
                    m.d.sync += [crc.eq(0xFFFF), hcnt.eq(1), idle.eq(0), self.version.eq(0),
                                 self.opcode.eq(0), self.tag.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                in_frame()
                with m.If(take):
                    m.d.sync += [crc.eq(crc_next), hcnt.eq(hcnt + 1)]
                    with m.Switch(hcnt):
                        with m.Case(1):
                            m.d.sync += self.version.eq(byte)
                        with m.Case(2):
                            m.d.sync += self.opcode.eq(byte)
                        with m.Case(3):
                            m.d.sync += self.tag.eq(byte)
                        with m.Case(4):
                            m.d.sync += len_lo.eq(byte)
                        with m.Case(5):
                            length = Cat(len_lo, byte)
                            m.d.sync += [self.length.eq(length), k.eq(0)]
                            with m.If(length > self.max_payload):
                                m.d.sync += self.job_kind.eq(JOB_OVERSIZE)
                                m.next = "HOLD"
                            with m.Elif(length == 0):
                                m.next = "CRC_LO"
                            with m.Else():
                                m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                in_frame()
                m.d.comb += [self.fb_we.eq(take), self.fb_addr.eq(k), self.fb_data.eq(byte)]
                with m.If(take):
                    m.d.sync += [crc.eq(crc_next), k.eq(k + 1)]
                    with m.If(k < self.head_bytes):
                        m.d.sync += self.head[k[:max(1, (self.head_bytes - 1).bit_length())]].eq(byte)
                    with m.If(k == self.length - 1):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                in_frame()
                with m.If(take):
                    m.d.sync += crc_lo.eq(byte)
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                in_frame()
                with m.If(take):
                    m.d.sync += [self.crc_ok.eq(Cat(crc_lo, byte) == crc), self.job_kind.eq(JOB_FRAME)]
                    m.next = "HOLD"
            with m.State("HOLD"):
                m.d.comb += self.job_valid.eq(1)
                with m.If(self.job_done):
                    m.next = "HUNT"
        return m


# --------------------------------------------------------------------------------------------
# Transmitter
# --------------------------------------------------------------------------------------------

class FrameTransmitter(wiring.Component):
    """One response frame per ``start`` pulse (only while ``busy = 0``).

    Sends ``0x5A, 1, opcode, tag, u16 (length + 1), status``, ``length`` data bytes read from the
    response buffer (``rd_addr`` -> ``rd_data``, a synchronous read port: the address is the one of the
    byte loaded next, so the data is there when it is needed), then the CRC of bytes ``1 .. 6 +
    length``. ``tx.payload`` is a register held until its transfer; a byte is loaded whenever the
    register is empty or being taken, so the frame leaves at one byte per cycle with a ready sink.
    ``busy`` falls once the last byte is in the output register: the buffer is free from then on.
    """

    def __init__(self, *, depth: int):
        self.depth = depth
        super().__init__({
            "tx": Out(stream.Signature(8)),
            "start": In(1), "opcode": In(8), "tag": In(8), "status": In(8), "length": In(16),
            "busy": Out(1),
            "rd_addr": Out(range(max(2, depth))), "rd_data": In(8),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        tx = self.tx
        pos = Signal(range(self.depth + 9))
        n = Signal(range(self.depth + 1))
        op, tag, st = Signal(8), Signal(8), Signal(8)
        crc = Signal(16)                       # the CRC of the bytes loaded before tx.payload
        crc_pend = Signal()                    # tx.payload is a CRC byte not yet in `crc`
        crc_now = Signal(16)                   # ... and with it (from registers: the CRC network is off
        m.d.comb += crc_now.eq(Mux(crc_pend, crc16_byte(crc, tx.payload), crc))   # the buffer's read path)
        load = Signal()
        m.d.comb += load.eq(self.busy & (~tx.valid | tx.ready))

        plen = Signal(16)
        m.d.comb += plen.eq(n + 1)
        # the output byte is one of two registers: a buffer byte goes from the read port straight into
        # `dat` (no multiplexer behind the block RAM), a header or CRC byte into `hdr`
        hdr, dat, from_buf = Signal(8), Signal(8), Signal()
        m.d.comb += tx.payload.eq(Mux(from_buf, dat, hdr))
        hdr_byte = Signal(8)
        with m.If(pos < 7):
            m.d.comb += hdr_byte.eq(Array([C(SYNC_DEVICE, 8), C(VERSION, 8), op, tag, plen[:8], plen[8:], st])[pos[:3]])
        with m.Elif(pos == n + 7):
            m.d.comb += hdr_byte.eq(crc_now[:8])
        with m.Else():
            m.d.comb += hdr_byte.eq(crc_now[8:])
        pos_next = Signal.like(pos)
        m.d.comb += [pos_next.eq(Mux(load, pos + 1, pos)), self.rd_addr.eq(pos_next - 7)]

        with m.If(tx.ready):
            m.d.sync += tx.valid.eq(0)
        m.d.sync += [crc.eq(crc_now), crc_pend.eq(0)]
        with m.If(load):
            m.d.sync += [hdr.eq(hdr_byte), dat.eq(self.rd_data), from_buf.eq((pos >= 7) & (pos < n + 7)),
                         tx.valid.eq(1), pos.eq(pos + 1)]
            with m.If((pos >= 1) & (pos < n + 7)):
                m.d.sync += crc_pend.eq(1)
            with m.If(pos == n + 8):
                m.d.sync += self.busy.eq(0)
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), pos.eq(0), crc.eq(0xFFFF), crc_pend.eq(0), n.eq(self.length),
                         op.eq(self.opcode), tag.eq(self.tag), st.eq(self.status)]
        return m


# --------------------------------------------------------------------------------------------
# Accelerator
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AcceleratorConfig:
    """The accelerator's sizes (reported by INFO, :meth:`info`) and its frame timeout.

    ``lanes`` (P, a power of two) is the weight-row width, the engines' lanes and the membrane row
    width; ``in_max`` the largest LINEAR ``c_in`` (the spike-accumulate engine's C_IN_MAX, 1..1024);
    ``weight_rows`` rows of ``P`` int8 weights; ``param_channels`` requant channels ``(M, S, B)``;
    ``membrane_rows`` rows of ``P`` int16 membranes; ``att_dim_max`` / ``att_max_tokens`` the attention
    engine's D_MAX (at most 64; a multiple of ``P`` when ``P < D_MAX``) and N_MAX; the attention engine
    has ``att_lanes = min(P, D_MAX)`` lanes. ``att_dim_max = att_max_tokens = 0`` builds no attention
    engine (the iCE40 configuration): INFO says so, ATTENTION is answered ``ERR_OPCODE``, and the driver
    runs attention layers on the host. ``max_payload`` the largest frame payload
    both ways (the size of the frame and response buffers); ``clock_hz`` what INFO reports;
    ``frame_timeout`` the cycles without a byte inside a frame before ``ERR_TRUNCATED``;
    ``linear_queue`` the spike-accumulate engine's command queue depth (0..2, its ``queue_depth``;
    not visible to the host but in elapsed cycles).
    """

    lanes: int = 16
    in_max: int = 256
    weight_rows: int = 1024
    param_channels: int = 256
    membrane_rows: int = 1024
    att_dim_max: int = 32
    att_max_tokens: int = 256
    max_payload: int = 1024
    clock_hz: int = 100_000_000
    frame_timeout: int = 1_000_000
    linear_queue: int = 2

    def __post_init__(self) -> None:
        lanes = self.lanes
        if lanes < 1 or lanes > 128 or lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two in 1..128, got {lanes}")
        if not 1 <= self.in_max <= 1024:
            raise ValueError(f"in_max must be in 1..1024, got {self.in_max}")
        for name in ("weight_rows", "param_channels"):
            if not 1 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"{name} must be in 1..65535, got {getattr(self, name)}")
        if (self.att_dim_max == 0) != (self.att_max_tokens == 0):
            raise ValueError("att_dim_max and att_max_tokens are both 0 (no attention engine) or both >= 1, "
                             f"got {self.att_dim_max} and {self.att_max_tokens}")
        if not 0 <= self.att_max_tokens <= 0xFFFF:
            raise ValueError(f"att_max_tokens must be in 1..65535, got {self.att_max_tokens}")
        if not 1 <= self.membrane_rows <= 1 << 24:
            raise ValueError(f"membrane_rows must be in 1..2**24, got {self.membrane_rows}")
        if self.att_dim_max and (not 1 <= self.att_dim_max <= 64 or self.att_dim_max % self.att_lanes):
            raise ValueError(f"att_dim_max must be in 1..64 and a multiple of lanes = {lanes} (or at most lanes), "
                             f"got {self.att_dim_max}")
        need = max(1 + 4 * len(COUNTER_NAMES), _WW_HDR + lanes, _LIN_HDR)
        if not need <= self.max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be in {need}..65535, got {self.max_payload}")
        if not 1 <= self.clock_hz <= 0xFFFF_FFFF:
            raise ValueError(f"clock_hz must fit u32, got {self.clock_hz}")
        if self.frame_timeout < 2:
            raise ValueError(f"frame_timeout must be >= 2, got {self.frame_timeout}")
        if self.linear_queue not in (0, 1, 2):
            raise ValueError(f"linear_queue must be 0, 1 or 2, got {self.linear_queue}")

    @property
    def att_lanes(self) -> int:
        """The attention engine's lanes: ``min(lanes, att_dim_max)`` (a head is at most 64 wide, so lanes
        beyond ``att_dim_max`` would idle; the spike-accumulate engine keeps all ``lanes``)."""
        return min(self.lanes, self.att_dim_max)

    def info(self) -> dict[str, int]:
        """The INFO values (``driver.protocol.DeviceInfo`` field names, in order)."""
        return {"version": VERSION, "lanes": self.lanes, "in_max": self.in_max, "weight_rows": self.weight_rows,
                "param_channels": self.param_channels, "membrane_rows": self.membrane_rows,
                "att_dim_max": self.att_dim_max, "att_max_tokens": self.att_max_tokens,
                "max_payload": self.max_payload, "clock_hz": self.clock_hz}

    def info_bytes(self) -> bytes:
        """The INFO response data (23 bytes)."""
        return struct.pack("<BBHIHIBHHI", *self.info().values())


class Accelerator(wiring.Component):
    """The accelerator behind the host protocol v1: ``rx`` host -> device bytes, ``tx`` device -> host.

    Keyword arguments are the fields of :class:`AcceleratorConfig` (defaults: P = 16, in_max = 256,
    1024 weight rows, 256 parameter channels, 1024 membrane rows, D_MAX = 32, N_MAX = 256,
    max_payload = 1024, 100 MHz, a 10 ms frame timeout), also readable as attributes.
    """

    def __init__(self, **config):
        self.config = AcceleratorConfig(**config)
        for f in fields(AcceleratorConfig):
            setattr(self, f.name, getattr(self.config, f.name))
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
        })

    def info(self) -> dict[str, int]:
        """The INFO values (``driver.protocol.DeviceInfo`` field names, in order)."""
        return self.config.info()

    def info_bytes(self) -> bytes:
        """The INFO response data (23 bytes)."""
        return self.config.info_bytes()

    def elaborate(self, platform) -> Module:
        m = Module()
        P, R, PC, MR = self.lanes, self.weight_rows, self.param_channels, self.membrane_rows
        DM, NT, MP = self.att_dim_max, self.att_max_tokens, self.max_payload
        LGP = (P - 1).bit_length()

        # ---- blocks ---------------------------------------------------------------------------------
        m.submodules.receiver = rcv = FrameReceiver(max_payload=MP, frame_timeout=self.frame_timeout)
        m.submodules.transmitter = txu = FrameTransmitter(depth=MP)
        m.submodules.linear = lin = SpikeAccumulator(in_max=self.in_max, lanes=P, weight_rows=R,
                                                     queue_depth=self.linear_queue)
        PA = self.config.att_lanes
        att = None                                           # att_dim_max = 0: no attention engine
        if DM:
            m.submodules.attention = att = AttentionEngine(dim_max=DM, lanes=PA, max_tokens=NT)
        wiring.connect(m, wiring.flipped(self.rx), rcv.rx)
        wiring.connect(m, txu.tx, wiring.flipped(self.tx))

        m.submodules.frame_buf = fbm = Memory(shape=8, depth=MP, init=[])   # (COLLISION_FREE_MEMORIES)
        fb_wr, fb_rd = fbm.write_port(), fbm.read_port()
        m.submodules.resp_buf = obm = Memory(shape=8, depth=MP, init=[])
        ob_wr, ob_rd = obm.write_port(), obm.read_port()
        m.submodules.weight_marks = wmm = Memory(shape=1, depth=R, init=[])
        wm_wr, wm_rd = wmm.write_port(), wmm.read_port()
        # a block RAM even where it is small: as flip-flops its read multiplexer sits behind the scan pointer
        m.submodules.param_marks = pmm = Memory(shape=1, depth=PC, init=[], attrs={"ram_style": "block"})
        pm_wr, pm_rd = pmm.write_port(), pmm.read_port()
        # requant parameters: M and S are read at the pipeline's first stage, B three stages later (its own
        # memory, so B is not carried through registers); WRITE_PARAMS writes them a byte per cycle
        m.submodules.params_m = pmem_m = Memory(shape=16, depth=PC, init=[])
        prm_m_wr, prm_m_rd = pmem_m.write_port(granularity=8), pmem_m.read_port()
        m.submodules.params_s = pmem_s = Memory(shape=6, depth=PC, init=[])
        prm_s_wr, prm_s_rd = pmem_s.write_port(), pmem_s.read_port()
        m.submodules.params_b = pmem_b = Memory(shape=32, depth=PC, init=[])
        prb_wr, prb_rd = pmem_b.write_port(granularity=8), pmem_b.read_port()
        # the parameter memories are written from registers (WP_REC sets them, the write follows a cycle
        # later): the frame buffer's byte lands in a register, not in three block RAMs across the die
        p_wa, p_wd = Signal(16), Signal(8)
        p_wem, p_wes, p_web = Signal(2), Signal(), Signal(4)
        m.d.sync += [p_wem.eq(0), p_wes.eq(0), p_web.eq(0)]
        m.d.comb += [prm_m_wr.addr.eq(p_wa), prm_s_wr.addr.eq(p_wa), prb_wr.addr.eq(p_wa),
                     prm_m_wr.data.eq(Cat(p_wd, p_wd)), prm_s_wr.data.eq(p_wd[:6]),
                     prb_wr.data.eq(Cat(p_wd, p_wd, p_wd, p_wd)),
                     prm_m_wr.en.eq(p_wem), prm_s_wr.en.eq(p_wes), prb_wr.en.eq(p_web)]
        m.submodules.membranes = vm = Memory(shape=data.ArrayLayout(signed(16), P), depth=MR, init=[])
        v_wr, v_rd = vm.write_port(granularity=1), vm.read_port()

        m.d.comb += [fb_wr.addr.eq(rcv.fb_addr), fb_wr.data.eq(rcv.fb_data), fb_wr.en.eq(rcv.fb_we)]
        m.d.comb += [txu.rd_data.eq(ob_rd.data), ob_rd.addr.eq(txu.rd_addr)]

        # ---- request header fields (held by the receiver while the job runs) ------------------------
        L = Signal(range(MP + 1))                            # a JOB_FRAME's length is at most MP
        m.d.comb += L.eq(rcv.length)
        hb = Cat(*[rcv.head[i] for i in range(HEAD_BYTES)])

        def hf(offset: int, size: int):
            return hb[8 * offset:8 * (offset + size)]

        def ceil_div(x, lg: int):
            return (x + (1 << lg) - 1) >> lg

        def ob_fields(out_bits):
            ok = (out_bits == 8) | (out_bits == 16) | (out_bits == 32)
            sel = Mux(out_bits == 32, 2, Mux(out_bits == 16, 1, 0))      # log2 of the value bytes
            return ok, sel

        # LINEAR
        l_cin, l_cout, l_wbase, l_pbase, l_ob, l_tokens = hf(0, 2), hf(2, 2), hf(4, 4), hf(8, 2), hf(10, 1), hf(11, 2)
        l_B = Signal(14)                                     # bytes per token: ceil(c_in / 8)
        l_G = Signal(17)                                     # ceil(c_out / P)
        m.d.comb += [l_B.eq(ceil_div(l_cin, 3)), l_G.eq(ceil_div(l_cout, LGP))]
        l_ob_ok, l_ob_sel = ob_fields(l_ob)
        l_out_lim = Signal(range(MP))                        # (MP - 1) >> sel: tokens * c_out above it overflows
        m.d.sync += l_out_lim.eq(Mux(l_ob_sel == 2, (MP - 1) >> 2, Mux(l_ob_sel == 1, (MP - 1) >> 1, MP - 1)))
        # LIF
        f_ch, f_neuron, f_tokens, f_first = hf(0, 2), hf(2, 4), hf(6, 2), hf(8, 1)
        f_gc = Signal(17)
        m.d.comb += f_gc.eq(ceil_div(f_ch, LGP))
        # ATTENTION
        a_mode, a_dim, a_tokens, a_pbase, a_ob = hf(0, 1), hf(1, 1), hf(2, 2), hf(4, 2), hf(6, 1)
        a_d = Signal(6)                                      # bytes per bitmap: ceil(dim / 8)
        m.d.comb += a_d.eq(ceil_div(a_dim, 3))
        a_ob_ok, a_ob_sel = ob_fields(a_ob)

        def pad_mask(n):
            """Bits of the last bitmap byte at or above ``n`` channels (0 when ``n % 8 == 0``)."""
            return Mux(n[:3] == 0, 0, (C(0xFF, 8) << n[:3])[:8])

        l_pad = Signal(8)                                    # registered: the header is complete (and
        a_pad = Signal(8)                                    # stable) at least 2 cycles before a job starts
        m.d.sync += [l_pad.eq(pad_mask(l_cin)), a_pad.eq(pad_mask(a_dim))]

        # ---- pointers into the memories: address = next value, so data = memory[pointer] ------------
        # A pointer's next value comes from registers only: a one-cycle load (ld, val) or the pointer plus a
        # step that holds until changed. The FSM sets them a cycle ahead, on the transition into the state
        # whose address they give (see `walk`), so no state decode sits in front of a block RAM address.
        class Walk:
            def __init__(self, name: str, depth: int, step_w: int = 1):
                self.ptr = Signal(range(depth + 1), name=f"{name}_ptr")
                self.ld = Signal(name=f"{name}_ld")
                self.val = Signal(range(depth + 1), name=f"{name}_val")
                self.step = Signal(step_w, name=f"{name}_step")
                self.next = Signal(range(depth + 1), name=f"{name}_next")
                m.d.comb += self.next.eq(Mux(self.ld, self.val, self.ptr + self.step))
                m.d.sync += [self.ptr.eq(self.next), self.ld.eq(0)]

            def load(self, value, step=0) -> list:
                """The next cycle's address is ``value``; the pointer then moves by ``step`` a cycle."""
                return [self.ld.eq(1), self.val.eq(value), self.step.eq(step)]

            def go(self, step) -> list:
                """From the next cycle on the pointer moves by ``step`` a cycle (0: it holds)."""
                return [self.step.eq(step)]

        fbw = Walk("fb", MP, step_w=max(1, (max(_PARAM_BYTES, -(-self.in_max // 8))).bit_length()))
        at_end = Signal()                                    # rp == L, from the pointer's next value
        m.d.sync += at_end.eq(fbw.next == L)
        wmw, pmw = Walk("wm", R), Walk("pm", PC)                        # the two mark memories' scans
        rp = fbw.ptr
        mrow, mrow_next = Signal(range(MR + 1)), Signal(range(MR + 1))  # membrane rows
        m.d.comb += mrow_next.eq(mrow)                                   # overridden by the FSM below
        m.d.sync += mrow.eq(mrow_next)
        m.d.comb += [fb_rd.addr.eq(fbw.next), wm_rd.addr.eq(wmw.next), pm_rd.addr.eq(pmw.next)]
        # the mark memories are written from registers, a cycle after the state that sets them (SWEEP,
        # WW_SEND, WP_REC; nothing reads a mark in the cycle after)
        wm_wa, wm_wd, wm_we = Signal.like(wm_wr.addr), Signal(), Signal()
        pm_wa, pm_wd, pm_we = Signal.like(pm_wr.addr), Signal(), Signal()
        m.d.sync += [wm_we.eq(0), pm_we.eq(0)]
        m.d.comb += [wm_wr.addr.eq(wm_wa), wm_wr.data.eq(wm_wd), wm_wr.en.eq(wm_we),
                     pm_wr.addr.eq(pm_wa), pm_wr.data.eq(pm_wd), pm_wr.en.eq(pm_we)]
        # the membrane read port from registers too (its block RAMs sit across the die): LIF4 and LIF_HI
        # set address and enable, the row is read at the end of LIF5 / LIF_SUB
        v_ra, v_re = Signal(range(MR + 1)), Signal()
        m.d.sync += v_re.eq(0)
        m.d.comb += [v_rd.addr.eq(v_ra), v_rd.en.eq(v_re)]
        # the membrane write port from registers (the row's block RAMs sit across the die): the sweep and
        # LIF_STEP set address, value and lane enables, the write happens in the cycle after
        v_wa, v_wd, v_we = Signal(range(MR + 1)), Signal(16), Signal(P)
        m.d.sync += v_we.eq(0)
        m.d.comb += [v_wr.addr.eq(v_wa), v_wr.en.eq(v_we)] + [v_wr.data[lane].eq(v_wd) for lane in range(P)]
        fb_byte = fb_rd.data
        # the byte again, one cycle later, from a register beside the block RAM: the wide registers (a token,
        # a weight row, the attention bitmaps) and the byte checks take it from there, not from the port
        fb_q = Signal(8)
        m.d.sync += fb_q.eq(fb_byte)

        # ---- shared multiplier: operand registers set two states before the product is used ------------
        # every check compares a size with a limit of at most LIM, so operands are clamped to K bits
        # (2**K - 1 > LIM): a clamped operand makes the product (or sum) exceed LIM exactly when the true
        # one does (the other operand 0 gives 0 both ways), and values that pass the checks are exact
        LIM = max(MP, R, PC, MR)
        K = (LIM + 1).bit_length()

        def clamp(x):
            """``x`` (unsigned) if it fits ``K`` bits, else ``2**K - 1``."""
            x = Value.cast(x)
            return x if len(x) <= K else Mux(x[K:].any(), (1 << K) - 1, x[:K])

        mul_a, mul_b = Signal(K + 1), Signal(K)              # (mul_a: also a sum of two clamped operands)
        mul_p = Signal(K)                                    # clamp(mul_a * mul_b): every use compares it
        # the product's low bits and "above K bits", registered straight from the multiplier: the high bits'
        # OR in groups of 4 (one LUT after the DSP, whose own delay fills most of the cycle), then ORed by mul_p
        prod = mul_a * mul_b
        hi_bits = prod[K:]
        mul_lo, mul_hi = Signal(K), Signal(-(-len(hi_bits) // 4))
        m.d.sync += [mul_lo.eq(prod[:K]), mul_hi.eq(Cat(hi_bits[i:i + 4].any() for i in range(0, len(hi_bits), 4)))]
        m.d.comb += mul_p.eq(Mux(mul_hi.any(), (1 << K) - 1, mul_lo))

        def mul_load(a, b, *, live_a: bool = False):
            """Operands for the product two cycles later. Header operands (stable from two cycles before the
            job on: the payload's header precedes the CRC) are clamped into registers of their own first, so
            the operand registers take a register through the state's multiplexer; ``live_a``: ``a`` is a
            counter, used as it is; ``a`` a tuple of two header operands: their clamped sum (``K + 1`` bits:
            the product exceeds ``LIM`` exactly when the true one does, as for a clamped operand)."""
            def pre(x):
                reg = Signal(K, name=f"mul_pre{len(mul_pre)}")
                mul_pre.append(reg.eq(clamp(x)))            # (assigned every cycle, outside the FSM: below)
                return reg
            if isinstance(a, tuple):
                return [mul_a.eq(pre(a[0]) + pre(a[1])), mul_b.eq(pre(b))]
            return [mul_a.eq(clamp(a) if live_a else pre(a)), mul_b.eq(pre(b))]
        mul_pre: list = []

        def clamped_reg(x, name: str):
            """``clamp(x)`` from a register (header fields and L are stable from the IDLE cycle on)."""
            reg = Signal(K, name=name)
            m.d.sync += reg.eq(clamp(x))
            return reg

        # ---- counters: COUNTER_NAMES in a memory (rtl.counters), the events of each cycle -----------------
        ev_frame, ev_error = Signal(), Signal()
        ev_bytes_out = Signal(range(_OVERHEAD + MP + 1))
        rl_inc = Signal()                                    # a requant / LIF beat this cycle
        lin_run, att_run = Signal(), Signal()                # the engine runs an op of this accelerator
        lev = lin.events
        aev = att.events if att is not None else None
        zero = C(0, 1)
        events = [                                           # (increment, its largest value), COUNTER_NAMES order
            (ev_frame, 1), (ev_error, 1), (rcv.garbage, 1), (rcv.byte_in, 1), (ev_bytes_out, _OVERHEAD + MP),
            (lev.busy, 1), (lin_run & lev.starved, 1), (lin_run & lev.blocked, 1), (lev.spikes, 1),
            (lev.acc_ops, P),
        ]
        if aev is not None:
            events += [(aev.busy, 1), (att_run & aev.starved, 1), (att_run & aev.blocked, 1), (aev.spikes, DM),
                       (aev.acc_ops, PA)]
        else:
            events += [(zero, 0)] * 5
        events.append((rl_inc, 1))
        # the counter memory takes the events and the clear a cycle late, from registers (the engines' event
        # outputs and the executor's state decode do not reach its pending sums in one cycle); the order of
        # clears and increments is the same, and every read (COUNTERS) is more than a cycle after the op
        m.submodules.counters = ctr = EventCounters([mx for _, mx in events])
        m.d.sync += [ctr.inc[k].eq(inc) for k, (inc, _) in enumerate(events)]
        clr = Signal()                                       # CLEAR_COUNTERS / RESET
        m.d.sync += ctr.clear.eq(clr)
        m.d.comb += lin.counters_clear.eq(clr)
        if att is not None:
            m.d.comb += att.counters_clear.eq(clr)

        # ---- back end: engine beats -> values -> requant -> bytes in the response buffer ------------
        W = max(lin.acc_w, att.out_w if att is not None else 0)
        be_att = Signal()                                    # 1: the beats come from the attention engine
        be_valid = Signal()
        be_data = Signal(data.ArrayLayout(signed(W), P))
        be_lane = Signal(range(P + 1))
        be_rem = Signal(range(PC + 1))                       # values of the current token still to emit
        be_chan = Signal(range(PC + 1))                      # their parameter channel (both within PC: checked)
        be_prefix = Signal()                                 # an ATTENTION record header still to emit
        be_raw = Signal(24)                                  # u16 skip, u8 const
        # the job's back-end fields, registered (the header is stable for the whole job, be_att from its
        # first cycle on, and the first beat comes many cycles later): no header decode in the pipeline
        be_n = Signal(range(PC + 1))
        be_pbase = Signal(range(PC + 1))
        be_ob_sel = Signal(2)
        m.d.sync += [be_n.eq(Mux(be_att, a_dim, l_cout)), be_pbase.eq(Mux(be_att, a_pbase, l_pbase)),
                     be_ob_sel.eq(Mux(be_att, a_ob_sel, l_ob_sel))]
        if att is not None:
            att_valid, att_group0 = att.out.valid, att.out.payload.group == 0
            att_raw = Cat(att.out.payload.skip, att.out.payload.const)
            m.d.comb += att.out.ready.eq(~be_valid & be_att)
        else:                                                # be_att stays 0
            att_valid, att_group0, att_raw = C(0, 1), C(0, 1), C(0, 24)
        src_valid = Mux(be_att, att_valid, lin.out.valid)
        src_group0 = Mux(be_att, att_group0, lin.out.payload.group == 0)
        be_take = Signal()
        m.d.comb += [
            lin.out.ready.eq(~be_valid & ~be_att),
            be_take.eq(~be_valid & src_valid),
        ]
        with m.If(be_take):
            m.d.sync += [be_valid.eq(1), be_lane.eq(0)]
            for lane in range(P):
                att_lane = att.out.payload.data[lane] if lane < PA else 0    # PA <= P: lanes above PA idle
                m.d.sync += be_data[lane].eq(Mux(be_att, att_lane, lin.out.payload.data[lane]))
            with m.If(src_group0):
                m.d.sync += [be_rem.eq(be_n), be_chan.eq(be_pbase), be_prefix.eq(be_att),
                             be_raw.eq(att_raw)]

        # requant pipeline: q1 parameter read, qp parameters registered, q2 product, q3 shift by S - 1, q4 rounding
        # (+ 1, >> 1) and B registered, q5 offset add, q6 saturate (and the raw header bytes), writer. Every block
        # RAM output lands in a register (the ECP5's DP16KD clock-to-output is 5.8 ns, nextpnr's model)
        q1_valid, qp_valid, q2_valid, q3_valid, q4_valid, q5_valid, q6_valid = (
            Signal(name=f"q{i}_valid") for i in ("1", "p", "2", "3", "4", "5", "6"))
        q1_raw, qp_raw, q2_raw, q3_raw, q4_raw, q5_raw = (
            Signal(name=f"q{i}_raw") for i in ("1", "p", "2", "3", "4", "5"))
        q1_rawd, qp_rawd, q2_rawd, q3_rawd, q4_rawd, q5_rawd = (
            Signal(24, name=f"q{i}_rawd") for i in ("1", "p", "2", "3", "4", "5"))
        # round half up as (((acc * M) >> (S - 1)) + 1) >> 1, which equals (acc * M + 2**(S-1)) >> S for
        # S >= 1 (write acc * M = q * 2**(S-1) + r, 0 <= r < 2**(S-1)), so no stage is wider than the product
        q1_acc = Signal(signed(W))
        qp_acc = Signal(signed(W))
        qp_m = Signal(signed(16))
        qp_s = Signal(6)
        q2_prod = Signal(signed(W + 16))                     # acc * M, M an i16
        q2_s = Signal(6)
        chan_w = max(1, (PC - 1).bit_length())
        q1_chan, qp_chan, q2_chan = (Signal(chan_w, name=f"q{i}_chan") for i in ("1", "p", "2"))   # B's address
        q3_t = Signal(signed(W + 16))                        # (acc * M) >> (S - 1)
        q4_sh = Signal(signed(W + 16))                       # (... + 1) >> 1
        q4_b = Signal(signed(32))                            # B, read while q2 / q3 hold the value
        q5_y = Signal(signed(max(W + 16, 32) + 1))           # ... + B
        q6_y = Signal(32)
        q6_n = Signal(3)
        wv = Signal(32)                                      # writer: value bytes still to write, LSB first
        wn = Signal(3)
        # the pipeline's enable, ~q6_valid | (wn <= 1), is a register computed from the next values of both:
        # it enables every stage (P values of be_data among them), so it starts at a flip-flop
        ce = Signal(init=1)
        it_take = Signal()
        q6_valid_next = Mux(ce, q5_valid, q6_valid)
        wn_next = Mux(ce & q6_valid, q6_n, Mux(wn != 0, wn - 1, 0))
        m.d.sync += ce.eq(~q6_valid_next | (wn_next <= 1))
        m.d.comb += it_take.eq(be_valid & ce)
        m.d.comb += [prm_m_rd.addr.eq(be_chan), prm_m_rd.en.eq(ce), prm_s_rd.addr.eq(be_chan), prm_s_rd.en.eq(ce),
                     prb_rd.addr.eq(q2_chan), prb_rd.en.eq(ce)]
        with m.If(it_take):
            with m.If(be_prefix):
                m.d.sync += be_prefix.eq(0)
            with m.Else():
                m.d.sync += [be_data.eq(Cat(be_data.as_value()[W:], C(0, W))), be_chan.eq(be_chan + 1),
                             be_rem.eq(be_rem - 1), be_lane.eq(be_lane + 1)]
                with m.If((be_lane == P - 1) | (be_rem == 1)):
                    m.d.sync += be_valid.eq(0)
        with m.If(ce):
            m.d.sync += [q1_valid.eq(it_take), q1_raw.eq(be_prefix), q1_acc.eq(be_data[0]), q1_rawd.eq(be_raw),
                         q1_chan.eq(be_chan)]
            m.d.sync += [qp_valid.eq(q1_valid), qp_raw.eq(q1_raw), qp_rawd.eq(q1_rawd), qp_chan.eq(q1_chan),
                         qp_acc.eq(q1_acc), qp_m.eq(prm_m_rd.data.as_signed()), qp_s.eq(prm_s_rd.data)]
            m.d.sync += [q2_valid.eq(qp_valid), q2_raw.eq(qp_raw), q2_rawd.eq(qp_rawd), q2_chan.eq(qp_chan),
                         q2_prod.eq(qp_acc * qp_m), q2_s.eq(qp_s)]
            m.d.sync += [q3_valid.eq(q2_valid), q3_raw.eq(q2_raw), q3_rawd.eq(q2_rawd),
                         q3_t.eq(q2_prod >> (q2_s - 1)[:6])]
            m.d.sync += [q4_valid.eq(q3_valid), q4_raw.eq(q3_raw), q4_rawd.eq(q3_rawd), q4_sh.eq((q3_t + 1) >> 1),
                         q4_b.eq(prb_rd.data.as_signed())]
            m.d.sync += [q5_valid.eq(q4_valid), q5_raw.eq(q4_raw), q5_rawd.eq(q4_rawd), q5_y.eq(q4_sh + q4_b)]
            sat_y = Mux(be_ob_sel == 2, _sat(q5_y, 32), Mux(be_ob_sel == 1, _sat(q5_y, 16), _sat(q5_y, 8)))
            m.d.sync += [q6_valid.eq(q5_valid), q6_y.eq(Mux(q5_raw, q5_rawd, sat_y[:32])),
                         q6_n.eq(Mux(q5_raw, 3, C(1, 3) << be_ob_sel))]
        be_idle = Signal()
        m.d.comb += be_idle.eq(~be_valid & ~q1_valid & ~qp_valid & ~q2_valid & ~q3_valid & ~q4_valid & ~q5_valid
                               & ~q6_valid & (wn == 0))

        # response buffer writes: the writer, or (in their states) LIF spikes, INFO / COUNTERS, engine errors
        optr = Signal(range(MP + 1))
        put, put_data = Signal(), Signal(8)
        m.d.comb += [put.eq(wn != 0), put_data.eq(wv[:8])]
        with m.If(wn != 0):
            m.d.sync += [wv.eq(wv >> 8), wn.eq(wn - 1)]
        with m.If(ce & q6_valid):
            m.d.sync += [wv.eq(q6_y), wn.eq(q6_n)]
        # (the FSM below overrides put / put_data; the buffer write follows the final values)

        # ---- LIF datapath -------------------------------------------------------------------------------
        lif_leak = Signal(16)
        lif_shift = Signal(4)
        lif_theta = Signal(signed(16))
        lif_written = Signal()
        f_lane = Signal(range(P))
        f_c = Signal(range(MR * P + 1))                      # channel within the token (gc <= MR: checked)
        f_n = Signal(range(MP + 1))                          # token (a response byte each)
        f_tok_row = Signal(range(MR + 1))
        f_row_next = Signal(range(2 * MR + 1))               # f_tok_row + gc, registered in LIF_LO
        f_last_c = Signal()                                  # f_c is the token's last channel (LIF_LO)
        f_byte_end = Signal()                                # LIF_STEP puts a spike byte: f_c % 8 == 7 or f_last_c
        f_lane_we = Signal(P)                                # 1 << f_lane, LIF_STEP's membrane write enables
        f_lane0 = Signal()                                   # f_lane == 0 (LIF_HI)
        f_mrow_after = Signal(range(MR + 1))                 # the next value's membrane row (LIF_HI)
        f_wrow = Signal(range(MR + 1))                       # the membrane row LIF_STEP writes (LIF_HI)
        f_xlo = Signal(8)                                    # (the high byte is fb_q in LIF_SUB)
        f_vold = Signal(signed(16))                          # the membrane before the step
        f_ch_m1 = Signal(16)                                 # channels - 1 (the header is stable)
        m.d.sync += f_ch_m1.eq(f_ch - 1)
        # the membrane row lands in a register straight from the block RAM (f_vrow_p, every cycle: the
        # block RAMs sit across the die, so their slow output gets no logic and a register of its own beside
        # each block), then in f_vrow_q and f_vrow (two more hops towards the LIF datapath, at no cost in the
        # loop: the row is read four cycles before the LIF_LO that uses it), then the lane select in two
        # registered steps: LIF_LO keeps lane
        # f_lane % 8 of each group of 8 lanes (f_vgrp, 0 for a first step), LIF_HI picks the group
        # (f_lane // 8, f_vold). The next value's row is read in LIF_SUB, before this value's write (set in
        # LIF_STEP, done in the cycle after), and held on the port (read enable low); it is in f_vrow from
        # the next LIF_LO on (the first value's: LIF5 reads it, LIF5B-LIF5D wait for it): the memory
        # is never read while it is written (COLLISION_FREE_MEMORIES), and the two values never share a
        # (row, lane)
        f_vrow_p = Signal(data.ArrayLayout(signed(16), P))
        f_vrow_q = Signal(data.ArrayLayout(signed(16), P))
        f_vrow = Signal(data.ArrayLayout(signed(16), P))
        m.d.sync += [f_vrow_p.eq(v_rd.data), f_vrow_q.eq(f_vrow_p), f_vrow.eq(f_vrow_q)]
        LG1 = min(LGP, 3)
        f_vgrp = Array(Signal(signed(16), name=f"f_vgrp{k}") for k in range(P >> LG1))
        f_diff = Signal(signed(17))                          # x - v
        f_prod = Signal(signed(34))                          # (x - v) * L
        f_bits = Signal(8)
        m.d.comb += f_lane.eq(f_c[:LGP] if LGP else 0)
        f_v1 = Signal(signed(18))                            # v + ((x - v) * L >> K), set in LIF_ADD: between
        #                                                      v and x, so 16 bits are enough (intops.lif_step)
        # f_spike = f_v1 >= theta, registered beside f_v1 in LIF_ADD as p >= (theta - v) << K (p = f_prod): for
        # integers, floor(p / 2^K) >= t exactly when p >= t * 2^K, so the compare waits for no shift
        f_spike = Signal()
        f_thr = Signal(signed(17))                           # theta - v (LIF_SUB)
        f_thr_sh = Signal(signed(33))                        # (theta - v) << K (LIF_MUL)
        f_sbits = Signal(8)
        m.d.comb += f_sbits.eq(f_bits | (f_spike << f_c[:3]))

        # ---- executor ----------------------------------------------------------------------------------
        status = Signal(8)
        eng_err = Signal(16)                                 # engine id, engine error code (ERR_ENGINE)
        sweep_job = Signal()                                 # the sweep answers a RESET (else power-on)
        swp = Signal(range(max(R, PC, MR) + 1))
        n_sweep = max(R, PC, MR)
        fi = Signal(range(64))                               # INFO / COUNTERS byte index
        fill_counters = Signal()
        snap = Signal(24)                                    # the upper bytes of the counter being sent
        cval = Signal(32)                                    # the next counter's value (registered)
        fill_next = Signal(range(len(COUNTER_NAMES) + 1))    # the counter FILL strobes next (fi[2:] + 1)
        info_rom = Array([C(b, 8) for b in self.info_bytes()])
        # (the counters below are bounded by the frame: a row, record, token or bitmap has at least a byte)
        i_cnt = Signal(range(MP + 1))                        # rows / records / tokens
        j_cnt = Signal(range(max(P, -(-self.in_max // 8), 8) + 1))   # bytes within a row / token / bitmap / record
        n_rec = Signal(range(MP + 1))
        wp_left = Signal(range(MP + 1))                      # L - (offset of the record walked)
        wp_over = Signal()                                   # channel + records walked > PC
        # byte checks of the walks, two cycles behind the byte: each check of fb_q is registered every cycle
        # (no state decode and no accumulate behind the block RAM), the walk state sets its chk_* flag,
        # which is delayed to meet the check (chk_*_q), and bad_now = bad with the pending check
        bad = Signal()
        bad_now = Signal()
        fb_s_bad, fb_lpad_bad, fb_apad_bad = Signal(), Signal(), Signal()
        chk_s, chk_l, chk_a = Signal(), Signal(), Signal()
        chk_s_q, chk_l_q, chk_a_q = Signal(), Signal(), Signal()
        m.d.sync += [fb_s_bad.eq((fb_q == 0) | (fb_q > MAX_SHIFT)), fb_lpad_bad.eq((fb_q & l_pad) != 0),
                     fb_apad_bad.eq((fb_q & a_pad) != 0), chk_s.eq(0), chk_l.eq(0), chk_a.eq(0),
                     chk_s_q.eq(chk_s), chk_l_q.eq(chk_l), chk_a_q.eq(chk_a)]
        m.d.comb += bad_now.eq(bad | (chk_s_q & fb_s_bad) | (chk_l_q & fb_lpad_bad) | (chk_a_q & fb_apad_bad))
        m.d.sync += bad.eq(bad_now)                          # (the job's first walk state clears it)
        row_reg = Signal(8 * P)
        tok_x = Signal(8 * -(-self.in_max // 8))
        att_a = Signal(8 * -(-DM // 8))
        att_b = Signal(8 * -(-DM // 8))
        att_skip = Signal(16)
        att_kind = Signal(8)
        # a walk state that takes the byte on the port into one of these registers sets its land_* flag;
        # the byte lands from fb_q in the next cycle at the state's byte index (land_j = j_cnt then)
        land_row, land_tok, land_a, land_b, land_slo, land_shi = (Signal(name=f"land_{n}") for n in
                                                                 ("row", "tok", "a", "b", "slo", "shi"))
        land_j = Signal.like(j_cnt)
        m.d.sync += [land_row.eq(0), land_tok.eq(0), land_a.eq(0), land_b.eq(0), land_slo.eq(0), land_shi.eq(0),
                     land_j.eq(j_cnt)]
        for flag, reg in ((land_row, row_reg), (land_tok, tok_x), (land_a, att_a), (land_b, att_b)):
            with m.If(flag):
                n_bytes = len(reg) // 8
                m.d.sync += reg.word_select(land_j[:max(1, (n_bytes - 1).bit_length())] if n_bytes > 1 else 0,
                                            8).eq(fb_q)
        with m.If(land_slo):
            m.d.sync += att_skip[:8].eq(fb_q)
        with m.If(land_shi):
            m.d.sync += att_skip[8:].eq(fb_q)
        kvc = Signal(18)
        qseen = Signal()
        # the ATTENTION walk's checks and pointers for the command at rp, registered in AW_TYPE (every cycle,
        # from registers that AW_TYPE does not change) so that AW_CMD's address decision starts at flip-flops
        aw_end_w = (MP + 2 * 64 + 4).bit_length()
        aw = Signal(data.StructLayout({
            "kv1_bad": 1, "kv2_bad": 1, "q_bad": 1, "kv_short": 1, "need_chk": 1,
            "kv_end": aw_end_w, "kv_chk1": aw_end_w, "kv_chk2": aw_end_w, "q_end": aw_end_w, "q_chk": aw_end_w,
        }))
        # (the header's terms are registered first: the compares are rp + 1 + 2 a_d > L as rp > L - 1 - 2 a_d,
        # rp + 3 + a_d > L as rp > L - 3 - a_d, kvc + 2 > tokens as kvc > tokens - 2)
        a_d_r = Signal.like(a_d)
        aw_kv_lim, aw_q_lim, a_tok_m2 = Signal(signed(18)), Signal(signed(18)), Signal(signed(18))
        a_d_m1 = Signal(signed(8))                           # a_d - 1: a bitmap's last byte (ATT_A / ATT_B)
        m.d.sync += [a_d_r.eq(a_d), a_d_m1.eq(a_d_r - 1), aw_kv_lim.eq(L - 1 - 2 * a_d_r), aw_q_lim.eq(L - 3 - a_d_r),
                     a_tok_m2.eq(a_tokens - 2)]
        aw_kv_end, aw_q_end = rp + 1 + 2 * a_d_r, rp + 3 + a_d_r    # a KV / V-pair command: type, a, b; Q: type,
        aw_kv_over = qseen | (rp > aw_kv_lim)                           # skip (2), a
        m.d.sync += [
            aw.kv1_bad.eq(aw_kv_over | (kvc >= a_tokens)), aw.kv2_bad.eq(aw_kv_over | (kvc > a_tok_m2)),
            aw.q_bad.eq((kvc != a_tokens) | (rp > aw_q_lim)), aw.kv_short.eq(kvc != a_tokens),
            aw.need_chk.eq((a_d_r != 0) & (a_pad != 0)),
            aw.kv_end.eq(aw_kv_end), aw.kv_chk1.eq(rp + a_d_r), aw.kv_chk2.eq(rp + 2 * a_d_r),
            aw.q_end.eq(aw_q_end), aw.q_chk.eq(rp + 2 + a_d_r),
        ]
        chk_two = Signal()
        aw_chk = Signal()                                    # AW_GO goes on to AW_CHK1
        chk_b = Signal(17)
        nxt = Signal(17)
        # a scan's position is a down count with its "last mark" flag registered beside it, so the pointer
        # update behind the mark memories' read address starts at a flip-flop
        scan_left = Signal(K)                                # marks after the current one
        scan_last = Signal()                                 # scan_left == 0

        # engine commands come from registers only (valid and payload): the engines' acceptance logic is
        # long, none of the executor's decoding is added in front of it
        lcv, lop = Signal(), Signal(2)
        ww_send, ww_addr = Signal(), Signal(16)              # a weight row for the engine (WW_SEND)
        m.d.sync += ww_send.eq(0)
        m.d.comb += [lin.wload.valid.eq(ww_send), lin.wload.payload.addr.eq(ww_addr),
                     lin.wload.payload.data.eq(row_reg)]      # (registers in every state: no state decode)
        l_G_reg = Signal(16)
        m.d.sync += l_G_reg.eq(l_G)                          # the header is stable long before a CONFIG
        lcmd = lin.cmd.payload
        m.d.comb += [lin.cmd.valid.eq(lcv), lcmd.op.eq(lop), lcmd.c_in.eq(l_cin), lcmd.groups.eq(l_G_reg),
                     lcmd.base.eq(l_wbase), lcmd.x.eq(tok_x[:self.in_max])]
        # the attention engine takes its commands from a register (ac_valid / att.cmd.payload) that takes
        # the executor's command when empty or being emptied (ac_ready): the engine validates and issues
        # a command in the cycle it takes it, and the header fields and bitmaps come from across the die
        # (op and mode follow from registers: the CONFIG phase flag and the type byte's class, registered
        # in ATT_TYPE, so no frame-buffer byte reaches them through a decode)
        acv, a_cfg, k_kv, k_pair, k_const = Signal(), Signal(), Signal(), Signal(), Signal()
        ac_valid, ac_ready = Signal(), Signal()
        if att is not None:
            acmd = Signal.like(att.cmd.payload)
            aop = Mux(a_cfg, ATT_CONFIG, Mux(k_kv, ATT_KV, ATT_Q))
            amode = Mux(a_cfg, a_mode[0], Mux(k_kv, k_pair, k_const))
            m.d.comb += [acmd.op.eq(aop), acmd.mode.eq(amode), acmd.dim.eq(a_dim), acmd.tokens.eq(a_tokens),
                         acmd.skip.eq(att_skip), acmd.a.eq(att_a[:DM]), acmd.b.eq(att_b[:DM])]
            m.d.comb += [ac_ready.eq(~ac_valid | att.cmd.ready), att.cmd.valid.eq(ac_valid)]
            with m.If(att.cmd.ready):
                m.d.sync += ac_valid.eq(0)
            with m.If(acv & ac_ready):
                m.d.sync += [ac_valid.eq(1), att.cmd.payload.eq(acmd)]

        def fail(code: int) -> None:
            m.d.sync += status.eq(code)
            m.next = "RESPOND"

        def scan_start(count) -> list:
            """Statements that make the next scan cover ``count`` (>= 1, at most ``2**K - 1``) marks."""
            count = Value.cast(count)[:K]
            return [scan_left.eq(count - 1), scan_last.eq(count == 1)]

        # the marks land in registers straight from the block RAMs (wm_q, pm_q, every cycle); a scan state
        # sets its memory's chk flag, and mark_bad, two cycles after the mark's read, says it was 0
        wm_q, pm_q, chk_w, chk_p = Signal(), Signal(), Signal(), Signal()
        mark_bad = Signal()
        m.d.sync += [wm_q.eq(wm_rd.data), pm_q.eq(pm_rd.data), chk_w.eq(0), chk_p.eq(0),
                     mark_bad.eq((chk_w & ~wm_q) | (chk_p & ~pm_q))]

        def scan(chk, walk, fail_code: int, then: str, then_walk=None, then_count=None, on_done=()) -> None:
            """One written mark per cycle from the pointer on: fail at a 0, else ``then`` after the last.

            A mark fails the frame two cycles after its read (``mark_bad``), so no block RAM output
            decides a state: a 0 among the marks fails two scan cycles later, a 0 as one of the last two
            in the next two states, which check ``mark_bad`` first (the next scan does; the PMW and CFG
            states too, and a CONFIG command is valid only when the last mark was 1: PMW takes it from
            ``pm_q``). The scan walks ``walk`` (its pointer at the first mark and moving, see `Walk`) and
            sets ``chk``; ``then_walk`` / ``then_count`` start the scan that follows in state ``then`` (its
            pointer is at its first mark already)."""
            m.d.sync += [scan_left.eq(scan_left - 1), scan_last.eq(scan_left == 1), chk.eq(1)]
            with m.If(mark_bad):
                fail(fail_code)
            with m.Elif(scan_last):
                m.d.sync += list(on_done) + ([] if then_count is None else scan_start(then_count))
                m.d.sync += walk.go(0) + ([] if then_walk is None else then_walk.go(1))
                m.next = then

        # check operands from registers (the header and L are stable from the IDLE cycle on): the checks
        # that decide the next state start at flip-flops, not at a clamp or a subtraction
        ww_body = (L - _WW_HDR)[:16]
        len_bad = Signal()                                   # the length check of the opcode's first state
        with m.Switch(rcv.opcode):
            with m.Case(OP_INFO, OP_RESET, OP_COUNTERS, OP_CLEAR_COUNTERS):
                m.d.sync += len_bad.eq(L != 0)
            with m.Case(OP_WRITE_LIF):
                m.d.sync += len_bad.eq(L != _WL_LEN)
            with m.Case(OP_WRITE_WEIGHTS):                   # L < 4 + P, or a partial row
                m.d.sync += len_bad.eq((L < _WW_HDR + P) | (ww_body[:LGP] != 0 if LGP else C(0, 1)))
            with m.Case(OP_WRITE_PARAMS):
                m.d.sync += len_bad.eq(L < _WP_HDR + _PARAM_BYTES)
            with m.Case(OP_LINEAR):
                m.d.sync += len_bad.eq(L < _LIN_HDR)
            with m.Case(OP_LIF):
                m.d.sync += len_bad.eq(L < _LIF_HDR)
            with m.Case(OP_ATTENTION):
                m.d.sync += len_bad.eq(L < _ATT_HDR)
        ww_over = Signal()                                   # row + rows > R, two registers after the header:
        ww_row_c = clamped_reg(hf(0, 4), "ww_row_c")         # a WRITE_WEIGHTS frame that passes the length check
        ww_rows_c = clamped_reg(ww_body >> LGP, "ww_rows_c")  # has P + 2 bytes (a row, the CRC) after the row
        m.d.sync += ww_over.eq(ww_row_c + ww_rows_c > R)     # field, so it is stable 3 cycles before IDLE
        wp_chan_c = clamped_reg(hf(0, 2), "wp_chan_c")
        l_wbase_c, l_pbase_c = clamped_reg(l_wbase, "l_wbase_c"), clamped_reg(l_pbase, "l_pbase_c")
        l_cout_c = clamped_reg(l_cout, "l_cout_c")
        # LINEAR's token bytes B from registers, valid once LIN1 has checked c_in <= in_max
        tb = -(-self.in_max // 8)
        l_B_r, l_B_last = Signal(range(tb + 1)), Signal(range(tb))
        l_tok0_last = Signal(range(_LIN_HDR + tb))           # offset of token 0's last byte
        m.d.sync += [l_B_r.eq(l_B), l_B_last.eq(l_B - 1), l_tok0_last.eq(_LIN_HDR + l_B - 1)]
        # the header-only range checks and the body lengths (L minus the header; used after the
        # L >= header check, so no wrap is seen), a register each
        l_hdr_bad, f_hdr_bad, wl_hdr_bad, a_hdr_bad = Signal(), Signal(), Signal(), Signal()
        l_pm_bad = Signal()                                  # p_base + c_out > PC: registers of registers,
        #                                                      used in LIN2 (three states after IDLE)
        l_body, f_body = Signal(range(MP + 1)), Signal(range(MP + 1))
        # token counts: the last token's index (tokens <= MP once the length checks pass) and "no tokens"
        l_tok_m1 = Signal(range(MP + 1))
        f_tok_m1 = Signal(signed(18))                        # LIF tokens - 1 (the header is stable)
        l_tok_zero, f_tok_zero, l_pad_tok, l_rows_over = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [l_tok_m1.eq(l_tokens - 1), f_tok_m1.eq(f_tokens - 1), l_tok_zero.eq(l_tokens == 0),
                     f_tok_zero.eq(f_tokens == 0), l_pad_tok.eq((l_pad != 0) & (l_tokens != 0))]
        wl_leak, wl_shift, wl_theta = hf(0, 2), hf(2, 1), hf(3, 2)
        # WRITE_LIF's and ATTENTION's checks in two register stages (their terms, then the OR; the header is
        # stable two cycles before the job, so both are valid from its first state on). leak > 2**shift
        # <=> leak - 1 has a bit at or above `shift` (leak = 0 wraps: fails too)
        wl_terms, a_terms = Signal(5), Signal(6)
        wl_leak_m1, wl_below = Signal(16), Signal(16)
        m.d.sync += [
            wl_terms.eq(Cat(wl_shift < 1, wl_shift > 15, wl_leak == 0, wl_theta[15], wl_theta == 0)),
            wl_leak_m1.eq(wl_leak - 1), wl_below.eq(thermometer(wl_shift[:4], 16)),
            a_terms.eq(Cat(a_mode > 1, a_dim == 0, a_dim > DM, a_tokens > NT, ~a_ob_ok, a_pbase + a_dim > PC)),
        ]
        m.d.sync += [
            l_hdr_bad.eq((l_cin == 0) | (l_cin > self.in_max) | (l_cout == 0) | ~l_ob_ok),
            l_pm_bad.eq(l_pbase_c + l_cout_c > PC),
            f_hdr_bad.eq((f_ch == 0) | (f_first > 1)),
            wl_hdr_bad.eq(wl_terms.any() | (wl_leak_m1 & ~wl_below).any()),
            a_hdr_bad.eq(a_terms.any()),
            l_body.eq(L - _LIN_HDR), f_body.eq(L - _LIF_HDR),
        ]

        # the dispatch decodes registered compares of the header's version and opcode (set by the receiver
        # at least five bytes before the frame's job is valid)
        dispatch = {OP_INFO: "INFO", OP_RESET: "RESET", OP_WRITE_WEIGHTS: "WW", OP_WRITE_PARAMS: "WP",
                    OP_WRITE_LIF: "WL", OP_LINEAR: "LIN0", OP_LIF: "LIF0", OP_COUNTERS: "COUNTERS",
                    OP_CLEAR_COUNTERS: "CLEAR"}
        if att is not None:                                  # (no engine: ATTENTION is an unknown opcode)
            dispatch[OP_ATTENTION] = "ATT0"
        d_op, d_ver_bad = Signal(len(dispatch)), Signal()
        m.d.sync += [d_op.eq(Cat(rcv.opcode == op for op in dispatch)), d_ver_bad.eq(rcv.version != VERSION)]

        with m.FSM(init="SWEEP", name="exec"):
            # -- power-on / RESET: clear the written marks and the membranes, one row per cycle ----------
            with m.State("SWEEP"):
                m.d.sync += [wm_wa.eq(swp), wm_wd.eq(0), wm_we.eq(swp < R),
                             pm_wa.eq(swp), pm_wd.eq(0), pm_we.eq(swp < PC)]
                m.d.sync += [v_wa.eq(swp), v_wd.eq(0), v_we.eq(Mux(swp < MR, (1 << P) - 1, 0))]
                m.d.sync += swp.eq(swp + 1)
                with m.If(swp == n_sweep - 1):
                    m.d.sync += [swp.eq(0), sweep_job.eq(0)]
                    with m.If(sweep_job):
                        m.next = "RESPOND"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("IDLE"):
                # every cycle: the first frame-buffer byte of the op's walk (LINEAR: LIN0) and the scans' bases
                op = rcv.opcode
                m.d.sync += fbw.load(Mux(op == OP_WRITE_WEIGHTS, _WW_HDR, Mux(op == OP_WRITE_PARAMS, _WP_HDR + 2,
                                                                           Mux(op == OP_LIF, _LIF_HDR, _ATT_HDR))))
                m.d.sync += wmw.load(l_wbase) + pmw.load(Mux(op == OP_ATTENTION, a_pbase, l_pbase))
                with m.If(rcv.job_valid & ~txu.busy):
                    m.d.comb += ev_frame.eq(1)
                    m.d.sync += [optr.eq(0), status.eq(OK),
                                 be_att.eq((rcv.opcode == OP_ATTENTION) & (att is not None)),
                                 # the first product of the op's checks (used in LIN1 / LIF1)
                                 *mul_load(Mux(rcv.opcode == OP_LIF, f_tokens, l_tokens),
                                           Mux(rcv.opcode == OP_LIF, f_ch, l_B))]
                    with m.Switch(rcv.job_kind):
                        with m.Case(JOB_OVERSIZE):
                            fail(ERR_LENGTH)
                        with m.Case(JOB_TRUNCATED):
                            fail(ERR_TRUNCATED)
                        with m.Default():
                            with m.If(~rcv.crc_ok):
                                fail(ERR_CRC)
                            with m.Elif(d_ver_bad):
                                fail(ERR_VERSION)
                            with m.Else():
                                with m.Switch(d_op):                    # one-hot (or 0: an unknown opcode)
                                    for i, state in enumerate(dispatch.values()):
                                        with m.Case("-" * (len(dispatch) - 1 - i) + "1" + "-" * i):
                                            m.next = state
                                    with m.Default():
                                        fail(ERR_OPCODE)

            with m.State("RESPOND"):
                m.d.comb += [txu.start.eq(1), txu.opcode.eq(rcv.opcode), txu.tag.eq(rcv.tag),
                             txu.status.eq(status), txu.length.eq(optr), rcv.job_done.eq(1)]
                m.d.comb += [ev_error.eq(status != OK), ev_bytes_out.eq(_OVERHEAD + optr)]
                m.next = "IDLE"

            # -- INFO / COUNTERS: fill the response buffer -------------------------------------------------
            # (a counter is read with a strobe two cycles before its first byte and its value registered in
            # the cycle between (cval): the COUNTERS state and FILL_CV for counter 0, the third and fourth
            # byte of counter k for counter k + 1; snap holds the upper bytes of the counter being sent)
            for state, flag in (("INFO", 0), ("COUNTERS", 1)):
                with m.State(state):
                    with m.If(len_bad):
                        fail(ERR_LENGTH)
                    with m.Else():
                        m.d.comb += [ctr.rd_strobe.eq(flag), ctr.rd_index.eq(0)]
                        m.d.sync += [fi.eq(0), fill_counters.eq(flag), fill_next.eq(1)]
                        m.next = "FILL_CV" if flag else "FILL"
            with m.State("FILL_CV"):                                    # counter 0's value (strobed above)
                m.d.sync += cval.eq(ctr.rd_value)
                m.next = "FILL"
            with m.State("FILL"):
                last = Mux(fill_counters, 4 * len(COUNTER_NAMES) - 1, len(self.info_bytes()) - 1)
                first_byte = fi[:2] == 0
                m.d.comb += [put.eq(1), put_data.eq(Mux(fill_counters, Mux(first_byte, cval[:8], snap[:8]),
                                                        info_rom[fi[:5]])),
                             ctr.rd_strobe.eq(fill_counters & (fi[:2] == 2)), ctr.rd_index.eq(fill_next)]
                m.d.sync += [fi.eq(fi + 1), snap.eq(Mux(first_byte, cval[8:], snap[8:]))]
                with m.If(fi[:2] == 3):
                    m.d.sync += [cval.eq(ctr.rd_value), fill_next.eq(fill_next + 1)]
                with m.If(fi == last):
                    m.next = "RESPOND"

            # -- RESET / CLEAR_COUNTERS ----------------------------------------------------------------------
            with m.State("RESET"):
                with m.If(len_bad):
                    fail(ERR_LENGTH)
                with m.Else():
                    m.d.comb += clr.eq(1)
                    m.d.sync += [lif_written.eq(0), sweep_job.eq(1), swp.eq(0)]
                    m.next = "SWEEP"
            with m.State("CLEAR"):
                with m.If(len_bad):
                    fail(ERR_LENGTH)
                with m.Else():
                    m.d.comb += clr.eq(1)
                    m.next = "RESPOND"

            # -- WRITE_LIF -------------------------------------------------------------------------------------
            with m.State("WL"):
                with m.If(len_bad):
                    fail(ERR_LENGTH)
                with m.Elif(wl_hdr_bad):
                    fail(ERR_RANGE)
                with m.Else():
                    m.d.sync += [lif_leak.eq(wl_leak), lif_shift.eq(wl_shift), lif_theta.eq(wl_theta),
                                 lif_written.eq(1)]
                    m.next = "RESPOND"

            # -- WRITE_WEIGHTS: u32 row, k rows of P int8 -----------------------------------------------------
            with m.State("WW"):                                         # (the pointer is at _WW_HDR)
                m.d.sync += fbw.go(1)                                   # (whatever the checks say)
                with m.If(len_bad):                                  # L < 4 + P, or a partial row
                    fail(ERR_LENGTH)
                with m.Elif(ww_over):
                    fail(ERR_RANGE)
                with m.Else():
                    m.d.sync += [i_cnt.eq(0), j_cnt.eq(0)]
                    m.next = "WW_ROW"
            with m.State("WW_ROW"):
                m.d.sync += [land_row.eq(1), ww_addr.eq((hf(0, 4) + i_cnt)[:16])]      # (a register for WW_SEND)
                m.d.sync += j_cnt.eq(j_cnt + 1)
                with m.If(j_cnt == P - 1):
                    m.d.sync += [j_cnt.eq(0), *fbw.go(0)]
                    m.next = "WW_LAND"
            with m.State("WW_LAND"):                                    # the row's last byte lands
                m.d.sync += ww_send.eq(1)
                m.next = "WW_SEND"
            with m.State("WW_SEND"):                                    # (wload.valid = ww_send, 1 here)
                with m.If(lin.wload.ready):
                    m.d.sync += [wm_wa.eq(ww_addr), wm_wd.eq(1), wm_we.eq(1)]
                    m.d.sync += [i_cnt.eq(i_cnt + 1), *fbw.go(1)]
                    with m.If(at_end):
                        m.next = "RESPOND"
                    with m.Else():
                        m.next = "WW_ROW"
                with m.Else():
                    m.d.sync += ww_send.eq(1)

            # -- WRITE_PARAMS: u16 channel, n x (i16 M, u8 S, i32 B) -----------------------------------------
            with m.State("WP"):                                         # (the pointer is at the first S)
                m.d.sync += fbw.go(_PARAM_BYTES)                        # (whatever the checks say)
                with m.If(len_bad):
                    fail(ERR_LENGTH)
                with m.Else():
                    m.d.sync += [wp_left.eq(L - _WP_HDR), n_rec.eq(0), bad.eq(0)]
                    m.next = "WP_WALK"
            with m.State("WP_WALK"):                                    # fb_byte = S of the record at rp - 2
                m.d.sync += [chk_s.eq(1), n_rec.eq(n_rec + 1),
                             wp_left.eq(wp_left - _PARAM_BYTES), wp_over.eq(wp_chan_c + clamp(n_rec + 1) > PC)]
                with m.If(wp_left < 2 * _PARAM_BYTES):                  # no whole record after this one
                    m.next = "WP_WAIT"                                  # (read past the end: harmless)
            with m.State("WP_WAIT"):                                    # the last S's check is registered
                m.d.sync += fbw.load(_WP_HDR)
                m.next = "WP_CHECK"
            with m.State("WP_CHECK"):
                m.d.sync += fbw.go(1)                                   # (whatever the checks say)
                with m.If(wp_left != 0):                                # a partial record
                    fail(ERR_LENGTH)
                with m.Elif(wp_over | bad_now):                         # channel + records > PC, or an S
                    fail(ERR_RANGE)
                with m.Else():
                    m.d.sync += [i_cnt.eq(0), j_cnt.eq(0), n_rec.eq(n_rec - 1)]     # (the last record's index)
                    m.next = "WP_REC"
            with m.State("WP_REC"):                                     # byte j_cnt of record i_cnt
                paddr = (hf(0, 2) + i_cnt)[:16]
                m.d.sync += [p_wa.eq(paddr), p_wd.eq(fb_byte)]          # (written in the next cycle)
                with m.Switch(j_cnt[:3]):                                # i16 M, u8 S, i32 B, LSB first
                    for j in range(_PARAM_BYTES):
                        with m.Case(j):
                            if j < 2:
                                m.d.sync += p_wem.eq(1 << j)
                            elif j == 2:
                                m.d.sync += p_wes.eq(1)
                            else:
                                m.d.sync += p_web.eq(1 << (j - 3))
                m.d.sync += j_cnt.eq(j_cnt + 1)
                with m.If(j_cnt == _PARAM_BYTES - 1):
                    m.d.sync += [pm_wa.eq(paddr), pm_wd.eq(1), pm_we.eq(1)]
                    m.d.sync += [j_cnt.eq(0), i_cnt.eq(i_cnt + 1)]
                    with m.If(i_cnt == n_rec):
                        m.next = "RESPOND"

            # -- LINEAR: checks ------------------------------------------------------------------------------
            with m.State("LIN0"):                                       # token 0's last byte (LIN_PAD)
                m.d.sync += [*mul_load(l_cin, l_G), *fbw.load(l_tok0_last)]    # for LIN2
                with m.If(len_bad):
                    fail(ERR_LENGTH)
                with m.Else():
                    m.next = "LIN1"
            with m.State("LIN1"):                                       # mul_p = tokens * B
                m.d.sync += mul_load(l_tokens, l_cout)                 # for LIN3
                with m.If(l_body != mul_p):                             # L != 13 + tokens * B
                    fail(ERR_LENGTH)
                with m.Elif(l_hdr_bad):
                    fail(ERR_RANGE)
                with m.Else():
                    m.next = "LIN2"
            with m.State("LIN2"):                                       # mul_p = c_in * G
                m.d.sync += [*scan_start(mul_p),                            # c_in * G >= 1 after LIN1
                             l_rows_over.eq(l_wbase_c + mul_p > R)]             # (checked in LIN3)
                with m.If(l_pm_bad):
                    fail(ERR_RANGE)
                with m.Else():
                    m.next = "LIN3"
            with m.State("LIN3"):                                       # mul_p = tokens * c_out
                # (the pointers are at token 0's last byte and the marks' bases since LIN1 / IDLE; they move
                # whatever the checks say)
                with m.If(l_pad_tok):
                    m.d.sync += fbw.go(l_B_r)
                with m.Else():
                    m.d.sync += [*fbw.load(_LIN_HDR), *wmw.go(1)]
                with m.If(l_rows_over | (mul_p > l_out_lim)):           # (mul_p << sel) + 1 > MP
                    fail(ERR_RANGE)
                with m.Elif(l_pad_tok):
                    m.d.sync += [i_cnt.eq(0), bad.eq(0)]
                    m.next = "LIN_PAD"
                with m.Else():
                    m.next = "LIN_WM"
            with m.State("LIN_PAD"):                                    # fb_byte = last byte of token i
                m.d.sync += [i_cnt.eq(i_cnt + 1), chk_l.eq(1)]
                with m.If(i_cnt == l_tok_m1):
                    m.d.sync += fbw.load(_LIN_HDR)                      # token 0's first byte (LIN_TOK)
                    m.next = "LIN_PADWAIT"
            with m.State("LIN_PADWAIT"):                                # the last token's check is registered
                m.next = "LIN_PADCHK"
            with m.State("LIN_PADCHK"):                                 # a padding bit of any token: registered
                m.d.sync += wmw.go(1)
                with m.If(bad_now):
                    fail(ERR_RANGE)
                with m.Else():
                    m.next = "LIN_WM"
            with m.State("LIN_WM"):
                scan(chk_w, wmw, ERR_UNLOADED, "LIN_PM", then_walk=pmw, then_count=l_cout)
            with m.State("LIN_PM"):
                scan(chk_p, pmw, ERR_UNLOADED, "LIN_PMW", on_done=[lop.eq(LIN_CONFIG), tok_x.eq(0)])
            with m.State("LIN_PMW"):                                    # the last mark is in pm_q
                with m.If(mark_bad):
                    fail(ERR_UNLOADED)
                with m.Else():
                    m.d.sync += lcv.eq(pm_q)
                    m.next = "LIN_CFG"

            # -- LINEAR: run -----------------------------------------------------------------------------------
            with m.State("LIN_CFG"):                                    # the CONFIG command is valid
                with m.If(mark_bad):                                    # (unless the last mark was 0)
                    fail(ERR_UNLOADED)
                with m.Else():
                    m.d.comb += lin_run.eq(1)                           # (the pointer is at _LIN_HDR)
                    m.d.sync += [i_cnt.eq(0), j_cnt.eq(0)]
                    with m.If(lin.cmd.ready):
                        m.d.sync += [lcv.eq(0), *fbw.go(1)]
                        with m.If(l_tok_zero):
                            m.next = "LIN_DRAIN"
                        with m.Else():
                            m.next = "LIN_TOK"
            with m.State("LIN_TOK"):
                m.d.comb += lin_run.eq(1)
                m.d.sync += [land_tok.eq(1), j_cnt.eq(j_cnt + 1)]
                with m.If(j_cnt == l_B_last):
                    m.d.sync += [j_cnt.eq(0), lop.eq(LIN_TOKEN), *fbw.go(0)]
                    m.next = "LIN_LAND"
            with m.State("LIN_LAND"):                                   # the token's last byte lands
                m.d.comb += lin_run.eq(1)
                m.d.sync += lcv.eq(1)
                m.next = "LIN_SEND"
            with m.State("LIN_SEND"):                                   # the TOKEN command is valid
                m.d.comb += lin_run.eq(1)
                with m.If(lin.cmd.ready):
                    m.d.sync += [i_cnt.eq(i_cnt + 1), lcv.eq(0), *fbw.go(1)]
                    with m.If(i_cnt == l_tok_m1):
                        m.next = "LIN_DRAIN"
                    with m.Else():
                        m.next = "LIN_TOK"
            with m.State("LIN_DRAIN"):
                m.d.comb += lin_run.eq(1)
                with m.If(~lin.status.busy & be_idle):
                    with m.If(lin.status.error):
                        m.d.sync += eng_err.eq(Cat(C(ENGINE_LINEAR, 8), lin.status.error_code, C(0, 4)))
                        m.next = "ENG_ERR"
                    with m.Else():
                        m.next = "RESPOND"

            # -- ERR_ENGINE: outputs discarded, the engine id and code are the data -------------------------
            with m.State("ENG_ERR"):
                m.d.sync += [optr.eq(0), fi.eq(0)]
                m.next = "ENG_ERR_PUT"
            with m.State("ENG_ERR_PUT"):
                m.d.comb += [put.eq(1), put_data.eq(eng_err.word_select(fi[:1], 8))]
                m.d.sync += fi.eq(fi + 1)
                with m.If(fi == 1):
                    m.d.sync += status.eq(ERR_ENGINE)
                    m.next = "RESPOND"

            # -- LIF -------------------------------------------------------------------------------------------
            with m.State("LIF0"):
                m.d.sync += mul_load((f_neuron, f_tokens), f_gc)               # for LIF2
                with m.If(len_bad):
                    fail(ERR_LENGTH)
                with m.Else():
                    m.next = "LIF1"
            with m.State("LIF1"):                                       # mul_p = tokens * channels
                m.d.sync += mul_load(f_tokens, ceil_div(f_ch, 3))               # for LIF3
                with m.If(f_body != (mul_p << 1)):                      # L != 9 + 2 * tokens * channels
                    fail(ERR_LENGTH)
                with m.Elif(f_hdr_bad):
                    fail(ERR_RANGE)
                with m.Else():
                    m.next = "LIF2"
            with m.State("LIF2"):                                       # mul_p = (neuron + tokens) * gc
                m.d.sync += mul_load(f_neuron, f_gc)                            # for LIF4
                with m.If(mul_p > MR):
                    fail(ERR_RANGE)
                with m.Else():
                    m.next = "LIF3"
            with m.State("LIF3"):                                       # mul_p = tokens * ceil(channels / 8)
                with m.If(mul_p >= MP):                                 # mul_p + 1 > MP
                    fail(ERR_RANGE)
                with m.Elif(~lif_written):
                    fail(ERR_UNLOADED)
                with m.Else():
                    m.next = "LIF4"
            with m.State("LIF4"):                                       # mul_p = neuron * gc: token 0's row
                m.d.sync += [f_tok_row.eq(mul_p), f_c.eq(0), f_n.eq(0), f_bits.eq(0)]
                m.d.comb += mrow_next.eq(mul_p)                         # (the pointer is at _LIF_HDR)
                m.d.sync += [v_ra.eq(mul_p), v_re.eq(1)]
                with m.If(f_tok_zero):
                    m.next = "RESPOND"
                with m.Else():
                    m.next = "LIF5"
            with m.State("LIF5"):                                       # token 0's first row is read
                m.next = "LIF5B"
            with m.State("LIF5B"):                                      # ... on the port
                m.next = "LIF5C"
            with m.State("LIF5C"):                                      # ... in f_vrow_p
                m.next = "LIF5D"
            with m.State("LIF5D"):                                      # ... in f_vrow_q
                m.d.sync += fbw.go(1)
                m.next = "LIF_LO"
            with m.State("LIF_LO"):                                     # membrane row mrow is in f_vrow
                for k in range(P >> LG1):
                    group = Array(f_vrow[(k << LG1) + j] for j in range(1 << LG1))
                    m.d.sync += f_vgrp[k].eq(Mux(f_first[0], 0, group[f_lane[:LG1]] if LG1 else group[0]))
                m.d.sync += [f_last_c.eq(f_c == f_ch_m1), f_row_next.eq(f_tok_row + f_gc)]
                m.next = "LIF_HI"
            with m.State("LIF_HI"):
                m.d.sync += f_vold.eq(f_vgrp[f_lane[LG1:]] if LGP > LG1 else f_vgrp[0])
                row_after = Mux(f_last_c, f_row_next, Mux(f_lane == P - 1, mrow + 1, mrow))
                m.d.sync += [f_xlo.eq(fb_q), f_wrow.eq(mrow), f_mrow_after.eq(row_after),     # (x's low byte)
                             v_ra.eq(row_after), v_re.eq(1), *fbw.go(0),
                             f_byte_end.eq((f_c[:3] == 7) | f_last_c), f_lane_we.eq(1 << f_lane),
                             f_lane0.eq(f_lane == 0)]
                m.next = "LIF_SUB"
            with m.State("LIF_SUB"):                                    # reads the next value's row
                m.d.comb += mrow_next.eq(f_mrow_after)
                m.d.sync += f_diff.eq(Cat(f_xlo, fb_q).as_signed() - f_vold)         # (fb_q: x's high byte)
                m.d.sync += f_thr.eq(lif_theta - f_vold)
                m.next = "LIF_MUL"
            with m.State("LIF_MUL"):
                m.d.sync += [f_thr_sh.eq(f_thr << lif_shift), f_prod.eq(f_diff * lif_leak)]
                m.next = "LIF_ADD"
            with m.State("LIF_ADD"):
                m.d.sync += [f_v1.eq(f_vold + (f_prod >> lif_shift)), f_spike.eq(f_prod >= f_thr_sh)]
                m.next = "LIF_STEP"
            with m.State("LIF_STEP"):                                   # membrane (token f_n, channel f_c)
                m.d.sync += [v_wa.eq(f_wrow), v_we.eq(f_lane_we), v_wd.eq(Mux(f_spike, 0, f_v1[:16]))]
                with m.If(f_lane0):
                    m.d.comb += rl_inc.eq(1)
                last_c = f_last_c
                with m.If(f_byte_end):
                    m.d.comb += [put.eq(1), put_data.eq(f_sbits)]
                    m.d.sync += f_bits.eq(0)
                with m.Else():
                    m.d.sync += f_bits.eq(f_sbits)
                m.d.sync += fbw.go(1)
                m.next = "LIF_LO"
                with m.If(last_c):
                    m.d.sync += [f_c.eq(0), f_n.eq(f_n + 1), f_tok_row.eq(f_row_next)]
                    with m.If(f_n == f_tok_m1):
                        m.next = "RESPOND"
                with m.Else():
                    m.d.sync += f_c.eq(f_c + 1)

            if att is not None:                                 # the ATTENTION states
                # -- ATTENTION: walk the command stream (lengths, types, bitmap padding) ------------------------
                with m.State("ATT0"):                                   # (the pointer is at _ATT_HDR)
                    with m.If(len_bad):
                        fail(ERR_LENGTH)
                    with m.Else():
                        m.d.sync += [kvc.eq(0), qseen.eq(0), n_rec.eq(0), bad.eq(0)]
                        m.next = "AW_TYPE"
                with m.State("AW_TYPE"):                                    # fb_byte = a command's type at rp
                    with m.If(at_end):
                        m.d.sync += mul_load(n_rec, 3 + (a_dim << a_ob_sel), live_a=True)              # for AW_FIT
                        m.next = "AW_END"
                    with m.Else():
                        m.d.sync += att_kind.eq(fb_byte)                    # registered: the decision below
                        m.next = "AW_CMD"                                   # drives the buffer address
                # AW_CMD decides from registers and loads the pointer for AW_GO, which presents the address
                # (a bitmap's last byte, AW_CHK1, or the next command's type, AW_TYPE)
                with m.State("AW_CMD"):                                     # rp = the command's type byte
                    m.next = "AW_GO"
                    m.d.sync += aw_chk.eq(0)
                    with m.Switch(att_kind):
                        with m.Case(CMD_KV, CMD_V_PAIR):                    # (the registers whatever
                            m.d.sync += [nxt.eq(aw.kv_end), chk_two.eq(1), chk_b.eq(aw.kv_chk2),   # the checks say)
                                         aw_chk.eq(aw.need_chk), *fbw.load(Mux(aw.need_chk, aw.kv_chk1, aw.kv_end))]
                            with m.If(Mux(att_kind == CMD_V_PAIR, aw.kv2_bad, aw.kv1_bad)):
                                fail(ERR_LENGTH)
                            with m.Else():
                                m.d.sync += kvc.eq(kvc + 1 + (att_kind == CMD_V_PAIR))
                        with m.Case(CMD_Q):
                            m.d.sync += [nxt.eq(aw.q_end), chk_two.eq(0), aw_chk.eq(aw.need_chk),
                                         *fbw.load(Mux(aw.need_chk, aw.q_chk, aw.q_end))]
                            with m.If(aw.q_bad):
                                fail(ERR_LENGTH)
                            with m.Else():
                                m.d.sync += [qseen.eq(1), n_rec.eq(n_rec + 1)]
                        with m.Case(CMD_CONST):
                            m.d.sync += fbw.load(rp + 1)
                            with m.If(aw.kv_short):
                                fail(ERR_LENGTH)
                            with m.Else():
                                m.d.sync += [qseen.eq(1), n_rec.eq(n_rec + 1)]
                        with m.Default():
                            fail(ERR_RANGE)
                with m.State("AW_GO"):                                      # the address loaded in AW_CMD
                    with m.If(aw_chk):
                        m.d.sync += fbw.load(Mux(chk_two, chk_b, nxt))
                        m.next = "AW_CHK1"
                    with m.Else():
                        m.next = "AW_TYPE"
                with m.State("AW_CHK1"):                                    # fb_byte = last byte of a bitmap
                    m.d.sync += chk_a.eq(1)
                    with m.If(chk_two):
                        m.d.sync += fbw.load(nxt)
                        m.next = "AW_CHK2"
                    with m.Else():
                        m.next = "AW_TYPE"
                with m.State("AW_CHK2"):
                    m.d.sync += chk_a.eq(1)
                    m.next = "AW_TYPE"
                with m.State("AW_END"):
                    m.d.sync += fbw.load(_ATT_HDR)                      # the first command (ATT_TYPE)
                    with m.If(aw.kv_short):
                        fail(ERR_LENGTH)
                    with m.Elif(a_hdr_bad | bad_now):
                        fail(ERR_RANGE)
                    with m.Else():
                        m.next = "AW_FIT"
                with m.State("AW_FIT"):                                     # mul_p = records * record bytes
                    m.d.sync += scan_start(a_dim)                           # 1 <= dim <= PC after AW_END
                    m.d.sync += pmw.go(1)                               # (the pointer is at a_pbase)
                    with m.If(mul_p >= MP):                             # mul_p + 1 > MP
                        fail(ERR_RANGE)
                    with m.Else():
                        m.next = "AW_PM"
                with m.State("AW_PM"):
                    scan(chk_p, pmw, ERR_UNLOADED, "AW_PMW",
                         on_done=[a_cfg.eq(1), att_a.eq(0), att_b.eq(0), att_skip.eq(0)])
                with m.State("AW_PMW"):                                 # the last mark is in pm_q
                    with m.If(mark_bad):
                        fail(ERR_UNLOADED)
                    with m.Else():
                        m.d.sync += acv.eq(pm_q)
                        m.next = "ATT_CFG"

                # -- ATTENTION: run ----------------------------------------------------------------------------------
                with m.State("ATT_CFG"):                                    # the CONFIG command is valid
                    with m.If(mark_bad):                                    # (unless the last mark was 0)
                        fail(ERR_UNLOADED)
                    with m.Else():
                        m.d.comb += att_run.eq(1)                       # (the pointer is at _ATT_HDR)
                        with m.If(ac_ready):
                            m.d.sync += [acv.eq(0), *fbw.go(1)]
                            m.next = "ATT_TYPE"
                # ATT_TYPE registers the command's type class (KV / V pair, constant, Q); the next state,
                # ATT_FIRST, is the type's first state (ATT_A, ATT_SKIP_LO or ATT_SEND), chosen from the
                # registered class, so no frame-buffer byte decides a state (the block RAM's clock-to-output
                # leaves no time for that), and the cycle counts are those of a direct branch
                with m.State("ATT_TYPE"):
                    m.d.comb += att_run.eq(1)
                    with m.If(at_end):
                        m.next = "ATT_DRAIN"
                    with m.Else():
                        # the walk let only the four type bytes through, and their low three bits tell
                        # them apart (1 KV, 2 V pair, 3 Q, 4 constant): one LUT from the port to a class
                        t = fb_byte[:3]
                        is_kv = ~t[2] & (t[0] ^ t[1])
                        m.d.sync += [j_cnt.eq(0), a_cfg.eq(0), k_kv.eq(is_kv),
                                     k_pair.eq(t[1] & ~t[0]), k_const.eq(t[2]), acv.eq(t[2])]
                        m.d.sync += fbw.go(~t[2])                       # a constant has no byte after its type
                        m.next = "ATT_FIRST"

                def att_skip_lo():
                    m.d.comb += att_run.eq(1)
                    m.d.sync += land_slo.eq(1)
                    m.next = "ATT_SKIP_HI"

                def att_bitmap(land, then):                             # the byte lands a cycle later
                    m.d.comb += att_run.eq(1)
                    m.d.sync += [land.eq(1), j_cnt.eq(j_cnt + 1)]
                    with m.If(j_cnt == a_d_m1):
                        m.d.sync += j_cnt.eq(0)
                        if then is None:                                # a Q token has no second bitmap
                            with m.If(~k_kv):                           # (a Q token)
                                m.d.sync += fbw.go(0)
                                m.next = "ATT_LAND"
                            with m.Else():
                                m.next = "ATT_B"                        # (a lands in ATT_B's first cycle)
                        else:
                            m.d.sync += fbw.go(0)
                            m.next = then

                def att_send():                                         # the KV / Q command is valid
                    m.d.comb += att_run.eq(1)
                    with m.If(ac_ready):
                        m.d.sync += [acv.eq(0), *fbw.go(1)]
                        m.next = "ATT_TYPE"

                with m.State("ATT_FIRST"):                              # (the type's class: registers)
                    with m.If(k_kv):
                        att_bitmap(land_a, None)
                    with m.Elif(k_const):                               # (the pointer held: ATT_TYPE)
                        att_send()
                    with m.Else():                                      # CMD_Q
                        att_skip_lo()
                with m.State("ATT_SKIP_LO"):
                    att_skip_lo()
                with m.State("ATT_SKIP_HI"):
                    m.d.comb += att_run.eq(1)
                    m.d.sync += land_shi.eq(1)
                    m.next = "ATT_A"
                with m.State("ATT_A"):
                    att_bitmap(land_a, None)
                with m.State("ATT_B"):
                    att_bitmap(land_b, "ATT_LAND")
                with m.State("ATT_LAND"):                               # the last bitmap byte lands
                    m.d.comb += att_run.eq(1)
                    m.d.sync += acv.eq(1)
                    m.next = "ATT_SEND"
                with m.State("ATT_SEND"):
                    att_send()
                with m.State("ATT_DRAIN"):
                    m.d.comb += att_run.eq(1)
                    with m.If(~att.status.busy & ~ac_valid & be_idle):
                        with m.If(att.status.error):
                            m.d.sync += eng_err.eq(Cat(C(ENGINE_ATTENTION, 8), att.status.error_code, C(0, 4)))
                            m.next = "ENG_ERR"
                        with m.Else():
                            m.next = "RESPOND"

        m.d.sync += mul_pre                                  # the header operands of mul_load, every cycle

        # back-end beats count as requant / LIF beats
        with m.If(be_take):
            m.d.comb += rl_inc.eq(1)

        # response buffer write (after the FSM: its put / put_data overrides are final here)
        # the response buffer is written from registers, a cycle after the put (the transmitter starts in
        # RESPOND, after the last put state, and reads a data byte at the earliest 7 cycles later)
        ob_wa, ob_wd, ob_we = Signal.like(optr), Signal(8), Signal()
        m.d.sync += [ob_wa.eq(optr), ob_wd.eq(put_data), ob_we.eq(put)]
        m.d.comb += [ob_wr.addr.eq(ob_wa), ob_wr.data.eq(ob_wd), ob_wr.en.eq(ob_we)]
        with m.If(put):
            m.d.sync += optr.eq(optr + 1)
        return m
