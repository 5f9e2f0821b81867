import numpy as np
import pytest
import torch

from rog.data.synthetic import make_task


@pytest.fixture(scope="session")
def ct_task(tmp_path_factory):
    """A small synthetic CT-like task (MSD v1 layout): 4 training + 1 test case."""
    return make_task(tmp_path_factory.mktemp("data") / "SynthCT", kind="ct", cases=4, test_cases=1,
                     seed=3, size=(28, 40))


@pytest.fixture(scope="session")
def mri_task(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("data") / "SynthMRI", kind="mri", cases=3, test_cases=0,
                     seed=5, size=(24, 32))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
