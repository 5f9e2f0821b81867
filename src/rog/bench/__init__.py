"""The robustness benchmark over the attack library: the runner (cases x attacks x eps,
resumable, sharded), its records and validity checks, and the in-memory `Ensemble`."""
from rog.bench.cases import BenchCase, default_cases, load_bench_cases
from rog.bench.ensemble import Ensemble
from rog.bench.runner import Benchmark, BenchmarkConfig

__all__ = ["Benchmark", "BenchmarkConfig", "BenchCase", "Ensemble", "default_cases", "load_bench_cases"]
