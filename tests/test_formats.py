"""Image formats: NIfTI, NRRD, MetaImage, GIPL and DICOM series read and written with their exact
geometry (oblique, anisotropic), the same case giving the same preprocessing and prediction in
every format, predictions written back in the input's format, nnU-Net's `file_ending` honoured."""
import json
from dataclasses import replace
import locale

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from rog.bench.volumes import VolumeWriter
from rog.cli import main
from rog.data import formats
from rog.data.dataset import load_dataset
from rog.data.io import VolumeError, canonical_axes, read_image, read_label, write_volume
from rog.data.preprocess import load_case, preprocess_arrays, preprocess_dataset
from rog.infer.predictor import cases_from_input, predict_cases
from rog.rundir import ResultsDir
from tests.test_predictor import Oracle, _identity_plan

# one file per format, plus the DICOM series (a folder: no ending)
ENDINGS = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", formats.DICOM]


@pytest.fixture
def oblique():
    """An oblique (rotated about all three axes), anisotropic, right-handed RAS affine."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [12, -25, 33], degrees=True).as_matrix() @ np.diag([0.8, 1.1, 2.5])
    affine[:3, 3] = [10.5, -20.25, 5.0]
    return affine


@pytest.fixture
def labelled():
    """A label map `[18, 20, 12]` with two classes, and its image 100 * label + 7 as int16 CT."""
    label = np.zeros((18, 20, 12), np.uint8)
    label[4:12, 5:15, 3:9] = 1
    label[6:9, 8:11, 4:7] = 2
    return label, (100 * label + 7).astype(np.int16)


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_format_round_trips_voxels_and_oblique_geometry(tmp_path, oblique, labelled, ending):
    _, image = labelled
    path = tmp_path / f"case{ending}"
    write_volume(path, image, oblique)
    assert formats.ending(path) == ending and formats.stem(path) == "case"
    data, geometry = read_image([path])
    np.testing.assert_array_equal(data[0], image)
    np.testing.assert_allclose(geometry.affine, oblique, atol=1e-6)
    np.testing.assert_allclose(geometry.spacing, [0.8, 1.1, 2.5], atol=1e-6)
    # the world position of a voxel is the same through ITK's own LPS reader (the conversion is right)
    if ending not in formats.NIFTI:
        itk = sitk.ReadImage(str(path)) if ending else sitk.ReadImage(
            sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        lps = np.array(itk.TransformIndexToPhysicalPoint((3, 5, 7)))
        np.testing.assert_allclose(lps * [-1, -1, 1], (oblique @ [3, 5, 7, 1])[:3], atol=1e-5)
    assert not [f for f in tmp_path.rglob(".*")], "a temporary file was left behind"


def test_gipl_keeps_axis_aligned_grids_and_refuses_oblique_ones(tmp_path, oblique, labelled):
    _, image = labelled
    aligned = np.diag([-0.8, -1.1, 2.5, 1.0])  # identity direction in ITK's LPS
    aligned[:3, 3] = [4, 5, 6]
    write_volume(tmp_path / "a.gipl.gz", image, aligned)
    data, geometry = read_image([tmp_path / "a.gipl.gz"])
    np.testing.assert_array_equal(data[0], image)
    np.testing.assert_allclose(geometry.affine, aligned, atol=1e-5)
    with pytest.raises(VolumeError, match=r"b\.gipl: GIPL stores no orientation"):
        write_volume(tmp_path / "b.gipl", image, oblique)
    assert not (tmp_path / "b.gipl").exists()


def test_the_same_case_in_every_format_gives_the_same_preprocessing_and_prediction(tmp_path, oblique, labelled):
    label, image = labelled
    plan = _identity_plan([0.7, 0.9, 1.6])  # resampling there and back
    preprocessed, predictions = [], []
    for ending in ENDINGS:
        folder = tmp_path / f"in{ending or '_dicom'}"
        write_volume(folder / f"c0{ending}", image, oblique)
        cases = cases_from_input(folder)
        assert [c.name for c in cases] == ["c0"]
        data, geometry = read_image(cases[0].images)
        preprocessed.append(preprocess_arrays(data, None, geometry, plan)[0])
        out = tmp_path / f"out{ending or '_dicom'}"
        # the input's own format: a DICOM series for a DICOM series where asked (DICOM-SEG by default)
        assert predict_cases(Oracle(), plan, cases, out, progress=False, mirror_axes=(), dicom_seg=False) == {"c0": "ok"}
        written = out / f"c0{ending}"
        assert formats.ending(written) == ending
        pred, pgeom = read_label(written)
        np.testing.assert_allclose(pgeom.affine, oblique, atol=1e-6)
        predictions.append(pred)
    for other in preprocessed[1:]:
        np.testing.assert_allclose(other, preprocessed[0], atol=1e-5)
    for other in predictions[1:]:
        np.testing.assert_array_equal(other, predictions[0])
    assert np.mean(predictions[0] == label) > 0.95  # and it is the case's label, not merely consistent


def test_a_dicom_series_is_predicted_as_dicom_seg_referencing_its_study(tmp_path, oblique, labelled):
    import highdicom as hd
    import pydicom
    label, image = labelled
    source = tmp_path / "in" / "c0"
    write_volume(source, image, oblique)
    for f in sorted(source.iterdir()):  # a scanner's series names its patient
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName = "P0042", "Doe^Jane"
        ds.save_as(f)
    first = pydicom.dcmread(sorted(source.iterdir())[0])
    plan = replace(_identity_plan([0.7, 0.9, 1.6]), labels={"0": "background", "1": "organ", "2": "lesion"})
    assert predict_cases(Oracle(), plan, cases_from_input(tmp_path / "in"), tmp_path / "out", progress=False,
                         mirror_axes=()) == {"c0": "ok"}
    assert not (tmp_path / "out" / "c0").exists()  # no per-slice series unless asked
    seg = hd.seg.segread(tmp_path / "out" / "c0.dcm")
    assert seg.Modality == "SEG" and (seg.PatientID, str(seg.PatientName)) == ("P0042", "Doe^Jane")
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["organ", "lesion"]
    # each source slice's frame is the prediction on it: the Oracle's label, as the series output has it
    with formats.locale_kept():
        files = formats.series_files(source)
    frames = seg.get_pixels_by_source_instance([pydicom.dcmread(f).SOPInstanceUID for f in files],
                                               combine_segments=True)
    assert predict_cases(Oracle(), plan, cases_from_input(tmp_path / "in"), tmp_path / "series", progress=False,
                         mirror_axes=(), dicom_seg=False) == {"c0": "ok"}
    series, _ = read_label(tmp_path / "series" / "c0")
    np.testing.assert_array_equal(frames, series.transpose(2, 1, 0))
    assert np.mean(series == label) > 0.95


@pytest.mark.parametrize("handed", ["right", "left"])
def test_a_dicom_seg_prediction_is_scored_by_rog_evaluate_voxel_for_voxel(tmp_path, oblique, labelled, handed, capsys):
    from rog.data.dicom_seg import write_seg
    label, image = labelled
    affine = oblique.copy()
    if handed == "left":  # slices written against the normal: the series reader turns them round
        affine[:3, 2] *= -1
    write_volume(tmp_path / "scans" / "c0", image, affine)
    read, geometry = read_label(tmp_path / "scans" / "c0")
    assert np.abs(geometry.spacing[2] - 2.5) < 1e-6  # each slice says how far the next one is
    truth = ((read - 7) // 100).astype(np.uint8)  # the label map on the series' grid
    write_volume(tmp_path / "ref" / "c0.nii.gz", truth, geometry.affine)
    wrong = truth.copy()
    wrong[wrong == 2] = 1  # the lesion called organ: Dice 1 for neither class
    write_seg(tmp_path / "pred" / "c0.dcm", wrong, tmp_path / "scans" / "c0", ["organ", "lesion"])
    seg, seg_geometry = read_label(tmp_path / "pred" / "c0.dcm")
    assert seg_geometry.same_grid(geometry)
    np.testing.assert_array_equal(seg, wrong)
    assert main(["evaluate", str(tmp_path / "ref"), str(tmp_path / "pred")]) == 0
    s = json.loads((tmp_path / "pred" / "summary.json").read_text())
    organ = 2 * np.sum((wrong == 1) & (truth == 1)) / (np.sum(wrong == 1) + np.sum(truth == 1))
    assert s["mean_per_class"]["dice"] == pytest.approx([organ, 0.0])


@pytest.fixture
def mha_dataset(tmp_path, oblique, labelled):
    """An nnU-Net v2 dataset of two MHA cases (file_ending '.mha') on the oblique grid."""
    label, image = labelled
    root = tmp_path / "Dataset009_Mha"
    for i in range(2):
        write_volume(root / "imagesTr" / f"c{i}_0000.mha", image, oblique)
        write_volume(root / "labelsTr" / f"c{i}.mha", label, oblique)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {
        "background": 0, "a": 1, "b": 2}, "numTraining": 2, "file_ending": ".mha"}))
    return root


def test_an_nnunet_dataset_in_mha_is_read_checked_and_evaluated(tmp_path, mha_dataset, oblique, labelled, capsys):
    label, _ = labelled
    ds = load_dataset(mha_dataset)
    assert [c.images[0].name for c in ds.training] == ["c0_0000.mha", "c1_0000.mha"] and not ds.problems
    assert main(["check", str(mha_dataset)]) == 0
    capsys.readouterr()
    # references in MHA, predictions in NRRD: paired by case name
    write_volume(tmp_path / "pred" / "c0.nrrd", label, oblique)
    assert main(["evaluate", str(mha_dataset / "labelsTr"), str(tmp_path / "pred"), "--classes", "3"]) == 1
    out, err = capsys.readouterr()
    assert "a: Dice 1.0000" in out and "no prediction for 1 reference(s): c1" in err  # c1 has no prediction


def test_saved_volumes_are_written_in_the_scans_format_and_geometry(tmp_path, mha_dataset, oblique, labelled):
    _, image = labelled
    ds = load_dataset(mha_dataset)
    geometry = read_image(ds.training[0].images)[1]
    plan = _identity_plan(np.array(geometry.spacing)[list(canonical_axes(geometry))])  # no resampling
    preprocess_dataset(ds, plan, tmp_path / "pre", progress=False)
    pre, _, _ = load_case(tmp_path / "pre", "c0")
    x = torch.from_numpy(np.array(pre, np.float32))[None]
    writer = VolumeWriter(ResultsDir(tmp_path / "res"), tmp_path / "pre")
    writer.write("c0", "clean", x, torch.zeros(1, 3, *x.shape[2:]))
    writer.write("c0", "eps8.0", x + 0.5, torch.zeros(1, 3, *x.shape[2:]))
    saved = ResultsDir(tmp_path / "res").volumes()["c0"]
    assert sorted(saved) == ["clean", "eps8.0", "eps8.0_delta", "pred_clean", "pred_eps8.0"]
    assert all(f.name.endswith(".mha") for f in saved.values())
    clean, g = read_image([saved["clean"]])
    np.testing.assert_allclose(g.affine, oblique, atol=1e-6)
    np.testing.assert_array_equal(clean[0], image)  # the scan as stored
    # not resampled: the saved attacked scan is exactly the one whose preprocessing is the attacked input
    adv, _ = read_image([saved["eps8.0"]])
    again = preprocess_arrays(adv, None, g, plan)[0]
    np.testing.assert_allclose(again, pre + 0.5, atol=1e-5)
    np.testing.assert_allclose(read_image([saved["eps8.0_delta"]])[0], adv - clean, atol=1e-5)


def test_an_unsupported_file_ending_is_one_problem_naming_it(tmp_path, labelled):
    label, image = labelled
    root = tmp_path / "Dataset010_Png"
    write_volume(root / "imagesTr" / "c0_0000.nii.gz", image, np.eye(4))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {
        "background": 0, "a": 1}, "numTraining": 1, "file_ending": ".png"}))
    problems = load_dataset(root, strict=False).problems
    assert any("file_ending '.png': rog reads .nii.gz" in p for p in problems)
    with pytest.raises(VolumeError, match=r"c0\.png: unknown image file ending '\.png'"):
        write_volume(tmp_path / "c0.png", label, np.eye(4))


def test_a_folder_with_two_dicom_series_is_refused_by_name(tmp_path, oblique, labelled):
    _, image = labelled
    write_volume(tmp_path / "a", image, oblique)
    write_volume(tmp_path / "b", image[::-1].copy(), oblique)
    for f in (tmp_path / "b").iterdir():
        f.rename(tmp_path / "a" / f"b{f.name}")
    with pytest.raises(VolumeError, match=r"/a: 2 DICOM series in the folder, expected one"):
        read_image([tmp_path / "a"])


def test_rewriting_a_dicom_series_replaces_it_whole(tmp_path, oblique, labelled):
    label, _ = labelled
    encoding = locale.getpreferredencoding(False)
    write_volume(tmp_path / "s", label, oblique)
    write_volume(tmp_path / "s", label[:, :, :6].copy(), oblique)  # fewer slices: no old slice may survive
    data, _ = read_label(tmp_path / "s")
    np.testing.assert_array_equal(data, label[:, :, :6])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    # GDCM sets the C locale and leaves it; rog puts it back (or Python's text I/O turns ASCII)
    assert locale.getpreferredencoding(False) == encoding
    with pytest.raises(VolumeError, match="a DICOM series holds one integer channel"):
        write_volume(tmp_path / "f", label.astype(np.float32), oblique)
    write_volume(tmp_path / "sub-01.ses-1", label, oblique)  # a dotted case name is a folder name
    assert formats.ending(tmp_path / "sub-01.ses-1") == formats.DICOM
