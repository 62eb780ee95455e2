"""Host side of the host <-> accelerator protocol, version 1 (``docs/protocol.md``).

This module is the executable truth of that page: the constants, the frame codec, the packers and
parsers of every op, and :class:`Device`, the client that validates arguments, splits work into
frames, sends them over a :mod:`driver.transport` and checks every response.

Frames (both directions): ``sync, version, opcode, tag, u16 length L, payload, u16 crc`` with the
CRC-16/CCITT-FALSE of ``version .. payload`` (:func:`crc16`). A response payload is a status byte
and, for status 0, the op's data (:class:`DeviceError` for any other status).

Resolutions of points ``docs/protocol.md`` leaves open or states twice (the emulator
:mod:`driver.emulator` follows the same rules):

* **Header and INFO sizes.** The page's field lists are normative: the ATTENTION header
  ``u8 mode, u8 dim, u16 tokens, u16 p_base, u8 out_bits`` is **7** bytes (the page's "(8 bytes)"
  does not add up) and the INFO data ``u8 version .. u32 clock_hz`` is **23** bytes (not "25"),
  and COUNTERS carries the **16** counters section 5 names (64 bytes, not "20 words, 80 bytes").
  :data:`ATTENTION_HEADER`, :data:`INFO_FORMAT` and :data:`COUNTER_NAMES` are the single definitions.
* **Check order on the device**, first failure wins: ``L > max_payload`` (``ERR_LENGTH``, answered
  at once) -> CRC (``ERR_CRC``) -> version (``ERR_VERSION``; the frame layout itself is taken as
  version independent) -> opcode (``ERR_OPCODE``) -> the payload length for the op and for the
  counts in its header (``ERR_LENGTH``) -> value ranges: header fields, bitmap padding bits, shifts,
  a response that would exceed ``max_payload`` (``ERR_RANGE``) -> unwritten weight rows, parameter
  channels or LIF parameters (``ERR_UNLOADED``). Nothing changes state before all checks passed.
* **Counts of zero.** ``c_in``, ``c_out``, ``channels`` and ``dim`` must be >= 1 (``ERR_RANGE``);
  ``tokens = 0`` is a valid (empty) LINEAR / LIF frame and a valid ATTENTION window.
* **LINEAR / ATTENTION read** the weight rows ``w_base .. w_base + c_in * G - 1`` and the parameter
  channels ``p_base .. p_base + c_out - 1`` (ATTENTION: ``.. p_base + dim - 1``) whatever the
  spikes; ATTENTION requantises even the raw read-out, so its channels must be written too.
* **LIF parameters** have a *written* mark like the weights and parameters (cleared by RESET): a LIF
  op before any WRITE_LIF is ``ERR_UNLOADED``. ``first`` must be 0 or 1 (``ERR_RANGE``). Lanes of a
  membrane row beyond ``channels`` are left unchanged.
* **ATTENTION command stream.** The length check walks the commands: a command cut off by the end
  of the payload, a number of KV tokens (a V pair counts 2) different from the header's ``tokens``,
  or a KV command after a Q command is ``ERR_LENGTH`` (the payload does not match its header); an
  unknown type byte met on the walk is ``ERR_RANGE`` (the walk cannot go on). So the
  engine's own count errors cannot occur; ``ERR_ENGINE`` stays a safety net. Engine ids in its
  second byte: :data:`ENGINE_LINEAR`, :data:`ENGINE_ATTENTION`, :data:`ENGINE_REQUANT_LIF`.
* **ERR_TRUNCATED** answers any incomplete frame, also one whose header is incomplete (the opcode
  and tag not yet received are sent as 0).
* **Counters** count as the bytes arrive: ``bytes_in`` and ``garbage_bytes`` per byte, ``frames``
  (every frame answered, errors included) and ``errors`` when the response is made; CLEAR_COUNTERS
  and RESET zero them after their own request was counted and before their response is sent, so
  the next COUNTERS reports ``frames = 1, bytes_in = 8`` and the earlier response in ``bytes_out``.
* **Host side.** Responses are read strictly one frame after another: bytes before a ``0x5A`` sync
  byte are skipped (:attr:`Device.skipped_bytes`), a response with another tag is a stale one and
  discarded (:attr:`Device.stale_responses`), a response with the request's tag but another opcode,
  a version other than 1, an oversize length or a bad CRC is a :class:`ProtocolError`.
  :class:`Device` sends one request at a time (it waits for each response before the next frame;
  :meth:`Device.pipeline` sends a batch at once). A multi-frame op that fails part-way raises and
  returns nothing; for LIF the frames already executed have advanced their membranes.
"""

from __future__ import annotations

import binascii
import struct
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass

import numpy as np
import torch

from golden_model import intops

