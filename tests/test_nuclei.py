"""`rog nuclei`: the real-anatomy task built from installed brain templates and atlases."""
import json

import nibabel as nib
import numpy as np
import pytest

from rog.cli import main
from rog.data import nuclei
from rog.data.nuclei import NucleiError, Resource, Source, harmonise, same_lattice


def _installed(source: Source) -> bool:
    try:
        source.image.locate(), source.atlas.locate(), source.names.locate()
        return True
    except NucleiError:
        return False


ICBM = next(s for s in nuclei.SOURCES if s.name == "icbm2009c")
needs_sources = pytest.mark.skipif(not all(_installed(s) for s in nuclei.SOURCES),
                                   reason="template packages not installed (scripts/setup.sh installs them)")


def test_harmonisation_maps_each_atlas_naming_to_the_four_classes():
    names = {1: "Caudate_L", 2: "Right_Putamen", 3: "Globus_pallidus_internalis_R", 4: "Pallidum_L",
             5: "Thal_Pulvinar_anterior_L", 6: "Left_Thalamus", 7: "Nucleus_Accumbens_L", 8: "ProStriate_Area_L",
             9: "Left_Cerebral_Cortex", 10: "Thalamus"}  # 10: no hemisphere -> not used
    assert harmonise(names) == {1: (1, "left"), 2: (2, "right"), 3: (3, "right"), 4: (3, "left"),
                                5: (4, "left"), 6: (4, "left")}


def test_lattice_check_accepts_whole_voxel_shifts_only():
    a = np.diag([1.0, 1.0, 1.0, 1.0])
    b = a.copy()
    b[:3, 3] = [-6, -6, -6]
    assert same_lattice(a, b)
    b[:3, 3] = [-6, -6.5, -6]
    assert not same_lattice(a, b)
    assert not same_lattice(a, np.diag([0.5, 0.5, 0.5, 1.0]))


def test_probabilistic_atlas_takes_the_most_probable_structure_above_the_threshold():
    data = np.zeros((2, 1, 1, 3), np.uint8)
    data[0, 0, 0] = [10, 60, 30]  # structure 1 wins
    data[1, 0, 0] = [20, 5, 24]  # best is 24 % < 25 %: background
    out = nuclei.atlas_indices(nib.Nifti1Image(data, np.eye(4)))
    assert out[:, 0, 0].tolist() == [1, -1]


@needs_sources
def test_one_source_keeps_the_templates_geometry_and_splits_hemispheres():
    cases = nuclei.source_cases(ICBM)
    assert [c.name for c in cases] == ["nuclei_icbm2009c_left", "nuclei_icbm2009c_right"]
    template = nib.load(ICBM.image.locate())
    full = np.asanyarray(template.dataobj).astype(np.float32)
    for case, sign in zip(cases, (-1, 1)):
        # the crop's voxel grid is the template's: same axes and spacing, a whole-voxel shift
        assert np.allclose(case.affine[:3, :3], template.affine[:3, :3])
        start = np.linalg.solve(template.affine[:3, :3], case.affine[:3, 3] - template.affine[:3, 3])
        assert np.allclose(start, np.rint(start))
        s = np.rint(start).astype(int)
        assert np.array_equal(case.image, full[s[0]:s[0] + case.image.shape[0], s[1]:s[1] + case.image.shape[1],
                                               s[2]:s[2] + case.image.shape[2]])
        assert set(np.unique(case.label)) == {0, 1, 2, 3, 4}
        for cls in range(1, 5):  # each nucleus on its hemisphere's side (RAS: left is x < 0)
            centre = case.affine[:3, :3] @ np.argwhere(case.label == cls).mean(0) + case.affine[:3, 3]
            assert np.sign(centre[0]) == sign
        # a margin of background around the nuclei
        assert not case.label[0].any() and not case.label[-1].any()
    # thalamus (HCPEx: 28 nuclei merged) is the largest class, pallidum (2 merged) the smallest
    vol = np.bincount(cases[0].label.ravel(), minlength=5)[1:]
    assert vol.argmax() == 3 and vol.argmin() == 2


@needs_sources
def test_nuclei_task_passes_check_and_holds_out_a_whole_template(tmp_path, capsys):
    out = tmp_path / "Nuclei"
    assert main(["nuclei", str(out)]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] + meta["numTest"] >= 8
    assert all("icbm2009c" in t for t in meta["test"]) and len(meta["test"]) == 2
    assert not any("icbm2009c" in t["image"] for t in meta["training"])
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [
        "nuclei_icbm2009c_left.nii.gz", "nuclei_icbm2009c_right.nii.gz"]
    assert meta["labels"] == {"0": "background", "1": "caudate", "2": "putamen", "3": "pallidum", "4": "thalamus"}
    assert main(["check", str(out), "-q"]) == 0
    capsys.readouterr()
    # the templates share MNI space: the training labels alone, carried through world
    # coordinates, segment the test template far above chance (what the demo's report shows)
    from rog.data.dataset import load_dataset
    from rog.evaluate.atlas import atlas_transfer
    ds = load_dataset(out)
    reference = atlas_transfer(ds.training, ds.test, 5)
    assert reference.training_cases == len(ds.training) and sorted(reference.cases) == sorted(
        c.name for c in ds.test)
    assert reference.dice > 0.5 and all(d > 0.4 for d in reference.dice_per_class)
    # each training label alone, on the test hemisphere its field of view covers
    assert sorted(reference.single) == sorted(c.name for c in ds.training)
    assert all(0.5 < d <= 1 for d in reference.single.values())
    assert main(["nuclei", str(out)]) == 2  # never written over
    assert "already holds a dataset" in capsys.readouterr().err


def test_missing_source_is_named_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    absent = Source("absent", Resource("deb", "no-such-package", "/nonexistent/template.nii.gz"),
                    Resource("pip", "no_such_package_xyz", "atlas.nii.gz"), Resource("pip", "no_such_package_xyz", "n.txt"))
    monkeypatch.setattr(nuclei, "SOURCES", (absent,))
    monkeypatch.setattr(nuclei, "TEST_SOURCE", "absent")
    assert main(["nuclei", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/nonexistent/template.nii.gz: missing (apt-get install no-such-package" in err[0]
    assert not (tmp_path / "t" / "dataset.json").exists()
