import nibabel as nib
import numpy as np

from rog.data.dataset import load_dataset
from rog.data.io import read_image, read_label
from rog.data.synthetic import make_task


def _arrays(root):
    ds = load_dataset(root)
    return [(read_image(c.images)[0], read_label(c.label)[0]) for c in ds.training]


def test_deterministic_by_seed(tmp_path):
    a = _arrays(make_task(tmp_path / "a", cases=2, test_cases=0, seed=7, size=(20, 24)))
    b = _arrays(make_task(tmp_path / "b", cases=2, test_cases=0, seed=7, size=(20, 24)))
    c = _arrays(make_task(tmp_path / "c", cases=2, test_cases=0, seed=8, size=(20, 24)))
    for (ia, la), (ib, lb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a[0][0], c[0][0]) or a[0][0].shape != c[0][0].shape


def test_ct_task_is_ct_like(ct_task):
    ds = load_dataset(ct_task)
    assert ds.labels == {0: "background", 1: "organ", 2: "lesion"} and ds.modalities == ["CT"]
    shapes = set()
    for case in ds.training:
        image, geom = read_image(case.images)
        label, lgeom = read_label(case.label)
        shapes.add(geom.shape)
        assert geom.same_grid(lgeom)
        assert geom.orientation != "RAS" and np.abs(np.array(geom.affine)[:3, 3]).sum() > 0
        assert geom.spacing[2] / geom.spacing[0] > 2.5  # anisotropic
        assert image.min() < -900 and image.max() > 300  # air and bone in HU
        organ, lesion = image[0][label == 1], image[0][label == 2]
        assert lesion.size > 0 and organ.size > lesion.size
        assert organ.mean() - lesion.mean() > 25  # hypodense lesion inside the organ
        # the lesion lies inside the organ: every lesion voxel has organ or lesion neighbours only
        assert set(np.unique(label)) == {0, 1, 2}
        assert image.std() > 0 and (image[0][label == 1].std() > 5)  # noise present
    assert len(shapes) > 1  # shapes vary between cases


def test_mri_task_has_two_channels_with_opposite_contrast(mri_task):
    ds = load_dataset(mri_task)
    assert ds.modalities == ["T1", "T2"]
    image, _ = read_image(ds.training[0].images)
    label, _ = read_label(ds.training[0].label)
    assert image.shape[0] == 2
    head = image[0] > 100
    inside = label == 1
    assert image[0][inside].mean() > image[0][head & ~inside].mean() * 1.2
    assert image[1][inside].mean() < image[1][head & ~inside].mean() * 0.8
    assert nib.load(str(ds.training[0].images[0])).ndim == 4  # channel-last 4D file, as MSD