__all__ = [
    "SYNC_HOST", "SYNC_DEVICE", "VERSION", "HEADER_SIZE", "CRC_SIZE", "FRAME_OVERHEAD", "DEFAULT_MAX_PAYLOAD",
    "OP_INFO", "OP_RESET", "OP_WRITE_WEIGHTS", "OP_WRITE_PARAMS", "OP_WRITE_LIF", "OP_LINEAR", "OP_LIF",
    "OP_ATTENTION", "OP_COUNTERS", "OP_CLEAR_COUNTERS", "OPCODE_NAMES",
    "OK", "ERR_CRC", "ERR_VERSION", "ERR_OPCODE", "ERR_LENGTH", "ERR_RANGE", "ERR_TRUNCATED", "ERR_UNLOADED",
    "ERR_ENGINE", "ERROR_NAMES", "ERROR_MEANINGS", "ENGINE_LINEAR", "ENGINE_ATTENTION", "ENGINE_REQUANT_LIF",
    "CMD_KV", "CMD_V_PAIR", "CMD_Q", "CMD_CONST", "LINEAR_HEADER", "LIF_HEADER", "ATTENTION_HEADER",
    "WRITE_LIF_FORMAT", "WEIGHTS_HEADER", "PARAMS_HEADER", "PARAM_DTYPE", "INFO_FORMAT", "RECORD_HEADER",
    "COUNTER_NAMES", "COUNTERS_FORMAT", "OUT_BITS", "LIF_BITS",
    "ProtocolError", "DeviceError", "TransportTimeout", "Frame", "DeviceInfo",
    "crc16", "encode_frame", "parse_frame", "split_frames", "pack_bits", "unpack_bits", "nbytes_bits",
    "attention_command_bytes", "Device",
]

SYNC_HOST = 0xA5     # host -> device
SYNC_DEVICE = 0x5A   # device -> host
VERSION = 1
HEADER_SIZE = 6      # sync, version, opcode, tag, u16 length
CRC_SIZE = 2
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE
DEFAULT_MAX_PAYLOAD = 4096
MAX_LENGTH = 0xFFFF  # the u16 length field

OP_INFO, OP_RESET, OP_WRITE_WEIGHTS, OP_WRITE_PARAMS, OP_WRITE_LIF = 0x01, 0x02, 0x03, 0x04, 0x05
OP_LINEAR, OP_LIF, OP_ATTENTION, OP_COUNTERS, OP_CLEAR_COUNTERS = 0x06, 0x07, 0x08, 0x09, 0x0A
OPCODE_NAMES = {
    OP_INFO: "INFO", OP_RESET: "RESET", OP_WRITE_WEIGHTS: "WRITE_WEIGHTS", OP_WRITE_PARAMS: "WRITE_PARAMS",
    OP_WRITE_LIF: "WRITE_LIF", OP_LINEAR: "LINEAR", OP_LIF: "LIF", OP_ATTENTION: "ATTENTION",
    OP_COUNTERS: "COUNTERS", OP_CLEAR_COUNTERS: "CLEAR_COUNTERS",
}

OK = 0
ERR_CRC, ERR_VERSION, ERR_OPCODE, ERR_LENGTH, ERR_RANGE, ERR_TRUNCATED, ERR_UNLOADED, ERR_ENGINE = range(1, 9)
ERROR_NAMES = {
    ERR_CRC: "ERR_CRC", ERR_VERSION: "ERR_VERSION", ERR_OPCODE: "ERR_OPCODE", ERR_LENGTH: "ERR_LENGTH",
    ERR_RANGE: "ERR_RANGE", ERR_TRUNCATED: "ERR_TRUNCATED", ERR_UNLOADED: "ERR_UNLOADED", ERR_ENGINE: "ERR_ENGINE",
}
ERROR_MEANINGS = {
    ERR_CRC: "CRC mismatch",
    ERR_VERSION: "unsupported protocol version",
    ERR_OPCODE: "unknown opcode",
    ERR_LENGTH: "payload length wrong for the op or above max_payload",
    ERR_RANGE: "a parameter out of the device's limits",
    ERR_TRUNCATED: "frame not complete",
    ERR_UNLOADED: "weight rows, parameter channels or LIF parameters not written since RESET",
    ERR_ENGINE: "an engine flagged an error",
}
ENGINE_LINEAR, ENGINE_ATTENTION, ENGINE_REQUANT_LIF = 1, 2, 3

CMD_KV, CMD_V_PAIR, CMD_Q, CMD_CONST = 1, 2, 3, 4    # ATTENTION command type bytes

LINEAR_HEADER = struct.Struct("<HHIHBH")     # c_in, c_out, w_base, p_base, out_bits, tokens (13 bytes)
LIF_HEADER = struct.Struct("<HIHB")          # channels, neuron, tokens, first (9 bytes)
ATTENTION_HEADER = struct.Struct("<BBHHB")   # mode, dim, tokens, p_base, out_bits (7 bytes)
WRITE_LIF_FORMAT = struct.Struct("<HBh")     # leak, shift, theta (5 bytes)
WEIGHTS_HEADER = struct.Struct("<I")         # row
PARAMS_HEADER = struct.Struct("<H")          # channel
PARAM_DTYPE = np.dtype([("m", "<i2"), ("s", "u1"), ("b", "<i4")])  # 7 bytes per channel, packed
INFO_FORMAT = struct.Struct("<BBHIHIBHHI")   # 23 bytes, the DeviceInfo fields in order
RECORD_HEADER = struct.Struct("<HB")         # ATTENTION record: skip, const
COUNTER_NAMES = (
    "frames", "errors", "garbage_bytes", "bytes_in", "bytes_out",
    "linear_busy", "linear_starved", "linear_blocked", "linear_spikes", "linear_acc_ops",
    "attention_busy", "attention_starved", "attention_blocked", "attention_spikes", "attention_acc_ops",
    "requant_lif_busy",
)
COUNTERS_FORMAT = struct.Struct(f"<{len(COUNTER_NAMES)}I")
OUT_BITS = (8, 16, 32)
LIF_BITS = 16        # membrane / LIF input width
MAX_SHIFT = intops.MAX_SHIFT
_VALUE_DTYPES = {8: "<i1", 16: "<i2", 32: "<i4"}
_MODES = {"dot": 0, "hamming": 1}


