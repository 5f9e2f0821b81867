
import numpy as np

from rog.data.dataset import load_dataset
from rog.data.io import Geometry, read_image, read_label
from rog.data.preprocess import (case_done, invert_label, load_case, preprocess_arrays,
                                 resample)
from rog.rundir import Workdir
from rog.pipeline.stages import ensure_plan, run_preprocessing


def _plan(ds, tmp_path):
    return ensure_plan(ds, Workdir(tmp_path / "w"), width=16)


def test_round_trip_returns_the_original_labels(ct_task, tmp_path):
    ds = load_dataset(ct_task)
    plan = _plan(ds, tmp_path)
    for case in ds.training[:2]:
        image, geom = read_image(case.images)
        label, _ = read_label(case.label)
        pimg, plab, props = preprocess_arrays(image, label, geom, plan)
        assert pimg.dtype == np.float32 and pimg.shape[1:] == plab.shape
        back = invert_label(plab, props, plan.num_classes)
        assert back.shape == label.shape
        for k in (1, 2):  # resampling by a non-integer factor: near-exact, per class
            inter = np.sum((back == k) & (label == k))
            assert 2 * inter / (np.sum(back == k) + np.sum(label == k)) > 0.9


def test_round_trip_is_exact_on_the_target_grid():
    rng = np.random.default_rng(0)
    label = np.zeros((20, 18, 12), np.int16)
    label[5:12, 4:10, 3:9] = 1
    label[7:9, 6:8, 5:7] = 2
    image = rng.normal(size=(1, 20, 18, 12)).astype(np.float32)
    image[:, :2] = 0  # a zero border to crop
    geom = Geometry(affine=tuple(tuple(r) for r in np.diag([-1.0, -1.0, 2.0, 1.0]).tolist()),
                    shape=(20, 18, 12), spacing=(1.0, 1.0, 2.0), orientation="LPS")
    from rog.plan import plan_for
    plan = plan_for(1, 3, patch_size=(16, 16, 16))
    plan.target_spacing = [0.5, 0.5, 2.0]  # upsample in-plane by exactly 2
    pimg, plab, props = preprocess_arrays(image, label, geom, plan)
    assert plab.shape == (36, 36, 12)
    np.testing.assert_array_equal(invert_label(plab, props, 3), label)


def test_anisotropic_resampling_does_not_blend_slices():
    data = np.zeros((1, 8, 8, 4), np.float32)
    data[0, :, :, 1] = 100.0
    out = resample(data, (16, 16, 8), order=3, axis=2)
    # nearest through-plane: each output slice equals some input slice exactly
    values = {float(np.round(out[0, 8, 8, z], 3)) for z in range(8)}
    assert values <= {0.0, 100.0}


def test_normalisation_ct_and_mri(ct_task, mri_task, tmp_path):
    for task in (ct_task, mri_task):
        ds = load_dataset(task)
        plan = _plan(ds, tmp_path / ds.name)
        image, geom = read_image(ds.training[0].images)
        label, _ = read_label(ds.training[0].label)
        pimg, _, _ = preprocess_arrays(image, label, geom, plan)
        assert np.isfinite(pimg).all()
        assert -10 < pimg.min() and pimg.max() < 10  # z-scored, not HU
        if plan.normalization[0]["scheme"] == "ct":
            # clipped at the foreground percentiles
            hi = (plan.normalization[0]["upper"] - plan.normalization[0]["mean"]) / plan.normalization[0]["std"]
            assert pimg.max() <= hi + 1e-4


def test_preprocess_is_resumable_and_never_takes_a_partial_case(ct_task, tmp_path):
    wd, plan, done = run_preprocessing(ct_task, tmp_path / "w", workers=1)
    assert len(done) == 5  # 4 training + 1 test case
    image, label, props = load_case(wd.preprocessed, "synthct_000")
    assert image.shape[0] == 1 and label is not None and props["name"] == "synthct_000"
    _, test_label, test_props = load_case(wd.preprocessed, "synthct_004")  # test case: its labelsTs map,
    assert test_label is not None and test_props["split"] == "test"  # marked so that it never trains
    # a run killed mid-case leaves arrays without the JSON marker: that case is redone
    (wd.preprocessed / "synthct_001.json").unlink()
    (wd.preprocessed / "synthct_001.npy").write_bytes(b"torn")
    assert not case_done(wd.preprocessed, "synthct_001")
    _, _, again = run_preprocessing(ct_task, tmp_path / "w", workers=2)
    assert again == ["synthct_001"]
    image2, _, _ = load_case(wd.preprocessed, "synthct_001")
    assert image2.ndim == 4
    assert not list(wd.preprocessed.glob(".*"))  # no temporary files left behind


def test_streamed_inverse_equals_scipy_argmax_of_all_classes():
    from scipy import ndimage

    from rog.data.io import Geometry
    from rog.data.preprocess import invert_to_label
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(9, 11, 7)).astype(np.float32).transpose(3, 0, 1, 2)  # [K, x, y, z]
    geom = Geometry(((0, 0, 1.0, 0), (1.0, 0, 0, 0), (0, 1.0, 0, 0), (0, 0, 0, 1)), (13, 30, 25), (1, 1, 1), "SRA")
    props = {"geometry": geom.to_dict(), "axes": [1, 2, 0], "crop_bbox": [[2, 27], [1, 14], [3, 12]],
             "cropped_shape": [25, 13, 9]}
    ref = np.zeros((30, 25, 13), np.uint8)  # canonical order, then back to the file's order
    zoomed = np.stack([ndimage.zoom(p, np.array([25, 13, 9]) / np.array(p.shape), order=1, mode="nearest",
                                    grid_mode=True) for p in probs])
    ref[2:27, 1:14, 3:12] = zoomed.argmax(0)
    ref = ref.transpose(np.argsort([1, 2, 0]))
    out = invert_to_label(probs, props)
    assert out.shape == (13, 30, 25) and (out == ref).mean() > 0.999
