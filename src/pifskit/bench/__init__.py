"""Benchmarks that score samplers and schedules against exact-score data models."""

from .sampling import (
    BenchData,
    BENCH_SCHEDULES,
    parse_bench_data,
    bench_chain,
    run_sampling_benchmark,
    write_report,
)

__all__ = ["BenchData", "BENCH_SCHEDULES", "parse_bench_data", "bench_chain", "run_sampling_benchmark",
           "write_report"]
