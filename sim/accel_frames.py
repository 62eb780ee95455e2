"""Request frames, response decoding and the response scoreboard for the accelerator top (``rtl.accelerator``).

Plain Python on top of :mod:`driver.protocol` (the protocol's executable truth): the cocotb testbench
``sim/tb_accelerator.py`` and the pysim tests ``tests/test_accelerator.py`` build their byte streams
here and compare what the RTL sent with what :class:`driver.emulator.Emulator` sends for the same
bytes (:func:`compare_responses`).
"""

from __future__ import annotations

import numpy as np
import torch

import driver.protocol as pr
from driver.emulator import EmulatorConfig

__all__ = [
    "UNMODELLED_COUNTERS", "emulator_config", "weight_rows", "req_write_weights", "req_write_params",
    "req_write_lif", "req_linear", "req_lif", "req_attention", "values", "compare_responses",
]

#: COUNTERS words the emulator reports as 0 (it has no clock): compared only by the RTL's own checks
UNMODELLED_COUNTERS = ("linear_starved", "linear_blocked", "attention_starved", "attention_blocked")
_VALUE_DTYPES = {8: "<i1", 16: "<i2", 32: "<i4"}


def emulator_config(params: dict) -> EmulatorConfig:
    """The emulator with an accelerator's INFO values and frame timeout (``Accelerator(**params)``)."""
    from rtl.accelerator import AcceleratorConfig

    cfg = AcceleratorConfig(**params)
    info = cfg.info()
    info.pop("version")
    return EmulatorConfig(**info, frame_timeout=cfg.frame_timeout)


def weight_rows(w: torch.Tensor, lanes: int) -> torch.Tensor:
    """Device weight rows of ``w (c_out, c_in)`` int8: row ``i * G + g`` lane ``l`` = ``w[g*P + l, i]``."""
    c_out, c_in = w.shape
    g = -(-c_out // lanes)
    pad = torch.zeros(g * lanes, c_in, dtype=torch.int8)
    pad[:c_out] = w
    return pad.reshape(g, lanes, c_in).permute(2, 0, 1).reshape(c_in * g, lanes)


def req_write_weights(row: int, rows: torch.Tensor) -> bytes:
    return pr.WEIGHTS_HEADER.pack(row) + rows.contiguous().numpy().astype(np.int8).tobytes()


def req_write_params(channel: int, m, s, b) -> bytes:
    rec = np.empty(len(m), dtype=pr.PARAM_DTYPE)
    rec["m"], rec["s"], rec["b"] = np.asarray(m), np.asarray(s), np.asarray(b)
    return pr.PARAMS_HEADER.pack(channel) + rec.tobytes()


def req_write_lif(leak: int, shift: int, theta: int) -> bytes:
    return pr.WRITE_LIF_FORMAT.pack(leak, shift, theta)


def req_linear(x: torch.Tensor, *, c_out: int, w_base: int, p_base: int, out_bits: int) -> bytes:
    tokens, c_in = x.shape
    return pr.LINEAR_HEADER.pack(c_in, c_out, w_base, p_base, out_bits, tokens) + pr.pack_bits(x)


def req_lif(y: torch.Tensor, *, neuron: int, first: int) -> bytes:
    tokens, channels = y.shape
    return pr.LIF_HEADER.pack(channels, neuron, tokens, first) + y.numpy().astype("<i2").tobytes()


def req_attention(commands: list[dict], *, mode: int, dim: int, tokens: int, p_base: int, out_bits: int) -> bytes:
    """ATTENTION payload from ``driver.attention.encode_window`` KV / Q dicts (a leading CONFIG is dropped)."""
    cmds = [c for c in commands if c.get("op") != 0]
    return (pr.ATTENTION_HEADER.pack(mode, dim, tokens, p_base, out_bits)
            + b"".join(pr.attention_command_bytes(c, dim) for c in cmds))


def values(data: bytes, out_bits: int) -> np.ndarray:
    """Signed little-endian ``out_bits`` values -> int64."""
    return np.frombuffer(data, dtype=_VALUE_DTYPES[out_bits]).astype(np.int64)


def _counters(f: pr.Frame) -> dict[str, int] | None:
    if f.opcode != pr.OP_COUNTERS or not f.payload or f.status != pr.OK or len(f.data) != pr.COUNTERS_FORMAT.size:
        return None
    return dict(zip(pr.COUNTER_NAMES, pr.COUNTERS_FORMAT.unpack(f.data), strict=True))


def compare_responses(got: bytes, want: bytes) -> tuple[list[str], list[pr.Frame]]:
    """Frame-by-frame comparison of the RTL's response bytes with the emulator's.

    Every frame must be well formed (sync, version, length, CRC: :func:`driver.protocol.split_frames`).
    Frames are equal byte for byte, except COUNTERS responses, whose :data:`UNMODELLED_COUNTERS` words
    (and therefore CRC) may differ. Returns the mismatch messages and the RTL's frames."""
    problems: list[str] = []
    try:
        got_f = pr.split_frames(got)
    except pr.ProtocolError as e:
        return [f"malformed response stream from the RTL: {e}; bytes {got.hex()}"], []
    want_f = pr.split_frames(want)
    if len(got_f) != len(want_f):
        problems.append(f"{len(got_f)} response frames, the emulator sent {len(want_f)}")
    for i, (g, w) in enumerate(zip(got_f, want_f, strict=False)):
        what = f"response {i} ({pr.OPCODE_NAMES.get(w.opcode, hex(w.opcode))} tag {w.tag})"
        gc, wc = _counters(g), _counters(w)
        if gc is not None and wc is not None and (g.opcode, g.tag) == (w.opcode, w.tag):
            diff = {k: (gc[k], wc[k]) for k in pr.COUNTER_NAMES if k not in UNMODELLED_COUNTERS and gc[k] != wc[k]}
            if diff:
                problems.append(f"{what}: counters (rtl, emulator) {diff}")
            continue
        if g != w:
            problems.append(f"{what}: rtl op {g.opcode:#x} tag {g.tag} status {g.payload[:1].hex()} data "
                            f"{g.data[:48].hex()}... ({len(g.data)} B), emulator status {w.payload[:1].hex()} "
                            f"data {w.data[:48].hex()}... ({len(w.data)} B)")
    return problems, got_f
