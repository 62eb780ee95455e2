"""Byte transports for :class:`driver.protocol.Device`: the in-process emulator and a serial port.

A transport moves raw bytes; framing, tags and CRCs are :mod:`driver.protocol`'s business.

* :class:`Transport`: the interface: ``write(data)``, ``read(n, timeout)`` (exactly ``n`` bytes or
  :class:`~driver.protocol.TransportTimeout`; bytes received before a timeout stay buffered for the
  next read), ``reset_input()``, ``close()``; a context manager.
* :class:`EmulatorTransport`: written bytes go straight into a :class:`driver.emulator.Emulator`,
  its responses are read back. The emulator answers synchronously, so a read that the buffered
  responses cannot satisfy times out at once (nothing more can arrive without a write).
* :class:`SerialTransport`: a UART through pyserial (``serial.Serial``), e.g. a board's bridge.
"""

from __future__ import annotations

import time

from driver.protocol import TransportTimeout

__all__ = ["Transport", "EmulatorTransport", "SerialTransport", "VerilatorTransport", "TransportTimeout"]


class Transport:
    """Byte pipe to a device. Subclasses implement :meth:`write` and :meth:`read`.

    ``max_in_flight_bytes``: the most request bytes that may be sent and not yet answered (``None``:
    no limit). A link without flow control sets it to the device's receive buffer
    (:meth:`driver.protocol.Device.pipeline` keeps to it)."""

    closed = False
    max_in_flight_bytes: int | None = None

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        """Exactly ``n`` bytes within ``timeout`` seconds, else :class:`TransportTimeout`."""
        raise NotImplementedError

    def reset_input(self) -> None:
        """Discard every byte received and not yet read."""

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on a closed {type(self).__name__}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EmulatorTransport(Transport):
    """In-process transport to an :class:`driver.emulator.Emulator` (``feed`` / ``read_output``).

    :meth:`close` closes the emulator's input stream (a partial frame is answered ``ERR_TRUNCATED``)."""

    def __init__(self, emulator):
        self.emulator = emulator
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._check_open()
        self.emulator.feed(bytes(data))
        self._buf += self.emulator.read_output()

    def read(self, n: int, timeout: float) -> bytes:
        self._check_open()
        self._buf += self.emulator.read_output()
        if len(self._buf) < n:
            raise TransportTimeout(f"the emulator has sent {len(self._buf)} of the {n} bytes expected")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def reset_input(self) -> None:
        self.emulator.read_output()
        self._buf.clear()

    def close(self) -> None:
        if not self.closed:
            self.emulator.close_stream()
        super().close()


class SerialTransport(Transport):
    """A serial port through pyserial: ``SerialTransport("/dev/ttyUSB1", baudrate=115200)``.

    ``write_timeout`` (seconds) bounds a blocked write (:class:`TransportTimeout`); further keyword
    arguments go to ``serial.Serial`` (``bytesize``, ``parity``, ``rtscts`` ...). The port opens 8N1,
    no flow control, unless told otherwise.

    ``max_in_flight_bytes``: a board top (``rtl.serial_top.SerialAccelerator``) has no flow control, only
    an RX FIFO; give its depth (``bitstreams/reports/<config>.json``, ``config.rx_fifo_depth``) to let
    :meth:`~driver.protocol.Device.pipeline` overlap requests. The default, 1, sends one request at a
    time (always safe: every request waits for the previous response)."""

    def __init__(self, port: str, baudrate: int = 115200, *, write_timeout: float = 5.0,
                 max_in_flight_bytes: int | None = 1, **kw):
        import serial

        self._serial_mod = serial
        self.port = port
        self.max_in_flight_bytes = max_in_flight_bytes
        self.serial = serial.Serial(port, baudrate=baudrate, timeout=0, write_timeout=write_timeout, **kw)
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._check_open()
        try:
            self.serial.write(bytes(data))
            self.serial.flush()
        except self._serial_mod.SerialTimeoutException as e:
            raise TransportTimeout(f"{self.port}: write of {len(data)} bytes timed out") from e

    def read(self, n: int, timeout: float) -> bytes:
        self._check_open()
        deadline = time.monotonic() + max(0.0, timeout)
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportTimeout(f"{self.port}: {len(self._buf)} of {n} bytes within {timeout:g} s")
            self.serial.timeout = left
            self._buf += self.serial.read(n - len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def reset_input(self) -> None:
        self._check_open()
        self._buf.clear()
        self.serial.reset_input_buffer()

    def close(self) -> None:
        if not self.closed:
            self.serial.close()
        super().close()


class VerilatorTransport(Transport):
    """A Verilator model of a byte-stream component (``sim.byte_model.build_byte_model``) run as a
    subprocess: request bytes go to its stdin, response bytes come from its stdout. No Python runs
    per simulated cycle. After :meth:`close`, :attr:`cycles` holds the clock cycles it simulated.
    With ``record=True``, :attr:`sent` and :attr:`received` keep every byte written and read (to
    replay the request stream into a model with no host in the loop, ``benchmarks.accelerator_run``)."""

    def __init__(self, binary, *, args: tuple[str, ...] = (), record: bool = False):
        import subprocess

        self.binary = str(binary)
        self.proc = subprocess.Popen([self.binary, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self._buf = bytearray()
        self.cycles: int | None = None
        self.stderr = ""
        self.record = record
        self.sent, self.received = bytearray(), bytearray()

    def write(self, data: bytes) -> None:
        self._check_open()
        if self.record:
            self.sent += data
        try:
            self.proc.stdin.write(bytes(data))
        except BrokenPipeError as e:
            raise TransportTimeout(f"the Verilator model {self.binary} exited "
                                   f"(code {self.proc.poll()}): {self._stderr_tail()}") from e

    def read(self, n: int, timeout: float) -> bytes:
        import os
        import select

        self._check_open()
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportTimeout(f"{len(self._buf)} of {n} bytes from the Verilator model within {timeout} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise TransportTimeout(f"the Verilator model exited after {len(self._buf)} of {n} bytes "
                                           f"(code {self.proc.poll()}): {self._stderr_tail()}")
                self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        if self.record:
            self.received += out
        return out

    def reset_input(self) -> None:
        self._buf.clear()

    def _stderr_tail(self) -> str:
        try:
            return self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        import subprocess

        try:
            _, err = self.proc.communicate(timeout=60)  # closes stdin: the model drains and exits
        except (subprocess.TimeoutExpired, OSError, ValueError):
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else b""
            self.proc.wait()
        self.stderr = err.decode(errors="replace")
        for line in self.stderr.splitlines():
            if line.startswith("cycles "):
                self.cycles = int(line.split()[1])
