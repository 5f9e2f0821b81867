import numpy as np
import pytest

from rog.evaluate.metrics import Regions, case_metrics, dice_batch, dice_per_class, surface_metrics
from rog.infer.postprocess import decide, keep_largest_component, postprocess, relabel_small_lesions


def _organ_with_islands():
    lab = np.zeros((30, 30, 30), np.int16)
    lab[2:14, 2:14, 2:14] = 1  # main organ
    lab[20:23, 20:23, 20:23] = 1  # spurious organ component
    lab[6:8, 6:8, 6:8] = 2  # tiny lesion island inside the organ
    lab[9:13, 9:13, 9:13] = 2  # a real lesion (64 voxels)
    lab[25:27, 2:4, 2:4] = 2  # tiny lesion island in the background
    return lab


def test_largest_component_per_organ():
    out = keep_largest_component(_organ_with_islands(), [1])
    assert out[21, 21, 21] == 0 and out[3, 3, 3] == 1
    assert (out == 2).sum() == (_organ_with_islands() == 2).sum()  # lesions untouched


def test_small_lesions_take_the_surrounding_class():
    lab = _organ_with_islands()
    out = relabel_small_lesions(lab, {2: 20})
    assert out[6, 6, 6] == 1  # inside the organ -> organ
    assert out[25, 2, 2] == 0  # in the background -> background
    assert out[10, 10, 10] == 2  # large lesion kept


def test_decide_keeps_only_steps_that_help():
    ref = _organ_with_islands()
    ref_clean = keep_largest_component(ref, [1])
    # predictions with a spurious organ island: largest component helps
    decision = decide([ref], [ref_clean], 3, [1], {2: 20})
    assert decision["steps"]["largest_component"] and decision["dice_with"] > decision["dice_without"]
    # references that really have the small lesions: relabelling them would hurt
    decision = decide([ref_clean], [ref_clean], 3, [1], {2: 20})
    assert decision["steps"] == {"largest_component": False, "small_lesions": False}
    assert postprocess(ref, decision["steps"], [1], {2: 20}) is ref or np.array_equal(
        postprocess(ref, decision["steps"], [1], {2: 20}), ref)


def test_dice_nnunet_convention():
    a = np.zeros((4, 4, 4), int)
    b = np.zeros((4, 4, 4), int)
    a[:2] = 1
    b[1:3] = 1
    d = dice_per_class(a, b, 3)
    assert d[0] == pytest.approx(0.5) and np.isnan(d[1])  # class 2 empty in both -> NaN
    import torch
    batch = dice_batch(torch.tensor(np.stack([a, a])), torch.tensor(np.stack([b, a])), 3)
    assert batch.tolist() == pytest.approx([0.5, 1.0])


def test_dice_per_region_is_nnunets_evaluation_of_regions():
    # BraTS's nested regions and a lone label: Dice of each region's mask as nnU-Net's
    # evaluation computes it (region_or_label_to_mask, compute_tp_fp_fn_tn), NaN where empty
    import torch
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask
    regions = [(1, 2, 3), (2, 3), 3]
    k = Regions(4, regions)
    rng = np.random.default_rng(0)
    pred, ref = rng.integers(0, 4, (2, 9, 8, 7)), rng.integers(0, 4, (2, 9, 8, 7))
    ref[1][ref[1] == 3] = 0
    pred[1][pred[1] == 3] = 1  # the enhancing region absent from both in case 1: NaN, left out
    for p, r in zip(pred, ref):
        theirs = []
        for region in regions:
            tp, fp, fn, _ = compute_tp_fp_fn_tn(region_or_label_to_mask(r, region), region_or_label_to_mask(p, region))
            theirs.append(np.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
        np.testing.assert_allclose(dice_per_class(p, r, k), theirs)
    assert np.isnan(dice_per_class(pred[1], ref[1], k)[2])
    np.testing.assert_allclose(dice_batch(torch.tensor(pred), torch.tensor(ref), k).numpy(),
                               [np.nanmean(dice_per_class(p, r, k)) for p, r in zip(pred, ref)], rtol=1e-6)
    # surface metrics of a region are those of its mask scored as a binary map
    hd, nsd = surface_metrics(pred[0], ref[0], k, [1.0, 2.0, 1.5])
    for i, region in enumerate(regions):
        mask = lambda t: region_or_label_to_mask(t, region).astype(int)  # noqa: E731
        one = surface_metrics(mask(pred[0]), mask(ref[0]), 2, [1.0, 2.0, 1.5])
        assert (hd[i], nsd[i]) == pytest.approx((one[0][0], one[1][0]))
    assert case_metrics(pred[0], ref[0], k, [1, 1, 1])["dice"] == pytest.approx(dice_per_class(pred[0], ref[0], k))
    with pytest.raises(ValueError, match="labels 1..3"):
        Regions(4, [(1, 4)])


def test_surface_metrics_use_the_spacing():
    ref = np.zeros((30, 30, 30), int)
    ref[10:20, 10:20, 10:20] = 1
    pred = np.roll(ref, 1, axis=0)
    m1 = case_metrics(pred, ref, 2, (1.0, 1.0, 1.0))
    m2 = case_metrics(pred, ref, 2, (2.0, 1.0, 1.0))
    assert m1["hd95"][0] == pytest.approx(1.0, abs=0.01)
    assert m2["hd95"][0] == pytest.approx(2.0, abs=0.01)
    assert m1["nsd"][0] > m2["nsd"][0] and m1["dice"][0] == pytest.approx(0.9)
    missed = case_metrics(np.zeros_like(ref), ref, 2, (1, 1, 1))
    assert missed["dice"][0] == 0 and missed["nsd"][0] == 0 and missed["missed"] == [True]
    assert missed["hd95"][0] == pytest.approx((3 * 30 ** 2) ** 0.5)  # the penalty: the volume's diagonal


def _relabel_reference(label, min_voxels):
    """The earlier implementation (one whole-volume dilation per component), as the reference."""
    import cc3d
    from scipy import ndimage
    out = label.copy()
    for k, limit in min_voxels.items():
        comps, n = cc3d.connected_components(label == k, connectivity=26, return_N=True)
        sizes = np.bincount(comps.ravel())
        for c in np.flatnonzero(sizes[1:] < limit) + 1:
            mask = comps == c
            ring = ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool)) & ~mask
            around = label[ring]
            out[mask] = np.bincount(around[around != k]).argmax() if np.any(around != k) else 0
    return out


@pytest.mark.parametrize("seed", range(4))
def test_small_lesion_relabelling_equals_the_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(6, 14, 3))
    # blobs of 4 classes, speckled with small components touching each other and the borders
    lab = rng.integers(0, 4, shape).astype(np.int16)
    lab[rng.random(shape) < 0.5] = 0
    lab[: shape[0] // 2] = np.where(rng.random((shape[0] // 2, *shape[1:])) < 0.8, 1, lab[: shape[0] // 2])
    limits = {2: float(rng.integers(2, 9)), 3: float(rng.integers(2, 9))}
    out = relabel_small_lesions(lab, limits)
    assert np.array_equal(out, _relabel_reference(lab, limits))
    assert not np.array_equal(out, lab)  # the maps do hold small lesions
