"""Golden emulator of the accelerator behind the protocol (``docs/protocol.md``): a byte-level device.

:class:`Emulator` parses the host's byte stream exactly as the device does (hunt for ``0xA5``,
header, payload, CRC), executes each frame with the golden model and queues one response per
frame. It is the reference the RTL's UART bridge is held to, and the in-process device of
``spikevid run --transport emulator`` (through :class:`driver.transport.EmulatorTransport`).

* **State** (the attributes are the device's memories, readable by tests): ``weights``
  ``(weight_rows, P)`` int8 and ``weights_written``; ``param_m`` / ``param_s`` / ``param_b``
  ``(param_channels,)`` int32 and ``params_written``; ``lif_params`` ``(leak, shift, theta)`` or
  ``None`` (not written); ``membranes`` ``(membrane_rows, P)`` int16: neuron ``n`` of a LIF layer
  with ``channels`` channels has channel ``c`` in row ``n * ceil(channels / P) + c // P``, lane
  ``c % P``; the 16 counters (:meth:`counters`).
* **Ops** compute with ``golden_model.intops``: LINEAR gathers the layer's weight rows into
  ``W (c_out, c_in)``, ``linear_int8`` then ``requant``; LIF is ``lif_step`` on every token's
  membranes (stored, or 0 when ``first``); ATTENTION runs CONFIG + the commands through
  ``sim.attention_model.EngineModel`` and requantises each record's ``dim`` values with channels
  ``p_base + j``.
* **Counters** follow ``golden_model.perf``: LINEAR ``busy = 1 + sum_tokens G * max(1, |x|)``,
  ``spikes = sum |x|``, ``acc_ops = P * G * spikes`` (``spike_accum_cycles``: one CONFIG cycle per
  frame, every token sent as a TOKEN command); ATTENTION the engine model's ``busy_cycles``,
  ``spikes``, ``acc_ops``; requant/LIF ``busy`` = beats: ``tokens * G`` per LINEAR,
  ``tokens * ceil(channels / P)`` per LIF, ``records * ceil(dim / P)`` per ATTENTION. Starved and
  blocked cycles are 0. Counters wrap modulo ``2**32``.
* **Errors**: the table and the check order of ``docs/protocol.md`` as resolved in
  :mod:`driver.protocol`'s docstring. Every check runs before any state changes; an erroneous frame
  changes nothing but the ``frames``, ``errors`` and byte counters.
* **Time**: the emulator has no clock. :meth:`close_stream` (the host closed the stream) and
  :meth:`idle` (``cycles >= frame_timeout`` without input) answer a partial frame with
  ``ERR_TRUNCATED``; either way the emulator then hunts for the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from driver.protocol import (
    ATTENTION_HEADER,
    CMD_CONST,
    CMD_KV,
    CMD_Q,
    CMD_V_PAIR,
    COUNTER_NAMES,
    COUNTERS_FORMAT,
    CRC_SIZE,
    ENGINE_ATTENTION,
    ERR_CRC,
    ERR_ENGINE,
    ERR_LENGTH,
    ERR_OPCODE,
    ERR_RANGE,
    ERR_TRUNCATED,
    ERR_UNLOADED,
    ERR_VERSION,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    INFO_FORMAT,
    LIF_BITS,
    LIF_HEADER,
    LINEAR_HEADER,
    MAX_LENGTH,
    OK,
    OP_ATTENTION,
    OP_CLEAR_COUNTERS,
    OP_COUNTERS,
    OP_INFO,
    OP_LIF,
    OP_LINEAR,
    OP_RESET,
    OP_WRITE_LIF,
    OP_WRITE_PARAMS,
    OP_WRITE_WEIGHTS,
    OUT_BITS,
    PARAM_DTYPE,
    PARAMS_HEADER,
    RECORD_HEADER,
    SYNC_HOST,
    VERSION,
    WEIGHTS_HEADER,
    WRITE_LIF_FORMAT,
    DeviceInfo,
    crc16,
    encode_frame,
    nbytes_bits,
    pack_bits,
    unpack_bits,
)
from golden_model import intops
from golden_model.perf import spike_accum_cycles
from sim.attention_model import EngineModel

__all__ = ["EmulatorConfig", "Emulator"]

_U32 = 0xFFFF_FFFF
_VALUE_DTYPES = {8: "<i1", 16: "<i2", 32: "<i4"}


@dataclass(frozen=True)
class EmulatorConfig:
    """The emulated device's limits (reported by INFO) and its frame timeout.

    ``att_dim_max = att_max_tokens = 0`` emulates a device without an attention engine (the iCE40
    configuration of ``rtl.accelerator.AcceleratorConfig``): ATTENTION is then an unknown opcode."""

    lanes: int = 16                 # P: weight row width, output / membrane lanes
    in_max: int = 1024              # largest LINEAR c_in
    weight_rows: int = 16384
    param_channels: int = 4096
    membrane_rows: int = 65536
    att_dim_max: int = 64
    att_max_tokens: int = 4096
    max_payload: int = 4096
    clock_hz: int = 100_000_000
    frame_timeout: int = 1_000_000  # cycles after a frame's last byte before ERR_TRUNCATED (10 ms at 100 MHz)

    def __post_init__(self) -> None:
        for name, lo, hi in (("lanes", 1, 0xFF), ("in_max", 1, 0xFFFF), ("weight_rows", 1, _U32),
                             ("param_channels", 1, 0xFFFF), ("membrane_rows", 1, _U32), ("att_dim_max", 0, 0xFF),
                             ("att_max_tokens", 0, 0xFFFF), ("max_payload", 1, MAX_LENGTH), ("clock_hz", 1, _U32),
                             ("frame_timeout", 1, 1 << 62)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"EmulatorConfig.{name} = {v!r} out of range [{lo}, {hi}]")
        if (self.att_dim_max == 0) != (self.att_max_tokens == 0):
            raise ValueError("EmulatorConfig.att_dim_max and att_max_tokens are both 0 (no attention engine) or "
                             f"both >= 1, got {self.att_dim_max} and {self.att_max_tokens}")
        need = max(1 + COUNTERS_FORMAT.size, 1 + INFO_FORMAT.size, WEIGHTS_HEADER.size + self.lanes)
        if self.max_payload < need:
            raise ValueError(f"max_payload {self.max_payload} < {need}: COUNTERS or one weight row would not fit")

    def info(self) -> DeviceInfo:
        """The INFO this device reports."""
        return DeviceInfo(VERSION, self.lanes, self.in_max, self.weight_rows, self.param_channels, self.membrane_rows,
                          self.att_dim_max, self.att_max_tokens, self.max_payload, self.clock_hz)


class _Reject(Exception):
    """A frame answered with a non-zero status (raised before any state change)."""

    def __init__(self, code: int, detail: bytes = b""):
        super().__init__(code)
        self.code, self.detail = code, detail


def _values_bytes(y: torch.Tensor, out_bits: int) -> bytes:
    return y.numpy().astype(_VALUE_DTYPES[out_bits]).tobytes()


class Emulator:
    """Byte-level device model: :meth:`feed` the host's bytes, :meth:`read_output` the responses."""

    def __init__(self, config: EmulatorConfig | None = None):
        self.config = config if config is not None else EmulatorConfig()
        self.info = self.config.info()
        c, p = self.config, self.config.lanes
        self.weights = torch.zeros(c.weight_rows, p, dtype=torch.int8)
        self.weights_written = torch.zeros(c.weight_rows, dtype=torch.bool)
        self.param_m = torch.zeros(c.param_channels, dtype=torch.int32)
        self.param_s = torch.ones(c.param_channels, dtype=torch.int32)
        self.param_b = torch.zeros(c.param_channels, dtype=torch.int32)
        self.params_written = torch.zeros(c.param_channels, dtype=torch.bool)
        self.lif_params: tuple[int, int, int] | None = None
        self.membranes = torch.zeros(c.membrane_rows, p, dtype=torch.int16)
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._out = bytearray()
        self._frame = bytearray()  # the frame being received; empty while hunting
        self._need = 0             # its length so far known: HEADER_SIZE, then the whole frame
        self._idle = 0
        self._handlers = {
            OP_INFO: self._op_info, OP_RESET: self._op_reset, OP_WRITE_WEIGHTS: self._op_write_weights,
            OP_WRITE_PARAMS: self._op_write_params, OP_WRITE_LIF: self._op_write_lif, OP_LINEAR: self._op_linear,
            OP_LIF: self._op_lif, OP_ATTENTION: self._op_attention, OP_COUNTERS: self._op_counters,
            OP_CLEAR_COUNTERS: self._op_clear_counters,
        }
        if not c.att_dim_max:                                # no attention engine: an unknown opcode
            del self._handlers[OP_ATTENTION]

    # -- byte stream --------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Receive bytes from the host; complete frames are executed and answered in order."""
        data = bytes(data)
        self._idle = 0
        i, n = 0, len(data)
        while i < n:
            if not self._frame:  # hunting
                j = data.find(SYNC_HOST, i)
                end = n if j < 0 else j
                self._add("bytes_in", end - i)
                self._add("garbage_bytes", end - i)
                if j < 0:
                    return
                self._add("bytes_in", 1)
                self._frame.append(SYNC_HOST)
                self._need, i = HEADER_SIZE, j + 1
                continue
            take = min(self._need - len(self._frame), n - i)
            self._frame += data[i:i + take]
            self._add("bytes_in", take)
            i += take
            if len(self._frame) < self._need:
                continue
            if self._need == HEADER_SIZE:
                length = int.from_bytes(self._frame[4:6], "little")
                if length > self.config.max_payload:  # answered at once; the payload is not consumed
                    opcode, tag = self._frame[2], self._frame[3]
                    self._frame.clear()
                    self._add("frames", 1)
                    self._respond(opcode, tag, ERR_LENGTH)
                else:
                    self._need = FRAME_OVERHEAD + length
                continue
            frame = bytes(self._frame)
            self._frame.clear()
            self._execute(frame)

    def read_output(self) -> bytes:
        """The response bytes queued since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def in_frame(self) -> bool:
        """Whether a frame is partly received."""
        return bool(self._frame)

    def close_stream(self) -> None:
        """The host closed the stream: a partial frame is answered ``ERR_TRUNCATED``."""
        if self._frame:
            f = self._frame
            opcode, tag = (f[2] if len(f) > 2 else 0), (f[3] if len(f) > 3 else 0)
            self._frame.clear()
            self._add("frames", 1)
            self._respond(opcode, tag, ERR_TRUNCATED)

    def idle(self, cycles: int) -> None:
        """``cycles`` clock cycles pass without input: after ``frame_timeout`` a partial frame times out."""
        self._idle += cycles
        if self._idle >= self.config.frame_timeout:
            self.close_stream()

    def counters(self) -> dict[str, int]:
        """The counters COUNTERS would report now."""
        return dict(self._counts)

    def snapshot(self) -> dict:
        """A copy of every piece of state except the counters (for tests: "unchanged by an error")."""
        return {"weights": self.weights.clone(), "weights_written": self.weights_written.clone(),
                "param_m": self.param_m.clone(), "param_s": self.param_s.clone(), "param_b": self.param_b.clone(),
                "params_written": self.params_written.clone(), "lif_params": self.lif_params,
                "membranes": self.membranes.clone()}

    # -- frames -------------------------------------------------------------------------------

    def _add(self, name: str, n: int) -> None:
        self._counts[name] = (self._counts[name] + n) & _U32

    def _respond(self, opcode: int, tag: int, status: int, data: bytes = b"") -> None:
        if status != OK:
            self._add("errors", 1)
        frame = encode_frame(opcode, tag, bytes((status,)) + data, to_device=False)
        self._out += frame
        self._add("bytes_out", len(frame))

    def _execute(self, frame: bytes) -> None:
        version, opcode, tag = frame[1], frame[2], frame[3]
        self._add("frames", 1)
        status, data = OK, b""
        if crc16(frame[1:-CRC_SIZE]) != int.from_bytes(frame[-CRC_SIZE:], "little"):
            status = ERR_CRC
        elif version != VERSION:
            status = ERR_VERSION
        elif opcode not in self._handlers:
            status = ERR_OPCODE
        else:
            try:
                data = self._handlers[opcode](frame[HEADER_SIZE:-CRC_SIZE])
            except _Reject as r:
                status, data = r.code, r.detail
        self._respond(opcode, tag, status, data)

    # -- checks -------------------------------------------------------------------------------

    @staticmethod
    def _length(ok: bool) -> None:
        if not ok:
            raise _Reject(ERR_LENGTH)

    @staticmethod
    def _range(ok: bool) -> None:
        if not ok:
            raise _Reject(ERR_RANGE)

    def _response_fits(self, data_bytes: int) -> None:
        self._range(1 + data_bytes <= self.config.max_payload)

    def _params(self, lo: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not bool(self.params_written[lo:lo + n].all()):
            raise _Reject(ERR_UNLOADED)
        return self.param_m[lo:lo + n], self.param_s[lo:lo + n], self.param_b[lo:lo + n]

    # -- ops ----------------------------------------------------------------------------------

    def _op_info(self, p: bytes) -> bytes:
        self._length(len(p) == 0)
        return self.info.pack()

    def _op_reset(self, p: bytes) -> bytes:
        self._length(len(p) == 0)
        self.weights_written.zero_()
        self.params_written.zero_()
        self.lif_params = None
        self.membranes.zero_()
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        return b""

    def _op_counters(self, p: bytes) -> bytes:
        self._length(len(p) == 0)
        return COUNTERS_FORMAT.pack(*(self._counts[k] for k in COUNTER_NAMES))

    def _op_clear_counters(self, p: bytes) -> bytes:
        self._length(len(p) == 0)
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        return b""

    def _op_write_weights(self, p: bytes) -> bytes:
        lanes = self.config.lanes
        body = len(p) - WEIGHTS_HEADER.size
        self._length(body >= lanes and body % lanes == 0)
        (row,) = WEIGHTS_HEADER.unpack_from(p)
        k = body // lanes
        self._range(row + k <= self.config.weight_rows)
        rows = np.frombuffer(p, dtype=np.int8, offset=WEIGHTS_HEADER.size).reshape(k, lanes)
        self.weights[row:row + k] = torch.from_numpy(rows.copy())
        self.weights_written[row:row + k] = True
        return b""

    def _op_write_params(self, p: bytes) -> bytes:
        body = len(p) - PARAMS_HEADER.size
        self._length(body >= PARAM_DTYPE.itemsize and body % PARAM_DTYPE.itemsize == 0)
        (channel,) = PARAMS_HEADER.unpack_from(p)
        rec = np.frombuffer(p, dtype=PARAM_DTYPE, offset=PARAMS_HEADER.size)
        n = len(rec)
        self._range(channel + n <= self.config.param_channels)
        self._range(bool(((rec["s"] >= 1) & (rec["s"] <= intops.MAX_SHIFT)).all()))
        for name, field in (("param_m", "m"), ("param_s", "s"), ("param_b", "b")):
            getattr(self, name)[channel:channel + n] = torch.from_numpy(rec[field].astype(np.int32))
        self.params_written[channel:channel + n] = True
        return b""

    def _op_write_lif(self, p: bytes) -> bytes:
        self._length(len(p) == WRITE_LIF_FORMAT.size)
        leak, shift, theta = WRITE_LIF_FORMAT.unpack(p)
        try:
            intops.check_lif_params(leak, shift, theta, LIF_BITS)
        except ValueError:
            raise _Reject(ERR_RANGE) from None
        self.lif_params = (leak, shift, theta)
        return b""

    def _op_linear(self, p: bytes) -> bytes:
        cfg, lanes = self.config, self.config.lanes
        self._length(len(p) >= LINEAR_HEADER.size)
        c_in, c_out, w_base, p_base, out_bits, tokens = LINEAR_HEADER.unpack_from(p)
        per_token = nbytes_bits(c_in)
        self._length(len(p) == LINEAR_HEADER.size + tokens * per_token)
        self._range(1 <= c_in <= cfg.in_max and c_out >= 1 and out_bits in OUT_BITS)
        g = -(-c_out // lanes)
        self._range(w_base + c_in * g <= cfg.weight_rows and p_base + c_out <= cfg.param_channels)
        x, clean = unpack_bits(p[LINEAR_HEADER.size:], tokens, c_in)
        self._range(clean)
        self._response_fits(tokens * c_out * out_bits // 8)
        if not bool(self.weights_written[w_base:w_base + c_in * g].all()):
            raise _Reject(ERR_UNLOADED)
        m, s, b = self._params(p_base, c_out)
        w = self.weights[w_base:w_base + c_in * g].reshape(c_in, g * lanes)[:, :c_out].t().contiguous()
        acc = intops.linear_int8(torch.from_numpy(x.astype(np.int8)), w)
        y = intops.requant(acc, m, s, b, out_bits)
        cyc = spike_accum_cycles(x.sum(axis=1).tolist(), c_out, lanes)
        self._add("linear_busy", cyc["busy"])
        self._add("linear_spikes", cyc["spikes"])
        self._add("linear_acc_ops", cyc["acc_ops"])
        self._add("requant_lif_busy", tokens * g)
        return _values_bytes(y, out_bits)

    def _op_lif(self, p: bytes) -> bytes:
        cfg, lanes = self.config, self.config.lanes
        self._length(len(p) >= LIF_HEADER.size)
        channels, neuron, tokens, first = LIF_HEADER.unpack_from(p)
        self._length(len(p) == LIF_HEADER.size + 2 * tokens * channels)
        self._range(channels >= 1 and first in (0, 1))
        gc = -(-channels // lanes)
        self._range((neuron + tokens) * gc <= cfg.membrane_rows)
        self._response_fits(tokens * nbytes_bits(channels))
        if self.lif_params is None:
            raise _Reject(ERR_UNLOADED)
        x = torch.from_numpy(np.frombuffer(p, dtype="<i2", offset=LIF_HEADER.size).astype(np.int32))
        x = x.reshape(tokens, channels)
        rows = self.membranes[neuron * gc:(neuron + tokens) * gc].view(tokens, gc * lanes)
        v = torch.zeros_like(x) if first else rows[:, :channels].to(torch.int32)
        s, v = intops.lif_step(v, x, *self.lif_params)
        rows[:, :channels] = v.to(torch.int16)
        self._add("requant_lif_busy", tokens * gc)
        return pack_bits(s)

    def _attention_commands(self, body: bytes, dim: int, tokens: int) -> list[dict]:
        """Walk the command stream (length / structure checks, then the bit ranges)."""
        d = nbytes_bits(dim)
        cmds: list[dict] = []
        pos, kv, q_seen = 0, 0, False
        while pos < len(body):
            kind = body[pos]
            pos += 1
            if kind in (CMD_KV, CMD_V_PAIR):
                self._length(pos + 2 * d <= len(body) and not q_seen)
                a = int.from_bytes(body[pos:pos + d], "little")
                b = int.from_bytes(body[pos + d:pos + 2 * d], "little")
                pos += 2 * d
                kv += 2 if kind == CMD_V_PAIR else 1
                self._length(kv <= tokens)
                cmds.append({"op": 1, "mode": int(kind == CMD_V_PAIR), "a": a, "b": b})
            elif kind in (CMD_Q, CMD_CONST):
                self._length(kv == tokens)
                q_seen = True
                if kind == CMD_CONST:
                    cmds.append({"op": 2, "mode": 1})
                    continue
                self._length(pos + 2 + d <= len(body))
                skip = int.from_bytes(body[pos:pos + 2], "little")
                a = int.from_bytes(body[pos + 2:pos + 2 + d], "little")
                pos += 2 + d
                cmds.append({"op": 2, "mode": 0, "a": a, "skip": skip})
            else:
                raise _Reject(ERR_RANGE)
        self._length(kv == tokens)
        return cmds

    def _op_attention(self, p: bytes) -> bytes:
        cfg = self.config
        lanes = min(cfg.lanes, cfg.att_dim_max)      # the attention engine's lanes (rtl.accelerator: att_lanes)
        self._length(len(p) >= ATTENTION_HEADER.size)
        mode, dim, tokens, p_base, out_bits = ATTENTION_HEADER.unpack_from(p)
        cmds = self._attention_commands(p[ATTENTION_HEADER.size:], dim, tokens)
        self._range(mode in (0, 1) and 1 <= dim <= cfg.att_dim_max and tokens <= cfg.att_max_tokens
                    and out_bits in OUT_BITS and p_base + dim <= cfg.param_channels)
        self._range(all(((c.get("a", 0) | c.get("b", 0)) >> dim) == 0 for c in cmds))
        n_rec = sum(1 for c in cmds if c["op"] == 2)
        self._response_fits(n_rec * (RECORD_HEADER.size + dim * out_bits // 8))
        m, s, b = self._params(p_base, dim)
        engine = EngineModel(cfg.att_dim_max, lanes, cfg.att_max_tokens, 1)
        engine.command({"op": 0, "mode": mode, "head": 0, "dim": dim, "tokens": tokens})
        heads, rows = [], []
        for c in cmds:
            beats = [beat for beat, _ in engine.command(c)]
            if beats:
                heads.append((beats[0]["skip"], beats[0]["const"]))
                rows.append([v for beat in beats for v in beat["data"]][:dim])
        if engine.error:
            raise _Reject(ERR_ENGINE, bytes((ENGINE_ATTENTION, engine.error_code)))
        out = bytearray()
        if rows:
            y = intops.requant(torch.tensor(rows, dtype=torch.int32), m, s, b, out_bits)
            vals = y.numpy().astype(_VALUE_DTYPES[out_bits])
            for (skip, const), row in zip(heads, vals, strict=True):
                out += RECORD_HEADER.pack(skip, const) + row.tobytes()
        self._add("attention_busy", engine.busy_cycles)
        self._add("attention_spikes", engine.spikes)
        self._add("attention_acc_ops", engine.acc_ops)
        self._add("requant_lif_busy", n_rec * -(-dim // lanes))
        return bytes(out)
