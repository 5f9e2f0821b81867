"""Models trained by other tools, benchmarked as they are deployed: `nnunet` (nnU-Net v2
results folders). Each yields an `ExternalModel`: the patch network, the window settings of
its own inference, and cases preprocessed by the tool's own code up to (not including) its
intensity normalisation, which runs inside the differentiable model (`BenchCase.prepare`),
so attacks perturb the image in the scanner's intensities."""
from rog.external.model import ExternalError, ExternalModel

__all__ = ["ExternalError", "ExternalModel"]
