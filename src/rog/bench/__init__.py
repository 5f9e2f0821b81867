"""The robustness benchmark over the attack, corruption and artefact libraries: the runners
(cases x attacks x eps, cases x corruptions x severities, cases x worst-case artefacts x
severities, cases x smoothing noise levels, cases x channels replaced; resumable, sharded), their records and validity
checks, and the in-memory `Ensemble`."""
from rog.bench.artefact import ArtefactConfig, ArtefactSweep
from rog.bench.certify import CertifyConfig, CertifySweep
from rog.bench.cases import BenchCase, default_cases, load_bench_cases
from rog.bench.corruption import CorruptionConfig, CorruptionSweep
from rog.bench.ensemble import Ensemble
from rog.bench.modality import ModalityConfig, ModalitySweep
from rog.bench.runner import Benchmark, BenchmarkConfig

__all__ = ["ArtefactConfig", "ArtefactSweep", "Benchmark", "BenchmarkConfig", "BenchCase", "CertifyConfig",
           "CertifySweep", "CorruptionConfig", "CorruptionSweep", "Ensemble", "ModalityConfig", "ModalitySweep", "default_cases",
           "load_bench_cases"]
