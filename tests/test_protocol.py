"""driver.protocol / driver.transport / driver.emulator: protocol v1 (docs/protocol.md) against golden_model.intops."""

from __future__ import annotations

import os
import select
import struct
import threading
import time

import pytest
import torch

import driver.emulator as emulator_mod
import driver.protocol as pr
from driver.attention import decode_readout, encode_window
from driver.emulator import Emulator, EmulatorConfig
from driver.spike_accum import weight_rows as spike_accum_rows
from driver.transport import EmulatorTransport, SerialTransport, Transport
from golden_model import intops, perf

P = 16


def _device(**cfg) -> tuple[pr.Device, Emulator]:
    emu = Emulator(EmulatorConfig(**cfg))
    return pr.Device(EmulatorTransport(emu), timeout=1.0), emu


def _spikes(gen: torch.Generator, n: int, c: int, p: float) -> torch.Tensor:
    return (torch.rand(n, c, generator=gen) < p).to(torch.int8)


def _rows(w: torch.Tensor, lanes: int = P) -> torch.Tensor:
    """Device weight rows of ``w (c_out, c_in)``: row ``i * G + g`` lane ``l`` = ``w[g*P + l, i]``."""
    c_out, c_in = w.shape
    g = -(-c_out // lanes)
    pad = torch.zeros(g * lanes, c_in, dtype=torch.int8)
    pad[:c_out] = w
    return pad.reshape(g, lanes, c_in).permute(2, 0, 1).reshape(c_in * g, lanes)


def _params(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m = torch.randint(-(1 << 15), 1 << 15, (n,), generator=gen, dtype=torch.int32)
    s = torch.randint(1, 48, (n,), generator=gen, dtype=torch.int32)
    b = torch.randint(-(1 << 31), (1 << 31) - 1, (n,), generator=gen, dtype=torch.int64).to(torch.int32)
    s[: n // 2] = torch.randint(8, 20, (n // 2,), generator=gen, dtype=torch.int32)  # visible, unsaturated values
    b[: n // 2] = torch.randint(-100, 100, (n // 2,), generator=gen, dtype=torch.int32)
    return m, s, b


def _exchange(emu: Emulator, opcode: int, payload: bytes = b"", tag: int = 0x33, **kw) -> pr.Frame:
    emu.feed(pr.encode_frame(opcode, tag, payload, **kw))
    (f,) = pr.split_frames(emu.read_output())
    assert (f.version, f.opcode, f.tag) == (pr.VERSION, opcode, tag)
    return f


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------

def test_crc16_check_value_and_reference():
    assert pr.crc16(b"123456789") == 0x29B1

    def bitwise(data: bytes) -> int:
        crc = 0xFFFF
        for byte in data:
            crc ^= byte << 8
            for _ in range(8):
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        return crc

    gen = torch.Generator().manual_seed(1)
    for n in (0, 1, 7, 300):
        data = bytes(torch.randint(0, 256, (n,), generator=gen).tolist())
        assert pr.crc16(data) == bitwise(data)


def test_frame_round_trip_and_malformed():
    payload = bytes(range(256)) * 3
    for to_device, sync in ((True, 0xA5), (False, 0x5A)):
        f = pr.encode_frame(pr.OP_LINEAR, 201, payload, to_device=to_device)
        assert f[0] == sync and f[1] == pr.VERSION and f[2] == pr.OP_LINEAR and f[3] == 201
        assert int.from_bytes(f[4:6], "little") == len(payload) and len(f) == len(payload) + 8
        assert int.from_bytes(f[-2:], "little") == pr.crc16(f[1:-2])
        got = pr.parse_frame(f, from_device=not to_device)
        assert (got.sync, got.version, got.opcode, got.tag, got.payload) == (sync, 1, pr.OP_LINEAR, 201, payload)
    resp = pr.encode_frame(pr.OP_INFO, 5, b"\x00abc", to_device=False)
    f = pr.parse_frame(resp)
    assert f.status == 0 and f.data == b"abc"
    both = resp + pr.encode_frame(pr.OP_RESET, 6, b"\x04", to_device=False)
    assert [(x.tag, x.status) for x in pr.split_frames(both)] == [(5, 0), (6, pr.ERR_LENGTH)]
    bad_crc = resp[:-1] + bytes((resp[-1] ^ 1,))
    wrong_version = pr.encode_frame(pr.OP_INFO, 5, b"\x00", to_device=False, version=2)
    for bad, match in ((bad_crc, "CRC"), (resp[:-1], "length field"), (resp[:5], "cannot hold"),
                       (pr.encode_frame(pr.OP_INFO, 5, b"\x00"), "sync"), (wrong_version, "version")):
        with pytest.raises(pr.ProtocolError, match=match):
            pr.parse_frame(bad)
    with pytest.raises(pr.ProtocolError, match="> max_payload"):
        pr.parse_frame(resp, max_payload=3)


def test_info():
    dev, emu = _device(lanes=8, in_max=300, weight_rows=1000, param_channels=500, membrane_rows=777,
                       att_dim_max=32, att_max_tokens=100, max_payload=300, clock_hz=50_000_000)
    info = dev.info()
    assert info == pr.DeviceInfo(1, 8, 300, 1000, 500, 777, 32, 100, 300, 50_000_000)
    raw = _exchange(emu, pr.OP_INFO)
    assert raw.status == 0 and len(raw.data) == pr.INFO_FORMAT.size == 23


# --------------------------------------------------------------------------------------------
# Ops against intops
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("out_bits", [8, 16, 32])
def test_linear_equals_intops(out_bits):
    gen = torch.Generator().manual_seed(out_bits)
    mp = 256
    dev, emu = _device(max_payload=mp)
    c_in, c_out, tokens, w_base, p_base = 50, 37, 40, 11, 5
    w = torch.randint(-128, 128, (c_out, c_in), generator=gen, dtype=torch.int8)
    rows = _rows(w)
    assert rows.tolist() == [r["data"] for r in spike_accum_rows(w, P)]  # the engine's row layout
    m, s, b = _params(gen, c_out)
    x = _spikes(gen, tokens, c_in, 0.3)
    x[[0, 7, 8, 39]] = 0
    dev.write_weights(w_base, rows)   # several frames: (256 - 4) // 16 = 15 rows each
    dev.write_params(p_base, m, s, b)
    dev.clear_counters()
    y = dev.linear(x, c_out=c_out, w_base=w_base, p_base=p_base, out_bits=out_bits)
    assert y.dtype == torch.int32 and torch.equal(y, intops.requant(intops.linear_int8(x, w), m, s, b, out_bits))
    # frames: as many tokens as the request and the response allow
    per = min((mp - 13) // 7, (mp - 1) // (c_out * out_bits // 8))
    n_frames = -(-tokens // per)
    c = dev.counters()
    pops = x.sum(1).tolist()
    g = -(-c_out // P)
    assert c["frames"] == n_frames + 1 and c["errors"] == 0
    assert c["linear_busy"] == n_frames + sum(g * max(1, q) for q in pops)
    assert c["linear_spikes"] == sum(pops) and c["linear_acc_ops"] == P * g * sum(pops)
    assert c["requant_lif_busy"] == tokens * g
    assert c["linear_starved"] == c["linear_blocked"] == c["attention_busy"] == 0
    # raw accumulators: out_bits 32, M = 2, S = 1, B = 0
    dev.write_params(0, [2] * c_out, [1] * c_out, [0] * c_out)
    raw = dev.linear(x, c_out=c_out, w_base=w_base, p_base=0, out_bits=32)
    assert torch.equal(raw, intops.linear_int8(x, w))
    assert dev.linear(x[:0], c_out=c_out, w_base=w_base, p_base=0, out_bits=8).shape == (0, c_out)


def test_lif_time_steps_equal_intops():
    gen = torch.Generator().manual_seed(2)
    dev, emu = _device(max_payload=256, membrane_rows=600)
    T, tokens, ch, base = 5, 30, 40, 5
    gc = -(-ch // P)
    leak, shift, theta = 3, 3, 1500
    x = torch.randint(-3000, 4000, (T, tokens, ch), generator=gen, dtype=torch.int32)
    x[1, 3] = (1 << 15) - 1
    x[2, 4] = -(1 << 15)
    dev.write_lif(leak, shift, theta)
    dev.clear_counters()
    out = torch.empty(T, tokens, ch, dtype=torch.int8)
    for t in range(T):  # any token order and split: the second half first
        out[t, 13:] = dev.lif(x[t, 13:], neuron=base + 13, first=t == 0)
        out[t, :13] = dev.lif(x[t, :13], neuron=base, first=t == 0)
    assert torch.equal(out, intops.lif(x, leak, shift, theta))
    assert dev.counters()["requant_lif_busy"] == T * tokens * gc
    # membrane layout: neuron n channel c at row n * ceil(ch / P) + c // P, lane c % P
    v = torch.zeros(tokens, ch, dtype=torch.int32)
    for t in range(T):
        _, v = intops.lif_step(v, x[t], leak, shift, theta)
    for n, c in ((0, 0), (7, 17), (29, 39), (12, 31)):
        assert int(emu.membranes[(base + n) * gc + c // P, c % P]) == int(v[n, c])
    # first = 1 starts over from 0
    x2 = torch.randint(-3000, 4000, (2, tokens, ch), generator=gen, dtype=torch.int32)
    got = torch.stack([dev.lif(x2[t], neuron=base, first=t == 0) for t in range(2)])
    assert torch.equal(got, intops.lif(x2, leak, shift, theta))


def _window(gen: torch.Generator, n: int, n_q: int, dim: int) -> tuple[torch.Tensor, ...]:
    k, v, q = _spikes(gen, n, dim, 0.15), _spikes(gen, n, dim, 0.4), _spikes(gen, n_q, dim, 0.15)
    k[[0, 5, 6, 9, 20]] = 0
    q[[0, 1, 4, 10, 11, 12, n_q - 1]] = 0
    return k, v, q


@pytest.mark.parametrize("mode", ["dot", "hamming"])
def test_attention_equals_intops(mode):
    gen = torch.Generator().manual_seed(5 + len(mode))
    dev, emu = _device()
    dim, p_base = 20, 7
    groups = -(-dim // P)
    dev.write_params(p_base, [2] * dim, [1] * dim, [0] * dim)
    for k, v, q in (_window(gen, 37, 23, dim),
                    (torch.zeros(6, dim, dtype=torch.int8), _spikes(gen, 6, dim, 0.5), _spikes(gen, 4, dim, 0.5))):
        cmds = encode_window(k, v, q, mode)
        # raw read-out: decoded records equal intops.attention; counters follow the cycle model
        dev.clear_counters()
        recs = dev.attention(cmds[1:], mode=mode, dim=dim, tokens=cmds[0]["tokens"], p_base=p_base, out_bits=32)
        beats = [{**r, "group": 0, "last": 1} for r in recs]
        assert torch.equal(decode_readout(beats, q.shape[0], dim, dim, mode), intops.attention(q, k, v, mode))
        want = perf.attention_cycles(k, v, q, dim, P, mode, compact=True)
        c = dev.counters()
        assert (c["attention_busy"], c["attention_spikes"], c["attention_acc_ops"]) == (
            want["busy"], want["spikes"], want["acc_ops"])
        assert c["requant_lif_busy"] == len(recs) * groups and c["linear_busy"] == 0
        assert len(recs) == sum(1 for x in cmds if x["op"] == 2)
    # requantised: the constant (dot: requant(0) = B, not 0) needs a constant request
    k, v, q = _window(gen, 37, 23, dim)
    body = encode_window(k, v, q, mode)
    tokens, body = body[0]["tokens"], body[1:]
    if mode == "dot":
        first_q = next(i for i, x in enumerate(body) if x["op"] == 2)
        body.insert(first_q, {"op": 2, "mode": 1})
    for out_bits in (8, 16, 32):
        m, s, b = _params(gen, dim)
        dev.write_params(p_base, m, s, b)
        recs = dev.attention(body, mode=mode, dim=dim, tokens=tokens, p_base=p_base, out_bits=out_bits)
        got = decode_readout([{**r, "group": 0, "last": 1} for r in recs], q.shape[0], dim, dim, mode)
        assert torch.equal(got, intops.requant(intops.attention(q, k, v, mode), m, s, b, out_bits)), out_bits
    # a leading CONFIG command is accepted when it agrees
    cmds = encode_window(k, v, q, mode)
    assert dev.attention(cmds, mode=mode, dim=dim, tokens=cmds[0]["tokens"], p_base=p_base, out_bits=8) == \
        dev.attention(cmds[1:], mode=mode, dim=dim, tokens=cmds[0]["tokens"], p_base=p_base, out_bits=8)


# --------------------------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------------------------

def test_pipelined_requests_with_tags():
    dev, emu = _device()
    stream = b"".join(pr.encode_frame(op, tag, p) for op, tag, p in (
        (pr.OP_INFO, 7, b""), (pr.OP_WRITE_LIF, 200, pr.WRITE_LIF_FORMAT.pack(1, 1, 100)),
        (0x0B, 9, b""), (pr.OP_LIF, 3, pr.LIF_HEADER.pack(2, 0, 1, 1) + struct.pack("<hh", 300, 50)),
        (pr.OP_INFO, 7, b"")))
    for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        for part in chunks:
            emu.feed(part)
        got = [(f.opcode, f.tag, f.status, f.data) for f in pr.split_frames(emu.read_output())]
        info = emu.info.pack()
        assert got == [(pr.OP_INFO, 7, 0, info), (pr.OP_WRITE_LIF, 200, 0, b""), (0x0B, 9, pr.ERR_OPCODE, b""),
                       (pr.OP_LIF, 3, 0, b"\x01"), (pr.OP_INFO, 7, 0, info)]
    res = dev.pipeline([(pr.OP_INFO, b""), (pr.OP_COUNTERS, b""), (pr.OP_INFO, b"")])
    assert res[0] == res[2] == emu.info.pack() and len(res[1]) == pr.COUNTERS_FORMAT.size
    with pytest.raises(pr.DeviceError, match="ERR_OPCODE") as e:
        dev.pipeline([(0x0C, b""), (pr.OP_INFO, b"")])
    assert e.value.opcode == 0x0C
    assert dev.info().lanes == P and dev.stale_responses == 0  # the INFO after the error was read too


def test_garbage_between_frames_is_counted_and_ignored():
    gen = torch.Generator().manual_seed(3)
    dev, emu = _device()
    dev.clear_counters()
    garbage = bytes(x for x in torch.randint(0, 256, (500,), generator=gen).tolist() if x != pr.SYNC_HOST)
    emu.feed(garbage[:100] + pr.encode_frame(pr.OP_INFO, 1, b"") + garbage[100:] + pr.encode_frame(pr.OP_INFO, 2))
    assert [(f.tag, f.status) for f in pr.split_frames(emu.read_output())] == [(1, 0), (2, 0)]
    c = dev.counters()
    assert c["garbage_bytes"] == len(garbage) and c["frames"] == 3 and c["errors"] == 0
    assert c["bytes_in"] == len(garbage) + 3 * 8


def test_truncated_frame_then_valid_frame():
    dev, emu = _device(frame_timeout=1000)
    frame = pr.encode_frame(pr.OP_WRITE_LIF, 0x44, pr.WRITE_LIF_FORMAT.pack(1, 1, 100))
    for cut, opcode, tag in ((9, pr.OP_WRITE_LIF, 0x44), (3, pr.OP_WRITE_LIF, 0), (1, 0, 0)):
        emu.feed(frame[:cut])
        assert emu.in_frame and emu.read_output() == b""
        emu.close_stream()
        (f,) = pr.split_frames(emu.read_output())
        assert (f.opcode, f.tag, f.status) == (opcode, tag, pr.ERR_TRUNCATED)
        assert _exchange(emu, pr.OP_INFO).status == 0
    assert emu.lif_params is None
    emu.feed(frame[:7])
    emu.idle(999)
    assert emu.read_output() == b""
    emu.idle(1)
    assert pr.parse_frame(emu.read_output()).status == pr.ERR_TRUNCATED
    # host recovery: max_payload + 8 zero bytes, then INFO
    dev.transport.write(frame[:10])
    assert dev.resync() == emu.info
    assert dev.stale_responses >= 1 and not emu.in_frame
    dev.write_lif(1, 1, 100)
    assert emu.lif_params == (1, 1, 100)
    # closing the emulator transport mid-frame answers ERR_TRUNCATED
    tr = EmulatorTransport(emu)
    tr.write(frame[:5])
    tr.close()
    assert pr.parse_frame(emu.read_output()).status == pr.ERR_TRUNCATED
    with pytest.raises(ValueError, match="closed"):
        tr.write(b"x")


def _loaded_device() -> tuple[pr.Device, Emulator, dict]:
    gen = torch.Generator().manual_seed(9)
    dev, emu = _device(weight_rows=2048, param_channels=256, membrane_rows=4096, max_payload=512, in_max=100,
                       att_dim_max=32, att_max_tokens=64)
    w = torch.randint(-128, 128, (20, 30), generator=gen, dtype=torch.int8)
    m, s, b = _params(gen, 40)
    dev.write_weights(100, _rows(w))
    dev.write_params(10, m, s, b)
    dev.write_lif(5, 4, 900)
    y0 = torch.randint(-2000, 2000, (6, 24), generator=gen, dtype=torch.int32)
    s0 = dev.lif(y0, neuron=3, first=True)
    return dev, emu, {"w": w, "m": m, "s": s, "b": b, "y0": y0, "s0": s0, "gen": gen}


LIN = pr.LINEAR_HEADER.pack
ATT = pr.ATTENTION_HEADER.pack
LIFH = pr.LIF_HEADER.pack
ONE_TOKEN = b"\x01\x00\x00\x00"      # bits(30): spike on channel 0
BAD_REQUESTS = [  # (what, opcode, payload, expected code); the loaded device: weights rows 100..159, params 10..49
    ("INFO with a payload", pr.OP_INFO, b"\x00", pr.ERR_LENGTH),
    ("COUNTERS with a payload", pr.OP_COUNTERS, b"\x00", pr.ERR_LENGTH),
    ("RESET with a payload", pr.OP_RESET, b"\x00", pr.ERR_LENGTH),
    ("weights: partial row", pr.OP_WRITE_WEIGHTS, struct.pack("<I", 0) + bytes(P + 1), pr.ERR_LENGTH),
    ("weights: no row", pr.OP_WRITE_WEIGHTS, struct.pack("<I", 0), pr.ERR_LENGTH),
    ("weights: short header", pr.OP_WRITE_WEIGHTS, b"\x00\x00", pr.ERR_LENGTH),
    ("params: partial channel", pr.OP_WRITE_PARAMS, struct.pack("<Hhb", 0, 1, 1), pr.ERR_LENGTH),
    ("lif params: 4 bytes", pr.OP_WRITE_LIF, b"\x01\x00\x01\x64", pr.ERR_LENGTH),
    ("linear: short header", pr.OP_LINEAR, LIN(30, 20, 100, 10, 8, 1)[:12], pr.ERR_LENGTH),
    ("linear: a token missing", pr.OP_LINEAR, LIN(30, 20, 100, 10, 8, 2) + ONE_TOKEN, pr.ERR_LENGTH),
    ("linear: a byte too many", pr.OP_LINEAR, LIN(30, 20, 100, 10, 8, 1) + ONE_TOKEN + b"\x00", pr.ERR_LENGTH),
    ("lif: wrong length", pr.OP_LIF, LIFH(24, 3, 1, 0) + bytes(47), pr.ERR_LENGTH),
    ("attention: cut command", pr.OP_ATTENTION, ATT(0, 20, 1, 10, 8) + b"\x01\x01\x00\x00\x01\x00", pr.ERR_LENGTH),
    ("attention: too few KV", pr.OP_ATTENTION, ATT(0, 20, 2, 10, 8) + b"\x01" + bytes(6), pr.ERR_LENGTH),
    ("attention: too many KV", pr.OP_ATTENTION, ATT(0, 20, 1, 10, 8) + b"\x02" + bytes(6), pr.ERR_LENGTH),
    ("attention: Q before KV", pr.OP_ATTENTION, ATT(0, 20, 1, 10, 8) + b"\x04\x01" + bytes(6), pr.ERR_LENGTH),
    ("attention: unknown command", pr.OP_ATTENTION, ATT(0, 20, 0, 10, 8) + b"\x05", pr.ERR_RANGE),
    ("weights: beyond the rows", pr.OP_WRITE_WEIGHTS, struct.pack("<I", 2047) + bytes(2 * P), pr.ERR_RANGE),
    ("params: beyond the channels", pr.OP_WRITE_PARAMS, struct.pack("<HhBi", 256, 1, 1, 0), pr.ERR_RANGE),
    ("params: S = 0", pr.OP_WRITE_PARAMS, struct.pack("<HhBi", 0, 1, 0, 0), pr.ERR_RANGE),
    ("params: S = 48", pr.OP_WRITE_PARAMS, struct.pack("<HhBihBi", 0, 1, 1, 0, 1, 48, 0), pr.ERR_RANGE),
    ("lif params: shift 0", pr.OP_WRITE_LIF, pr.WRITE_LIF_FORMAT.pack(1, 0, 100), pr.ERR_RANGE),
    ("lif params: leak > 2**shift", pr.OP_WRITE_LIF, pr.WRITE_LIF_FORMAT.pack(5, 2, 100), pr.ERR_RANGE),
    ("lif params: theta 0", pr.OP_WRITE_LIF, pr.WRITE_LIF_FORMAT.pack(1, 1, 0), pr.ERR_RANGE),
    ("linear: c_in > in_max", pr.OP_LINEAR, LIN(101, 20, 0, 10, 8, 0), pr.ERR_RANGE),
    ("linear: c_in 0", pr.OP_LINEAR, LIN(0, 20, 100, 10, 8, 1), pr.ERR_RANGE),
    ("linear: c_out 0", pr.OP_LINEAR, LIN(30, 0, 100, 10, 8, 1) + ONE_TOKEN, pr.ERR_RANGE),
    ("linear: out_bits 12", pr.OP_LINEAR, LIN(30, 20, 100, 10, 12, 1) + ONE_TOKEN, pr.ERR_RANGE),
    ("linear: rows beyond", pr.OP_LINEAR, LIN(30, 20, 2000, 10, 8, 1) + ONE_TOKEN, pr.ERR_RANGE),
    ("linear: channels beyond", pr.OP_LINEAR, LIN(30, 20, 100, 240, 8, 1) + ONE_TOKEN, pr.ERR_RANGE),
    ("linear: padding bit", pr.OP_LINEAR, LIN(30, 20, 100, 10, 8, 1) + b"\x01\x00\x00\x40", pr.ERR_RANGE),
    ("linear: response too long", pr.OP_LINEAR, LIN(30, 20, 100, 10, 32, 7) + ONE_TOKEN * 7, pr.ERR_RANGE),
    ("lif: first 2", pr.OP_LIF, LIFH(24, 3, 1, 2) + bytes(48), pr.ERR_RANGE),
    ("lif: channels 0", pr.OP_LIF, LIFH(0, 3, 1, 0), pr.ERR_RANGE),
    ("lif: membranes beyond", pr.OP_LIF, LIFH(24, 2048, 1, 0) + bytes(48), pr.ERR_RANGE),
    ("attention: mode 2", pr.OP_ATTENTION, ATT(2, 20, 0, 10, 8), pr.ERR_RANGE),
    ("attention: dim > att_dim_max", pr.OP_ATTENTION, ATT(0, 33, 0, 10, 8), pr.ERR_RANGE),
    ("attention: dim 0", pr.OP_ATTENTION, ATT(0, 0, 0, 10, 8), pr.ERR_RANGE),
    ("attention: tokens > max", pr.OP_ATTENTION, ATT(0, 20, 65, 10, 8) + b"\x02" + bytes(6) * 32 + b"\x01" + bytes(6),
     pr.ERR_RANGE),
    ("attention: out_bits 7", pr.OP_ATTENTION, ATT(0, 20, 0, 10, 7), pr.ERR_RANGE),
    ("attention: channels beyond", pr.OP_ATTENTION, ATT(0, 20, 0, 240, 8), pr.ERR_RANGE),
    ("attention: k bit >= dim", pr.OP_ATTENTION, ATT(0, 20, 1, 10, 8) + b"\x01\x00\x00\x10" + bytes(3),
     pr.ERR_RANGE),
    ("attention: q bit >= dim", pr.OP_ATTENTION, ATT(0, 20, 0, 10, 8) + b"\x03\x00\x00\x00\x00\x20", pr.ERR_RANGE),
    ("attention: response too long", pr.OP_ATTENTION, ATT(1, 32, 0, 10, 32) + b"\x04" * 4, pr.ERR_RANGE),
    ("linear: unwritten rows", pr.OP_LINEAR, LIN(30, 20, 101, 10, 8, 1) + ONE_TOKEN, pr.ERR_UNLOADED),
    ("linear: unwritten channels", pr.OP_LINEAR, LIN(30, 20, 100, 35, 8, 0), pr.ERR_UNLOADED),
    ("attention: unwritten channels", pr.OP_ATTENTION, ATT(0, 20, 0, 40, 8), pr.ERR_UNLOADED),
    ("unknown opcode 0x00", 0x00, b"", pr.ERR_OPCODE),
    ("unknown opcode 0x0B", 0x0B, b"", pr.ERR_OPCODE),
    ("unknown opcode 0xFF", 0xFF, b"\x01\x02", pr.ERR_OPCODE),
]


def _assert_unchanged(before: dict, after: dict, what: str) -> None:
    for k, v in before.items():
        same = torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k]
        assert same, f"{what}: {k} changed"


def test_error_responses_leave_the_device_unchanged():
    dev, emu, d = _loaded_device()
    busy_keys = [k for k in pr.COUNTER_NAMES if k.startswith(("linear", "attention", "requant"))]
    cases = list(BAD_REQUESTS)
    good = pr.encode_frame(pr.OP_WRITE_WEIGHTS, 0x21, struct.pack("<I", 0) + bytes(range(P)))
    cases.append(("bad CRC", None, good[:-1] + bytes((good[-1] ^ 0x80,)), pr.ERR_CRC))
    flipped = bytearray(good)
    flipped[8] ^= 1
    cases.append(("bad payload byte", None, bytes(flipped), pr.ERR_CRC))
    cases.append(("version 2", None, pr.encode_frame(pr.OP_WRITE_WEIGHTS, 0x21, good[6:-2], version=2),
                  pr.ERR_VERSION))
    cases.append(("version 0", None, pr.encode_frame(pr.OP_RESET, 0x21, b"", version=0), pr.ERR_VERSION))
    for what, opcode, payload, code in cases:
        before, c0 = emu.snapshot(), emu.counters()
        raw = payload if opcode is None else pr.encode_frame(opcode, 0x21, payload)
        emu.feed(raw)
        (f,) = pr.split_frames(emu.read_output())
        assert (f.version, f.tag, f.status) == (1, 0x21, code), what
        assert f.opcode == raw[2] and f.data == b"", what
        _assert_unchanged(before, emu.snapshot(), what)
        c1 = emu.counters()
        assert c1["errors"] == c0["errors"] + 1 and c1["frames"] == c0["frames"] + 1, what
        assert all(c1[k] == c0[k] for k in busy_keys), what
    # the state is intact: exact results, the LIF continuing from the step before the errors
    x = _spikes(d["gen"], 9, 30, 0.4)
    y = dev.linear(x, c_out=20, w_base=100, p_base=10, out_bits=16)
    assert torch.equal(y, intops.requant(intops.linear_int8(x, d["w"]), d["m"][:20], d["s"][:20], d["b"][:20], 16))
    y1 = torch.randint(-2000, 2000, (6, 24), generator=d["gen"], dtype=torch.int32)
    s1 = dev.lif(y1, neuron=3, first=False)
    assert torch.equal(torch.stack([d["s0"], s1]), intops.lif(torch.stack([d["y0"], y1]), 5, 4, 900))
    assert dev.counters()["errors"] == len(cases)


def test_oversize_length_is_answered_at_once():
    dev, emu = _device(max_payload=300)
    dev.clear_counters()
    head = bytes((pr.SYNC_HOST, 1, pr.OP_WRITE_WEIGHTS, 0x77)) + (301).to_bytes(2, "little")
    emu.feed(head)
    f = pr.parse_frame(emu.read_output())
    assert (f.opcode, f.tag, f.status) == (pr.OP_WRITE_WEIGHTS, 0x77, pr.ERR_LENGTH) and not emu.in_frame
    body = bytes(range(1, 160)) * 2  # no 0xA5 below 160: hunted over as garbage
    emu.feed(body[:303] + pr.encode_frame(pr.OP_INFO, 0x78))
    assert pr.parse_frame(emu.read_output()).tag == 0x78
    c = dev.counters()
    assert c["garbage_bytes"] == 303 and c["errors"] == 1 and c["frames"] == 3
    assert not emu.weights_written.any()


def test_unloaded_after_reset_and_power_on():
    dev, emu, d = _loaded_device()
    x = _spikes(d["gen"], 3, 30, 0.5)
    dev.reset()
    assert not emu.weights_written.any() and not emu.params_written.any() and not emu.membranes.any()
    assert dev.counters()["frames"] == 1
    for call in (lambda: dev.linear(x, c_out=20, w_base=100, p_base=10, out_bits=8),
                 lambda: dev.lif(d["y0"], neuron=0, first=True),
                 lambda: dev.attention([], mode="dot", dim=4, tokens=0, p_base=0, out_bits=8)):
        with pytest.raises(pr.DeviceError) as e:
            call()
        assert e.value.code == pr.ERR_UNLOADED and e.value.name == "ERR_UNLOADED"
    dev.write_weights(100, _rows(d["w"]))
    with pytest.raises(pr.DeviceError, match=r"LINEAR \(tag \d+\) failed: ERR_UNLOADED") as e:
        dev.linear(x, c_out=20, w_base=100, p_base=10, out_bits=8)  # params still unwritten
    assert e.value.opcode == pr.OP_LINEAR


# --------------------------------------------------------------------------------------------
# Client behaviour
# --------------------------------------------------------------------------------------------

class _Silent(Transport):
    """Never answers."""

    def write(self, data: bytes) -> None:
        pass

    def read(self, n: int, timeout: float) -> bytes:
        time.sleep(max(0.0, timeout))
        raise pr.TransportTimeout(f"nothing in {timeout:g} s")


class _Tamper(EmulatorTransport):
    """An emulator transport whose request frames (``on_write``) and response bytes (``on_read``) can be altered."""

    def __init__(self, emu: Emulator, on_write=None, on_read=None):
        super().__init__(emu)
        self.on_write, self.on_read, self.writes = on_write, on_read, 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.on_write:
            data = self.on_write(self.writes, data)
        self.emulator.feed(data)
        out = self.emulator.read_output()
        self._buf += self.on_read(out) if self.on_read else out


def test_transport_timeout():
    dev = pr.Device(_Silent(), timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(pr.TransportTimeout, match=r"INFO \(tag 1\): no complete response within 0.2 s"):
        dev.info()
    assert time.monotonic() - t0 < 1.0
    emu = Emulator()
    dev = pr.Device(_Tamper(emu, on_read=lambda b: b[:-1]), timeout=0.2)  # a response cut short
    with pytest.raises(pr.TransportTimeout, match="INFO"):
        dev.info()


def test_stale_and_malformed_responses():
    emu = Emulator()
    stale = pr.encode_frame(pr.OP_INFO, 0xEE, b"\x00" + emu.info.pack(), to_device=False)
    dev = pr.Device(_Tamper(emu, on_read=lambda b: b"\x00\x13" + stale + b), timeout=0.5)
    assert dev.info() == emu.info
    assert dev.stale_responses == 1 and dev.skipped_bytes == 2

    def same_tag_other_op(b):
        f = pr.parse_frame(b)
        return pr.encode_frame(pr.OP_RESET, f.tag, b"\x00", to_device=False)

    for on_read, match in ((same_tag_other_op, "opcode 0x02"),
                           (lambda b: b[:-1] + bytes((b[-1] ^ 1,)), "CRC"),
                           (lambda b: b[:1] + b"\x02" + b[2:], "version 2"),
                           (lambda b: pr.encode_frame(b[2], b[3], b"\x00\x01", to_device=False), "1 data bytes")):
        dev = pr.Device(_Tamper(emu, on_read=on_read), timeout=0.5)
        with pytest.raises(pr.ProtocolError, match=match):
            dev.info()


def test_multi_frame_failure_returns_nothing():
    gen = torch.Generator().manual_seed(4)
    emu = Emulator(EmulatorConfig(max_payload=128))
    dev = pr.Device(EmulatorTransport(emu))
    w = torch.randint(-128, 128, (8, 20), generator=gen, dtype=torch.int8)
    dev.write_weights(0, _rows(w))
    dev.write_params(0, [1] * 8, [1] * 8, [0] * 8)
    x = _spikes(gen, 40, 20, 0.5)  # (128 - 1) // 8 = 15 tokens per frame: 3 frames

    def corrupt_second(n, data):
        return data[:10] + bytes((data[10] ^ 1,)) + data[11:] if n == 2 else data

    dev.transport = _Tamper(emu, on_write=corrupt_second)
    dev.clear_counters()
    dev.transport.writes = 0
    with pytest.raises(pr.DeviceError, match="LINEAR.*ERR_CRC") as e:
        dev.linear(x, c_out=8, w_base=0, p_base=0, out_bits=8)
    assert e.value.code == pr.ERR_CRC and e.value.opcode == pr.OP_LINEAR
    assert dev.transport.writes == 2  # stopped at the failed frame


def test_engine_error_is_reported(monkeypatch):
    class Broken(emulator_mod.EngineModel):
        def command(self, c):
            out = super().command(c)
            if c["op"] == 2:
                self.error, self.error_code = 1, 5
            return out

    monkeypatch.setattr(emulator_mod, "EngineModel", Broken)
    dev, emu = _device()
    dev.write_params(0, [2] * 4, [1] * 4, [0] * 4)
    c0 = emu.counters()
    with pytest.raises(pr.DeviceError, match=r"ATTENTION .*ERR_ENGINE \(8\).*engine 2, engine error 5") as e:
        dev.attention([{"op": 2, "a": 1, "skip": 0}], mode="dot", dim=4, tokens=0, p_base=0, out_bits=8)
    assert e.value.detail == bytes((pr.ENGINE_ATTENTION, 5))
    assert emu.counters()["attention_busy"] == c0["attention_busy"]


def test_argument_validation_sends_nothing():
    dev, emu = _device(in_max=64, weight_rows=100, param_channels=50, membrane_rows=40, att_dim_max=16,
                       att_max_tokens=20, max_payload=200)
    dev.info()
    x = torch.zeros(2, 10, dtype=torch.int8)
    y = torch.zeros(2, 20, dtype=torch.int32)
    kv = [{"op": 1, "a": 1, "b": 3}]
    att = {"mode": "dot", "dim": 8, "tokens": 1, "p_base": 0, "out_bits": 8}
    cases = [
        (lambda: dev.write_weights(0, torch.zeros(2, P)), TypeError, "dtype int8"),
        (lambda: dev.write_weights(0, torch.zeros(2, 8, dtype=torch.int8)), ValueError, r"\(k, P = 16\)"),
        (lambda: dev.write_weights(99, torch.zeros(2, P, dtype=torch.int8)), ValueError, "weight rows 99 .. 100"),
        (lambda: dev.write_weights(-1, torch.zeros(2, P, dtype=torch.int8)), ValueError, "row = -1"),
        (lambda: dev.write_params(0, [1, 2], [1], [0, 0]), ValueError, "equal lengths"),
        (lambda: dev.write_params(0, [1 << 15], [1], [0]), ValueError, "M out of range"),
        (lambda: dev.write_params(0, [1], [0], [0]), ValueError, r"S out of range \[1, 47\]"),
        (lambda: dev.write_params(0, [1], [1], [1 << 31]), ValueError, "B out of range"),
        (lambda: dev.write_params(0, torch.ones(2), [1, 1], [0, 0]), TypeError, "M must be an integer tensor"),
        (lambda: dev.write_params(49, [1, 1], [1, 1], [0, 0]), ValueError, "channels 49 .. 50"),
        (lambda: dev.write_lif(5, 2, 100), ValueError, "leak"),
        (lambda: dev.write_lif(1, 1, 1 << 15), ValueError, "theta"),
        (lambda: dev.write_lif(1.0, 1, 100), TypeError, "leak must be an int"),
        (lambda: dev.linear(x.float(), c_out=4, w_base=0, p_base=0, out_bits=8), TypeError, "dtype int8"),
        (lambda: dev.linear(x + 2, c_out=4, w_base=0, p_base=0, out_bits=8), ValueError, "spikes"),
        (lambda: dev.linear(x[0], c_out=4, w_base=0, p_base=0, out_bits=8), ValueError, r"\(tokens, c_in\)"),
        (lambda: dev.linear(torch.zeros(2, 65, dtype=torch.int8), c_out=4, w_base=0, p_base=0, out_bits=8),
         ValueError, "in_max = 64"),
        (lambda: dev.linear(x, c_out=4, w_base=0, p_base=0, out_bits=12), ValueError, "out_bits must be 8, 16 or 32"),
        (lambda: dev.linear(x, c_out=17, w_base=81, p_base=0, out_bits=8), ValueError, r"rows 81 \.\. 100"),
        (lambda: dev.linear(x, c_out=4, w_base=0, p_base=47, out_bits=8), ValueError, "channels 47 .. 50"),
        (lambda: dev.linear(x, c_out=0, w_base=0, p_base=0, out_bits=8), ValueError, "c_out = 0"),
        (lambda: dev.linear(x, c_out=50, w_base=0, p_base=0, out_bits=32), ValueError, "does not fit max_payload"),
        (lambda: dev.lif(y.to(torch.int64), neuron=0, first=True), TypeError, "int32"),
        (lambda: dev.lif(y + (1 << 15), neuron=0, first=True), ValueError, "16-bit"),
        (lambda: dev.lif(y, neuron=19, first=True), ValueError, "42 membrane rows"),
        (lambda: dev.lif(y, neuron=0, first=2), ValueError, "first"),
        (lambda: dev.lif(y, neuron=0, first="yes"), TypeError, "first"),
        (lambda: dev.attention(kv, **{**att, "mode": "cosine"}), ValueError, "mode"),
        (lambda: dev.attention(kv, **{**att, "dim": 17}), ValueError, r"dim = 17 out of range \[1, 16\]"),
        (lambda: dev.attention(kv, **{**att, "tokens": 21}), ValueError, "tokens = 21"),
        (lambda: dev.attention(kv, **{**att, "p_base": 45}), ValueError, "channels 45 .. 52"),
        (lambda: dev.attention([{"op": 1, "a": 256, "b": 0}], **att), ValueError, "bits at or above dim = 8"),
        (lambda: dev.attention(kv, **{**att, "tokens": 2}), ValueError, "1 KV tokens, tokens = 2"),
        (lambda: dev.attention(kv + kv, **att), ValueError, "more KV tokens"),
        (lambda: dev.attention([{"op": 2, "a": 1}, *kv], **att), ValueError, "Q command after 0"),
        (lambda: dev.attention([*kv, {"op": 2, "a": 1}, *kv], **att), ValueError, "KV command after a Q"),
        (lambda: dev.attention([*kv, {"op": 3}], **att), ValueError, "not a KV / Q command"),
        (lambda: dev.attention([*kv, {"op": 2, "a": 1, "skip": 1 << 16}], **att), ValueError, "skip"),
        (lambda: dev.attention([{"op": 0, "mode": 1, "dim": 8, "tokens": 1}, *kv], **att), ValueError, "CONFIG"),
        (lambda: dev.attention(kv + [{"op": 2, "a": 1}] * 30, **att), ValueError, "does not fit one frame"),
    ]
    before = emu.counters()["bytes_in"]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    assert emu.counters()["bytes_in"] == before


def _pty_pair() -> tuple[int, int]:
    try:
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        return master, slave
    except (OSError, ImportError, AttributeError) as e:
        pytest.skip(f"no pseudo-terminals here: {e}")


def test_serial_transport_against_the_emulator_over_a_pty():
    master, slave = _pty_pair()
    emu = Emulator(EmulatorConfig(max_payload=512))
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if not select.select([master], [], [], 0.02)[0]:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            emu.feed(data)
            out = emu.read_output()
            while out:
                out = out[os.write(master, out):]

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        gen = torch.Generator().manual_seed(6)
        w = torch.randint(-128, 128, (20, 40), generator=gen, dtype=torch.int8)
        m, s, b = _params(gen, 20)
        x = _spikes(gen, 50, 40, 0.3)
        with SerialTransport(os.ttyname(slave), baudrate=115200) as tr:
            dev = pr.Device(tr, timeout=5.0)
            assert dev.info() == emu.info
            dev.write_weights(0, _rows(w))
            dev.write_params(0, m, s, b)
            tr.write(b"\x00\x11\x22")  # garbage between frames
            y = dev.linear(x, c_out=20, w_base=0, p_base=0, out_bits=16)
            assert torch.equal(y, intops.requant(intops.linear_int8(x, w), m, s, b, 16))
            assert dev.counters()["garbage_bytes"] == 3
            with pytest.raises(pr.TransportTimeout, match="0 of 1 bytes"):
                tr.read(1, 0.05)
    finally:
        stop.set()
        th.join(2)
        os.close(master)
        os.close(slave)
