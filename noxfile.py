"""Developer sessions. They run in the current environment (set up with ``pip install -e .``).

* ``nox``               -> ``tests``: the fast test suite (the README's test command)
* ``nox -s rtl``        -> the RTL tests only (Amaranth pysim and cocotb on Verilator)
* ``nox -s bench``      -> golden-model speed, attention-engine cycles, the tiny models on the RTL accelerator
                           vs CPU and GPU (``spikevid bench``); writes ``runs/bench/*.json``
* ``nox -s bitstreams -- <config>`` -> board bitstreams with YoWASP Yosys / nextpnr, reports in
  ``bitstreams/reports/`` (``bitstreams/README.md``; default ``ulx3s-85f``)
* ``nox -s lint``       -> ruff
"""

import sys

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"


# SpikingJelly is the float-neuron oracle of tests/test_neurons.py. Its own dependencies would pull
# another torch with CUDA wheels, so it is installed without them (it needs only torch + loguru).
ORACLES = ["spikingjelly==2.0.0"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: golden model, quantizer, CLI, RTL (pysim and cocotb on Verilator)."""
    session.run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", *ORACLES)
    session.run(sys.executable, "-m", "pytest", "-q", *session.posargs,
                env={"PYTHONWARNINGS": "error::DeprecationWarning"})


@nox.session
def rtl(session: nox.Session) -> None:
    """RTL tests: Amaranth pysim, and cocotb testbenches on Verilator (builds cached in sim_build/)."""
    session.run(sys.executable, "-m", "pytest", "-q", "tests/test_rtl_cocotb.py", "tests/test_rtl_pysim.py",
                "tests/test_spike_accum.py", "tests/test_spike_accum_cocotb.py", "tests/test_accelerator.py",
                "tests/test_accelerator_cocotb.py", "tests/test_uart.py", "tests/test_byte_model.py",
                "tests/test_serial_top.py", "tests/test_serial_top_cocotb.py", "tests/test_bitstreams.py",
                *session.posargs,
                env={"PYTHONWARNINGS": "error::DeprecationWarning"})


@nox.session
def bench(session: nox.Session) -> None:
    """Golden-model inference time per clip; attention-engine cycles and utilisation; whole tiny models
    through the accelerator protocol; accelerator vs CPU vs GPU per clip (see BENCHMARKS.md)."""
    session.run(sys.executable, "-m", "benchmarks.golden_speed", *session.posargs)
    session.run(sys.executable, "-m", "benchmarks.attention_engine")
    session.run(sys.executable, "-m", "benchmarks.accelerator_run", "--transport", "emulator")
    session.run(sys.executable, "-m", "benchmarks.accelerator_run", "--transport", "verilator")
    for model in ("svformer-tiny", "spikevideoformer-tiny"):  # accelerator (RTL) vs CPU vs GPU, issue 6
        session.run(sys.executable, "-m", "benchmarks.compare", "--model", model, "--transport", "verilator")


@nox.session
def bitstreams(session: nox.Session) -> None:
    """Board bitstreams (``nox -s bitstreams -- ulx3s-85f icebreaker``, or ``all``): Yosys + nextpnr from the
    YoWASP wheels, bitstream in ``build/<config>/``, report in ``bitstreams/reports/<config>.{json,md}``.
    Fails when timing fails."""
    session.run(sys.executable, "-m", "bitstreams.build", *(session.posargs or ["ulx3s-85f"]))


@nox.session
def lint(session: nox.Session) -> None:
    session.run(sys.executable, "-m", "ruff", "check", ".")
