"""Benchmarks: `python -m bench` (or `make bench`) writes JSON results to bench/results/."""
