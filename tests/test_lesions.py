"""Lesion-level damage (`rog.evaluate.lesions`): components matched by hand on small maps, and
what the attack records and summaries say of them."""
import numpy as np
import pytest

from rog.evaluate.lesions import match_lesions


def test_lesions_are_matched_counted_and_measured_as_worked_by_hand():
    ref = np.zeros((12, 12, 4), np.uint8)
    ref[1:4, 1:4, :] = 1  # lesion A, 36 voxels
    ref[7:9, 7:9, :] = 1  # lesion B, 16 voxels
    ref[1:3, 8:11, 1:3] = 2  # one class-2 structure
    pred = np.zeros_like(ref)
    pred[1:4, 1:4, :2] = 1  # half of A: IoU 0.5, detected
    pred[8, 8, 0] = 1  # one voxel of B: IoU 1/16 < 0.1, so B is missed and this component invented
    pred[10:12, 0:2, :] = 1  # invented, far from any lesion
    pred[1:3, 8:11, 1:3] = 2  # class 2 exact
    got = match_lesions(pred, ref, 3, spacing=(2.0, 2.0, 2.5))
    assert got["detected"] == [1, 1] and got["missed"] == [1, 0] and got["invented"] == [2, 0]
    assert got["f1"] == pytest.approx([2 * 1 / (2 + 1 + 2), 1.0])
    assert got["volume"] == pytest.approx([(18 + 1 + 16) * 0.01, 12 * 0.01]) and got["unit"] == "mL"  # 10 mm^3 a voxel
    # a looser match finds B: its one voxel then counts
    assert match_lesions(pred, ref, 3, overlap=0.05)["missed"] == [0, 0]
    # nothing anywhere: no lesion, NaN F1, volumes in voxels without a spacing
    empty = match_lesions(np.zeros_like(ref), np.zeros_like(ref), 3)
    assert empty["detected"] == [0, 0] and np.isnan(empty["f1"]).all() and empty["unit"] == "voxels"
    # the ignore label (K) holds no lesion of either map
    ignored = ref.copy()
    ignored[10:12, 0:2, :] = 3
    assert match_lesions(pred, ignored, 3)["invented"] == [1, 0]
