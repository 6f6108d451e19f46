"""bench_nats's logger CPU figure covers the drain only, not the start-up before it.

Negative control: with `cpu0` fixed at 0 in `drain_cpu_s` (the start-up counted, as the bench
did before) test_startup_left_out fails (2.5 s instead of 1.5 s)."""

from __future__ import annotations

from bench.bench_nats import drain_cpu_s


def test_startup_left_out() -> None:
    # (stored so far, loggers' CPU so far): 1.0 s of imports and connects before the first
    # store, 1.5 s while draining, then idle polls after everything is in.
    samples = [(0.0, 0.6), (0.0, 1.0), (4000.0, 1.6), (20000.0, 2.5), (20000.0, 2.6)]
    assert drain_cpu_s(samples, 20000) == 1.5


def test_unfinished_drain_counts_to_the_last_sample() -> None:
    assert drain_cpu_s([(0.0, 1.0), (500.0, 1.25)], 20000) == 0.25


def test_no_samples() -> None:
    assert drain_cpu_s([], 10) == 0.0