# --------------------------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------------------------

class ProtocolError(Exception):
    """A malformed frame: bad sync, version, length, CRC, or data that does not fit the op."""


class TransportTimeout(TimeoutError):
    """The transport did not deliver the expected bytes in time."""


class DeviceError(Exception):
    """The device answered a request with a non-zero status.

    ``code`` / ``name``: the error (``ERROR_NAMES``); ``opcode`` / ``tag``: the request's;
    ``detail``: the response bytes after the status (``ERR_ENGINE``: engine id, engine error code).
    """

    def __init__(self, code: int, name: str, opcode: int, tag: int, detail: bytes = b""):
        self.code, self.name, self.opcode, self.tag, self.detail = code, name, opcode, tag, bytes(detail)
        op = OPCODE_NAMES.get(opcode, f"opcode 0x{opcode:02X}")
        msg = f"{op} (tag {tag}) failed: {name} ({code}): {ERROR_MEANINGS.get(code, 'unknown error code')}"
        if code == ERR_ENGINE and len(detail) >= 2:
            msg += f" (engine {detail[0]}, engine error {detail[1]})"
        super().__init__(msg)


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------

def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0 (check 0x29B1)."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def encode_frame(opcode: int, tag: int, payload: bytes = b"", *, to_device: bool = True,
                 version: int = VERSION) -> bytes:
    """One frame: ``to_device`` picks the sync byte (``0xA5``, else ``0x5A``). ``version`` only for tests."""
    for name, v in (("opcode", opcode), ("tag", tag), ("version", version)):
        if not 0 <= v <= 0xFF:
            raise ValueError(f"{name} must fit a byte, got {v}")
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"payload of {len(payload)} bytes does not fit the u16 length field")
    body = bytes((version, opcode, tag)) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes((SYNC_HOST if to_device else SYNC_DEVICE,)) + body + crc16(body).to_bytes(2, "little")


@dataclass(frozen=True)
class Frame:
    """A decoded frame. For a response, :attr:`status` and :attr:`data` split the payload."""

    sync: int
    version: int
    opcode: int
    tag: int
    payload: bytes

    @property
    def status(self) -> int:
        if not self.payload:
            raise ProtocolError(f"{self._what()}: empty response payload (no status byte)")
        return self.payload[0]

    @property
    def data(self) -> bytes:
        return self.payload[1:]

    def _what(self) -> str:
        return f"{OPCODE_NAMES.get(self.opcode, f'opcode 0x{self.opcode:02X}')} tag {self.tag}"


def _check_header(head: bytes, sync: int, max_payload: int) -> int:
    if head[0] != sync:
        raise ProtocolError(f"sync byte 0x{head[0]:02X}, expected 0x{sync:02X}")
    if head[1] != VERSION:
        raise ProtocolError(f"frame version {head[1]}, this host speaks version {VERSION}")
    length = int.from_bytes(head[4:6], "little")
    if length > max_payload:
        raise ProtocolError(f"frame length {length} > max_payload {max_payload}")
    return length


def parse_frame(data: bytes, *, from_device: bool = True, max_payload: int = MAX_LENGTH) -> Frame:
    """Decode exactly one frame (a response when ``from_device``); :class:`ProtocolError` if malformed."""
    data = bytes(data)
    if len(data) < FRAME_OVERHEAD:
        raise ProtocolError(f"{len(data)} bytes cannot hold a frame (at least {FRAME_OVERHEAD})")
    length = _check_header(data[:HEADER_SIZE], SYNC_DEVICE if from_device else SYNC_HOST, max_payload)
    if len(data) != FRAME_OVERHEAD + length:
        raise ProtocolError(f"frame of {len(data)} bytes, its length field says {FRAME_OVERHEAD + length}")
    crc = int.from_bytes(data[-CRC_SIZE:], "little")
    if crc16(data[1:-CRC_SIZE]) != crc:
        raise ProtocolError(f"CRC 0x{crc:04X} does not match 0x{crc16(data[1:-CRC_SIZE]):04X}")
    return Frame(data[0], data[1], data[2], data[3], data[HEADER_SIZE:-CRC_SIZE])


def split_frames(data: bytes, *, from_device: bool = True) -> list[Frame]:
    """Decode a concatenation of whole frames (no bytes between them)."""
    frames, pos = [], 0
    while pos < len(data):
        if len(data) - pos < FRAME_OVERHEAD:
            raise ProtocolError(f"{len(data) - pos} trailing bytes at offset {pos}")
        n = FRAME_OVERHEAD + int.from_bytes(data[pos + 4:pos + 6], "little")
        frames.append(parse_frame(data[pos:pos + n], from_device=from_device))
        pos += n
    return frames


