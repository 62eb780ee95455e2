"""Developer sessions. They run in the current environment (set up with ``pip install -e .``).

* ``nox``               -> ``tests``: the fast test suite (the README's test command)
* ``nox -s bench``      -> golden-model speed on full-size clips, writes ``runs/bench/*.json``
* ``nox -s lint``       -> ruff
"""

import sys

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"


@nox.session
def tests(session: nox.Session) -> None:
    """The fast suite: golden model, quantizer, CLI."""
    session.run(sys.executable, "-m", "pytest", "-q", *session.posargs,
                env={"PYTHONWARNINGS": "error::DeprecationWarning"})


@nox.session
def bench(session: nox.Session) -> None:
    """Float vs integer golden-model inference time per clip (see BENCHMARKS.md)."""
    session.run(sys.executable, "-m", "benchmarks.golden_speed", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.run(sys.executable, "-m", "ruff", "check", ".")
