"""Models trained by other tools, benchmarked as they are deployed: `nnunet` (nnU-Net v2
results folders; each case is the scan as stored and the model is nnU-Net's whole inference
of it, `nnunet_scan`) and `bundle` (MONAI bundles; cases on the bundle's grid, its intensity
transforms inside the model). Each yields an `ExternalModel`: the patch network, the window
settings of its own inference, and cases whose `BenchCase.around` wraps the whole-volume
model in the tool's processing, so attacks perturb the image in the scanner's intensities."""
from rog.external.model import ExternalError, ExternalModel

__all__ = ["ExternalError", "ExternalModel"]
