import json

import pytest

from rog.data.dataset import load_dataset
from rog.data.fingerprint import compute_fingerprint
from rog.plan import Plan, PlanError, class_kind, make_plan, plan_for, plan_sizes


def test_hippocampus_plan_matches_the_paper():
    sizes = plan_sizes([35, 50, 36], [19, 23, 20], 1580)
    assert sizes["patch_size"] == [32, 48, 32]
    assert sizes["strides"] == [[1, 1, 1], [1, 1, 1], [2, 2, 2]]
    assert sizes["num_downsamplings"] == 4


def test_large_volumes_take_five_downsamplings_and_capped_patches():
    # a Liver-like task: 1.5x patches, anisotropic first stride, 256 validation patches
    sizes = plan_sizes([482, 482, 120], [100, 100, 50], 500_000)
    assert sizes["num_downsamplings"] == 5
    assert sizes["patch_size"] == [192, 192, 96]
    assert sizes["strides"][0] == [2, 2, 1]
    assert sizes["val_patch_size"][:2] == [256, 256]


def test_public_code_defects_are_fixed():
    # a tiny structure along one axis gave the public code a stride count of 0 -> every stride 2,
    # or 1 -> a mismatch with the lattice's two fixed halvings. Here every axis keeps >= 2.
    sizes = plan_sizes([40, 40, 6], [10, 10, 0.5], 100)
    total = [s0 * s1 * s2 * 4 for s0, s1, s2 in zip(*sizes["strides"])]
    assert all(t >= 4 for t in total)
    assert all(p % t == 0 for p, t in zip(sizes["patch_size"], total))
    assert all(p % t == 0 for p, t in zip(sizes["val_patch_size"], total))
    assert sizes["patch_size"][2] >= 16  # padded up rather than a coarsest map under 4 voxels


def test_class_kinds():
    assert class_kind("Tumour core") == "lesion" and class_kind("edema") == "lesion"
    assert class_kind("left hippocampus") == "organ" and class_kind("Liver") == "organ"


def test_plan_from_synthetic_fingerprint_round_trips(ct_task, tmp_path):
    ds = load_dataset(ct_task)
    fp = compute_fingerprint(ds, progress=False)
    assert fp["classes"]["2"]["mean_volume_voxels"] < fp["classes"]["1"]["mean_volume_voxels"]
    assert fp["target_spacing"][2] == pytest.approx(2.5)
    assert all(ch["percentile_00_5"] < ch["mean"] < ch["percentile_99_5"] for ch in fp["intensity"])
    plan = make_plan(fp, width=16)
    assert plan.class_kinds == {"organ": "organ", "lesion": "lesion"}
    assert plan.normalization[0]["scheme"] == "ct"
    assert all(p % t == 0 for p, t in zip(plan.patch_size, plan.total_stride))
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan


def test_class_missing_from_a_case_does_not_crash(ct_task, tmp_path):
    import shutil

    import nibabel as nib
    import numpy as np
    root = tmp_path / "c"
    shutil.copytree(ct_task, root)
    lab = nib.load(str(root / "labelsTr/synthct_000.nii.gz"))
    data = np.asarray(lab.dataobj)
    data[data == 2] = 1  # no lesion in this case
    nib.save(nib.Nifti1Image(data, lab.affine), str(root / "labelsTr/synthct_000.nii.gz"))
    fp = compute_fingerprint(load_dataset(root), progress=False)
    assert fp["classes"]["2"]["cases_present"] == 3
    make_plan(fp)


def test_bad_plan_files_name_the_problem(tmp_path):
    with pytest.raises(PlanError, match="plan not found"):
        Plan.load(tmp_path / "nope.json")
    p = plan_for(1, 2, patch_size=(32, 32, 32))
    raw = json.loads(json.dumps(p.__dict__))
    raw["patch_size"] = [30, 32, 32]
    (tmp_path / "plan.json").write_text(json.dumps(raw))
    with pytest.raises(PlanError, match="not divisible by the total stride"):
        Plan.load(tmp_path / "plan.json")
    raw["patch_size"] = [32, 32, 32]
    raw["bogus"] = 1
    (tmp_path / "plan.json").write_text(json.dumps(raw))
    with pytest.raises(PlanError, match="unknown key"):
        Plan.load(tmp_path / "plan.json")
