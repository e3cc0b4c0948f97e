"""Benchmarks for molmo2_ros (run as modules, e.g. `python -m bench.bench_engine`)."""