# --------------------------------------------------------------------------------------------
# Payload pieces
# --------------------------------------------------------------------------------------------

def nbytes_bits(n: int) -> int:
    """Bytes of ``bits(n)``: ``ceil(n / 8)``."""
    return -(-n // 8)


def pack_bits(x: torch.Tensor | np.ndarray) -> bytes:
    """Spike rows ``(rows, n)`` (0/1) -> ``rows`` x ``bits(n)``: bit ``i % 8`` of byte ``i // 8`` = element i."""
    a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.packbits(a.astype(np.uint8), axis=-1, bitorder="little").tobytes()


def unpack_bits(data: bytes, rows: int, n: int) -> tuple[np.ndarray, bool]:
    """``rows`` x ``bits(n)`` -> ``(rows, n)`` uint8 spikes, and whether all padding bits are 0."""
    raw = np.frombuffer(data, dtype=np.uint8).reshape(rows, nbytes_bits(n))
    full = np.unpackbits(raw, axis=-1, bitorder="little")
    return full[:, :n], not full[:, n:].any()


def _values_bytes(y: torch.Tensor, out_bits: int) -> bytes:
    return y.numpy().astype(_VALUE_DTYPES[out_bits]).tobytes()


def _values(data: bytes, out_bits: int) -> np.ndarray:
    return np.frombuffer(data, dtype=_VALUE_DTYPES[out_bits]).astype(np.int32)


def attention_command_bytes(cmd: dict, dim: int) -> bytes:
    """One engine command dict (``driver.attention.encode_window``'s KV / Q dicts) -> type byte + fields."""
    d = nbytes_bits(dim)
    op, mode = cmd.get("op"), cmd.get("mode", 0)
    a, b = int(cmd.get("a", 0)), int(cmd.get("b", 0))
    if op == 1:
        return bytes((CMD_V_PAIR if mode else CMD_KV,)) + a.to_bytes(d, "little") + b.to_bytes(d, "little")
    if op == 2:
        if mode:
            return bytes((CMD_CONST,))
        return bytes((CMD_Q,)) + int(cmd.get("skip", 0)).to_bytes(2, "little") + a.to_bytes(d, "little")
    raise ValueError(f"not an attention KV / Q command: {cmd!r}")


# --------------------------------------------------------------------------------------------
# INFO
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceInfo:
    """The INFO data: the device's protocol version and limits."""

    version: int
    lanes: int            # P
    in_max: int
    weight_rows: int
    param_channels: int
    membrane_rows: int
    att_dim_max: int
    att_max_tokens: int
    max_payload: int
    clock_hz: int

    def pack(self) -> bytes:
        return INFO_FORMAT.pack(*astuple(self))

    @classmethod
    def unpack(cls, data: bytes) -> DeviceInfo:
        if len(data) != INFO_FORMAT.size:
            raise ProtocolError(f"INFO data of {len(data)} bytes, expected {INFO_FORMAT.size}")
        return cls(*INFO_FORMAT.unpack(data))


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------

def _int_arg(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    v = int(v)
    if not lo <= v <= hi:
        raise ValueError(f"{name} = {v} out of range [{lo}, {hi}]")
    return v


def _int_vector(name: str, v) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {str(v.dtype).removeprefix('torch.')}")
        t = v.to(torch.int64)
    else:
        vals = list(v)
        for x in vals:
            if isinstance(x, bool) or not isinstance(x, int | np.integer):
                raise TypeError(f"{name} must hold ints, found {type(x).__name__}")
        t = torch.tensor([int(x) for x in vals], dtype=torch.int64)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    return t


def _vec_range(name: str, t: torch.Tensor, lo: int, hi: int) -> None:
    if t.numel():
        tmin, tmax = int(t.min()), int(t.max())
        if tmin < lo or tmax > hi:
            raise ValueError(f"{name} out of range [{lo}, {hi}]: found [{tmin}, {tmax}]")


def _out_bits(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(f"out_bits must be an int, got {type(v).__name__}")
    if int(v) not in OUT_BITS:
        raise ValueError(f"out_bits must be 8, 16 or 32, got {v}")
    return int(v)


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------

#: Link traffic classes of :attr:`Device.link_bytes` (whole frames, header and CRC included).
LINK_CLASSES = ("weights", "params", "activations", "results", "control")
_REQUEST_CLASS = {OP_WRITE_WEIGHTS: "weights", OP_WRITE_PARAMS: "params", OP_WRITE_LIF: "params",
                  OP_LINEAR: "activations", OP_LIF: "activations", OP_ATTENTION: "activations"}
_RESPONSE_CLASS = {OP_LINEAR: "results", OP_LIF: "results", OP_ATTENTION: "results"}


class Device:
    """Protocol client over a transport (``driver.transport``): one method per op.

    Every method validates its arguments against the device's INFO (fetched once, lazily, and
    refreshed by :meth:`info`) before sending anything (``TypeError`` / ``ValueError``), splits work
    into frames of at most ``max_payload`` bytes both ways, and raises :class:`DeviceError` on a
    non-zero status, :class:`TransportTimeout` when no complete response arrives within ``timeout``
    seconds, and :class:`ProtocolError` on a malformed response. Results are returned whole or not
    at all.

    :attr:`link_bytes` counts the frames' bytes on the link by class (:data:`LINK_CLASSES`): requests
    carrying weights (WRITE_WEIGHTS), parameters (WRITE_PARAMS, WRITE_LIF) or activations (the spikes
    and values of LINEAR / LIF / ATTENTION), the responses of those three (results), and everything
    else (control: INFO, COUNTERS, RESET, the status-only responses of the writes, discarded bytes).
    """

    def __init__(self, transport, *, timeout: float = 5.0):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.transport = transport
        self.timeout = float(timeout)
        self._tag = 0
        self._info: DeviceInfo | None = None
        self.stale_responses = 0   # responses with another tag, discarded
        self.skipped_bytes = 0     # bytes before a response's sync byte, discarded
        self.link_bytes = dict.fromkeys(LINK_CLASSES, 0)

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) & 0xFF
        return self._tag

    def _max_payload(self) -> int:
        return self._info.max_payload if self._info is not None else MAX_LENGTH

    def send(self, opcode: int, payload: bytes = b"") -> int:
        """Send one request frame; returns its tag."""
        if self._info is not None and len(payload) > self._info.max_payload:
            raise ValueError(f"{OPCODE_NAMES.get(opcode, opcode)} payload of {len(payload)} bytes > max_payload "
                             f"{self._info.max_payload}")
        tag = self._next_tag()
        frame = encode_frame(opcode, tag, payload)
        self.transport.write(frame)
        self.link_bytes[_REQUEST_CLASS.get(opcode, "control")] += len(frame)
        return tag

    def _read(self, n: int, deadline: float, what: str) -> bytes:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TransportTimeout("deadline passed")
            return self.transport.read(n, left)
        except TransportTimeout as e:
            raise TransportTimeout(f"{what}: no complete response within {self.timeout:g} s ({e})") from e

    def _read_frame(self, deadline: float, what: str) -> Frame:
        while (b := self._read(1, deadline, what)[0]) != SYNC_DEVICE:
            self.skipped_bytes += 1
            self.link_bytes["control"] += 1
        head = bytes((b,)) + self._read(HEADER_SIZE - 1, deadline, what)
        try:
            length = _check_header(head, SYNC_DEVICE, self._max_payload())
        except ProtocolError as e:
            raise ProtocolError(f"{what}: {e}") from None
        rest = self._read(length + CRC_SIZE, deadline, what)
        try:
            return parse_frame(head + rest, max_payload=self._max_payload())
        except ProtocolError as e:
            raise ProtocolError(f"{what}: {e}") from None

    def receive(self, opcode: int, tag: int) -> Frame:
        """The response to request ``(opcode, tag)``: stale responses (other tags) are discarded and counted.

        Returns the frame whatever its status (see :meth:`_check_status`)."""
        what = f"{OPCODE_NAMES.get(opcode, f'opcode 0x{opcode:02X}')} (tag {tag})"
        deadline = time.monotonic() + self.timeout
        while True:
            f = self._read_frame(deadline, what)
            self.link_bytes[_RESPONSE_CLASS.get(f.opcode, "control") if f.tag == tag else "control"] += (
                HEADER_SIZE + len(f.payload) + CRC_SIZE)
            if f.tag != tag:
                self.stale_responses += 1
                continue
            if f.opcode != opcode:
                raise ProtocolError(f"{what}: the response with this tag has opcode 0x{f.opcode:02X}")
            if not f.payload:
                raise ProtocolError(f"{what}: empty response payload (no status byte)")
            return f

    @staticmethod
    def _check_status(f: Frame) -> bytes:
        if f.status != OK:
            raise DeviceError(f.status, ERROR_NAMES.get(f.status, f"ERR_{f.status}"), f.opcode, f.tag, f.data)
        return f.data

    def request(self, opcode: int, payload: bytes = b"", *, data_len: int | None = None) -> bytes:
        """Send one request and return its response data (after the status byte)."""
        tag = self.send(opcode, payload)
        data = self._check_status(self.receive(opcode, tag))
        if data_len is not None and len(data) != data_len:
            raise ProtocolError(f"{OPCODE_NAMES.get(opcode, opcode)} (tag {tag}): {len(data)} data bytes, "
                                f"expected {data_len}")
        return data

    def pipeline(self, requests: Sequence[tuple[int, bytes]]) -> list[bytes]:
        """Send several requests back to back, then collect their responses (matched by tag).

        Returns each response's data. All responses are read before the first non-zero status is
        raised as :class:`DeviceError`. At most 255 requests (distinct tags).

        A transport with a ``max_in_flight_bytes`` limit (a UART without flow control in front of a
        FIFO of that many bytes, ``rtl.serial_top``) never has more request bytes sent and unanswered
        than that: a request waits for earlier responses when it would exceed the limit (a single
        request is always sent once nothing is in flight)."""
        if len(requests) > 255:
            raise ValueError(f"at most 255 pipelined requests (distinct tags), got {len(requests)}")
        limit = getattr(self.transport, "max_in_flight_bytes", None)
        frames: list[Frame] = []
        pending: list[tuple[int, int, int]] = []        # (opcode, tag, request bytes) sent, not answered
        for op, payload in requests:
            size = len(payload) + FRAME_OVERHEAD
            while pending and limit is not None and sum(p[2] for p in pending) + size > limit:
                rop, rtag, _ = pending.pop(0)
                frames.append(self.receive(rop, rtag))
            pending.append((op, self.send(op, payload), size))
        frames += [self.receive(op, tag) for op, tag, _ in pending]
        return [self._check_status(f) for f in frames]

    def resync(self) -> DeviceInfo:
        """Recover from a lost sync (``docs/protocol.md`` section 2): ``max_payload + 8`` zero bytes
        (``DEFAULT_MAX_PAYLOAD + 8`` while INFO is unknown), then INFO; the responses to the flushed
        partial frame are discarded."""
        max_payload = self._info.max_payload if self._info is not None else DEFAULT_MAX_PAYLOAD
        self.transport.write(bytes(max_payload + FRAME_OVERHEAD))
        tag = self.send(OP_INFO)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                f = self._read_frame(deadline, f"INFO (tag {tag}) after resync")
            except ProtocolError:
                continue
            if f.tag == tag and f.opcode == OP_INFO:
                break
            self.stale_responses += 1
        return self._set_info(self._check_status(f))

    # -- ops ----------------------------------------------------------------------------------

    def _set_info(self, data: bytes) -> DeviceInfo:
        info = DeviceInfo.unpack(data)
        if info.version != VERSION:
            raise ProtocolError(f"the device speaks protocol version {info.version}, this host {VERSION}")
        self._info = info
        return info

    def info(self) -> DeviceInfo:
        """INFO: the device's version and limits (cached for the argument checks)."""
        return self._set_info(self.request(OP_INFO, data_len=INFO_FORMAT.size))

    @property
    def limits(self) -> DeviceInfo:
        """The cached INFO (fetched on first use)."""
        return self._info if self._info is not None else self.info()

    def reset(self) -> None:
        """RESET: forget written weights / parameters / LIF parameters, zero membranes and counters."""
        self.request(OP_RESET, data_len=0)

    def write_weights(self, row: int, rows: torch.Tensor) -> None:
        """WRITE_WEIGHTS: int8 ``rows (k, P)`` into weight rows ``row .. row + k - 1`` (several frames if needed)."""
        info = self.limits
        if not isinstance(rows, torch.Tensor):
            raise TypeError(f"rows must be a torch.Tensor, got {type(rows).__name__}")
        if rows.dtype != torch.int8:
            raise TypeError(f"rows must have dtype int8, got {_dtype_name(rows)}")
        if rows.dim() != 2 or rows.shape[1] != info.lanes:
            raise ValueError(f"rows must be (k, P = {info.lanes}), got shape {tuple(rows.shape)}")
        k = rows.shape[0]
        row = _int_arg("row", row, 0, info.weight_rows)
        if row + k > info.weight_rows:
            raise ValueError(f"weight rows {row} .. {row + k - 1} beyond the device's {info.weight_rows} rows")
        per = (info.max_payload - WEIGHTS_HEADER.size) // info.lanes
        if per < 1:
            raise ValueError(f"max_payload {info.max_payload} cannot hold one weight row of {info.lanes} bytes")
        data = rows.contiguous().numpy()
        for lo in range(0, k, per):
            chunk = data[lo:lo + per]
            self.request(OP_WRITE_WEIGHTS, WEIGHTS_HEADER.pack(row + lo) + chunk.tobytes(), data_len=0)

    def write_params(self, channel: int, m, s, b) -> None:
        """WRITE_PARAMS: requant ``M`` (int16), ``S`` (1..47), ``B`` (int32) of channels ``channel ..``."""
        info = self.limits
        mt, st, bt = _int_vector("M", m), _int_vector("S", s), _int_vector("B", b)
        if not mt.shape == st.shape == bt.shape:
            raise ValueError(f"M, S, B must have equal lengths, got {mt.numel()}, {st.numel()}, {bt.numel()}")
        _vec_range("M", mt, *intops.int_range(intops.MULT_BITS))
        _vec_range("S", st, 1, MAX_SHIFT)
        _vec_range("B", bt, *intops.int_range(32))
        n = mt.numel()
        channel = _int_arg("channel", channel, 0, info.param_channels)
        if channel + n > info.param_channels:
            raise ValueError(f"parameter channels {channel} .. {channel + n - 1} beyond the device's "
                             f"{info.param_channels}")
        rec = np.empty(n, dtype=PARAM_DTYPE)
        rec["m"], rec["s"], rec["b"] = mt.numpy(), st.numpy(), bt.numpy()
        per = (info.max_payload - PARAMS_HEADER.size) // PARAM_DTYPE.itemsize
        for lo in range(0, n, per):
            self.request(OP_WRITE_PARAMS, PARAMS_HEADER.pack(channel + lo) + rec[lo:lo + per].tobytes(), data_len=0)

    def write_lif(self, leak: int, shift: int, theta: int) -> None:
        """WRITE_LIF: the LIF parameters (``intops.check_lif_params`` with 16-bit membranes)."""
        leak = _int_arg("leak", leak, 1, 0xFFFF)
        shift = _int_arg("shift", shift, 1, 0xFF)
        theta = _int_arg("theta", theta, *intops.int_range(LIF_BITS))
        intops.check_lif_params(leak, shift, theta, LIF_BITS)
        self.request(OP_WRITE_LIF, WRITE_LIF_FORMAT.pack(leak, shift, theta), data_len=0)

    def linear(self, x: torch.Tensor, *, c_out: int, w_base: int, p_base: int, out_bits: int) -> torch.Tensor:
        """LINEAR: spikes ``x`` int8 ``(tokens, c_in)`` -> requantised int32 ``(tokens, c_out)``.

        Weight rows ``w_base + i * G + g`` (``G = ceil(c_out / P)``), parameter channels
        ``p_base + o``. The tokens are split over as many frames as the request and the response
        need to fit ``max_payload``."""
        info = self.limits
        intops.check_spikes("x", x)
        if x.dim() != 2:
            raise ValueError(f"x must be (tokens, c_in), got shape {tuple(x.shape)}")
        tokens, c_in = x.shape
        if not 1 <= c_in <= info.in_max:
            raise ValueError(f"c_in = {c_in} out of range [1, in_max = {info.in_max}]")
        c_out = _int_arg("c_out", c_out, 1, info.param_channels)
        out_bits = _out_bits(out_bits)
        g = -(-c_out // info.lanes)
        w_base = _int_arg("w_base", w_base, 0, info.weight_rows)
        if w_base + c_in * g > info.weight_rows:
            raise ValueError(f"the layer needs weight rows {w_base} .. {w_base + c_in * g - 1} "
                             f"(c_in {c_in} x G {g}), the device has {info.weight_rows}")
        p_base = _int_arg("p_base", p_base, 0, info.param_channels)
        if p_base + c_out > info.param_channels:
            raise ValueError(f"parameter channels {p_base} .. {p_base + c_out - 1} beyond the device's "
                             f"{info.param_channels}")
        in_tok, out_tok = nbytes_bits(c_in), c_out * out_bits // 8
        per = min((info.max_payload - LINEAR_HEADER.size) // in_tok, (info.max_payload - 1) // out_tok, 0xFFFF)
        if per < 1:
            raise ValueError(f"one token ({in_tok} request bytes, {out_tok} response bytes) does not fit "
                             f"max_payload {info.max_payload}; tile c_out")
        packed = pack_bits(x)
        out = torch.empty(tokens, c_out, dtype=torch.int32)
        for lo in range(0, tokens, per):
            n = min(per, tokens - lo)
            head = LINEAR_HEADER.pack(c_in, c_out, w_base, p_base, out_bits, n)
            data = self.request(OP_LINEAR, head + packed[lo * in_tok:(lo + n) * in_tok], data_len=n * out_tok)
            out[lo:lo + n] = torch.from_numpy(_values(data, out_bits).reshape(n, c_out))
        return out

    def lif(self, y: torch.Tensor, *, neuron: int, first: bool) -> torch.Tensor:
        """LIF: one time step of ``y`` int32 ``(tokens, channels)`` (16-bit values) -> int8 spikes.

        Token ``n`` uses membranes ``neuron + n``; ``first`` starts them from 0. Split over frames
        (the neuron offset advances with the tokens)."""
        info = self.limits
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.dtype not in (torch.int32, torch.int16):
            raise TypeError(f"y must have dtype int32 (or int16), got {_dtype_name(y)}")
        if y.dim() != 2:
            raise ValueError(f"y must be (tokens, channels), got shape {tuple(y.shape)}")
        intops.check_range("y", y, LIF_BITS)
        tokens, channels = y.shape
        if not 1 <= channels <= 0xFFFF:
            raise ValueError(f"channels = {channels} out of range [1, 65535]")
        if not isinstance(first, bool | int | np.integer):
            raise TypeError(f"first must be a bool, got {type(first).__name__}")
        if int(first) not in (0, 1):
            raise ValueError(f"first must be a bool (0 or 1), got {first!r}")
        gc = -(-channels // info.lanes)
        neuron = _int_arg("neuron", neuron, 0, 0xFFFF_FFFF)
        if (neuron + tokens) * gc > info.membrane_rows:
            raise ValueError(f"neurons {neuron} .. {neuron + tokens - 1} of {channels} channels need "
                             f"{(neuron + tokens) * gc} membrane rows, the device has {info.membrane_rows}")
        in_tok, out_tok = 2 * channels, nbytes_bits(channels)
        per = min((info.max_payload - LIF_HEADER.size) // in_tok, (info.max_payload - 1) // out_tok, 0xFFFF)
        if per < 1:
            raise ValueError(f"one token of {channels} channels ({in_tok} bytes) does not fit max_payload "
                             f"{info.max_payload}")
        values = y.numpy().astype("<i2").tobytes()
        out = torch.empty(tokens, channels, dtype=torch.int8)
        for lo in range(0, tokens, per):
            n = min(per, tokens - lo)
            head = LIF_HEADER.pack(channels, neuron + lo, n, int(first))
            data = self.request(OP_LIF, head + values[lo * in_tok:(lo + n) * in_tok], data_len=n * out_tok)
            bits, _ = unpack_bits(data, n, channels)
            out[lo:lo + n] = torch.from_numpy(bits.astype(np.int8))
        return out

    def attention(self, commands: list[dict], *, mode: str, dim: int, tokens: int, p_base: int,
                  out_bits: int) -> list[dict]:
        """ATTENTION: one window in one frame -> one record ``{"skip", "const", "data"}`` per Q command.

        ``commands``: the KV / Q command dicts of ``driver.attention.encode_window`` (a leading CONFIG
        dict is accepted if it agrees with ``mode``, ``dim``, ``tokens``). ``data`` holds ``dim``
        values ``requant(o_j)`` with parameter channel ``p_base + j``. ``driver.attention.decode_readout``
        expands the records (as beats of one group of ``dim`` lanes) into the dense read-out."""
        info = self.limits
        if mode not in _MODES:
            raise ValueError(f"mode must be 'dot' or 'hamming', got {mode!r}")
        if not info.att_dim_max:
            raise ValueError("the device has no attention engine (INFO att_dim_max = 0); "
                             "driver.program runs attention layers on the host for it")
        dim = _int_arg("dim", dim, 1, info.att_dim_max)
        tokens = _int_arg("tokens", tokens, 0, info.att_max_tokens)
        p_base = _int_arg("p_base", p_base, 0, info.param_channels)
        if p_base + dim > info.param_channels:
            raise ValueError(f"parameter channels {p_base} .. {p_base + dim - 1} beyond the device's "
                             f"{info.param_channels}")
        out_bits = _out_bits(out_bits)
        cmds = list(commands)
        if cmds and isinstance(cmds[0], dict) and cmds[0].get("op") == 0:
            cfg = cmds.pop(0)
            want = {"mode": _MODES[mode], "dim": dim, "tokens": tokens}
            got = {k: cfg.get(k, 0) for k in want}
            if got != want:
                raise ValueError(f"the CONFIG command {got} disagrees with the arguments {want}")
        body, kv, n_q = [], 0, 0
        for i, c in enumerate(cmds):
            if not isinstance(c, dict):
                raise TypeError(f"command {i} must be a dict, got {type(c).__name__}")
            op, cmode = c.get("op"), c.get("mode", 0)
            if op not in (1, 2) or cmode not in (0, 1):
                raise ValueError(f"command {i}: not a KV / Q command (op 1 / 2, mode 0 / 1): {c!r}")
            for f in ("a", "b") if op == 1 else ("a",) if not cmode else ():
                v = _int_arg(f"command {i} field {f!r}", c.get(f, 0), 0, 1 << 256)
                if v >> dim:
                    raise ValueError(f"command {i}: field {f!r} = {v:#x} has bits at or above dim = {dim}")
            if op == 1:
                if n_q:
                    raise ValueError(f"command {i}: KV command after a Q command")
                kv += 2 if cmode else 1
                if kv > tokens:
                    raise ValueError(f"command {i}: more KV tokens than tokens = {tokens}")
            else:
                if kv != tokens:
                    raise ValueError(f"command {i}: Q command after {kv} of tokens = {tokens} KV tokens")
                if not cmode:
                    _int_arg(f"command {i} skip", c.get("skip", 0), 0, 0xFFFF)
                n_q += 1
            body.append(attention_command_bytes(c, dim))
        if kv != tokens:
            raise ValueError(f"the commands carry {kv} KV tokens, tokens = {tokens}")
        payload = ATTENTION_HEADER.pack(_MODES[mode], dim, tokens, p_base, out_bits) + b"".join(body)
        rec_size = RECORD_HEADER.size + dim * out_bits // 8
        if len(payload) > info.max_payload or 1 + n_q * rec_size > info.max_payload:
            raise ValueError(f"the window does not fit one frame: request {len(payload)} bytes, response "
                             f"{1 + n_q * rec_size} bytes ({n_q} records), max_payload {info.max_payload}")
        data = self.request(OP_ATTENTION, payload, data_len=n_q * rec_size)
        records = []
        for r in range(n_q):
            chunk = data[r * rec_size:(r + 1) * rec_size]
            skip, const = RECORD_HEADER.unpack_from(chunk)
            records.append({"skip": skip, "const": const,
                            "data": _values(chunk[RECORD_HEADER.size:], out_bits).tolist()})
        return records

    def counters(self) -> dict[str, int]:
        """COUNTERS: the 16 u32 counters by name (``COUNTER_NAMES``)."""
        data = self.request(OP_COUNTERS, data_len=COUNTERS_FORMAT.size)
        return dict(zip(COUNTER_NAMES, COUNTERS_FORMAT.unpack(data), strict=True))

    def clear_counters(self) -> None:
        """CLEAR_COUNTERS."""
        self.request(OP_CLEAR_COUNTERS, data_len=0)
