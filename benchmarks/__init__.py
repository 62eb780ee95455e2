"""Benchmarks run by ``nox -s bench``; results and commands in BENCHMARKS.md."""
