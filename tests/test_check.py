import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from rog.cli import main
from rog.data.check import check_dataset
from rog.data.dataset import load_dataset


def _write(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_sound_dataset_has_no_problems(ct_task):
    assert check_dataset(ct_task) == []


def test_every_problem_is_listed_at_once(ct_task, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(ct_task, root)
    meta = json.loads((root / "dataset.json").read_text())
    tr = root / "imagesTr"
    lb = root / "labelsTr"
    img = nib.load(str(tr / "synthct_000.nii.gz"))
    data, aff = np.asarray(img.dataobj).astype(np.float32), img.affine
    lab = np.asarray(nib.load(str(lb / "synthct_000.nii.gz")).dataobj)
    # case 0: NaN voxels and an undeclared label value
    data[0, 0, 0] = np.nan
    _write(tr / "synthct_000.nii.gz", data, aff)
    lab7 = lab.copy()
    lab7[0, 0, 0] = 7
    _write(lb / "synthct_000.nii.gz", lab7, aff)
    # case 1: label shape mismatch
    _write(lb / "synthct_001.nii.gz", lab[:-2], aff)
    # case 2: truncated gzip image, and label with a different affine
    raw = (tr / "synthct_002.nii.gz").read_bytes()
    (tr / "synthct_002.nii.gz").write_bytes(raw[: len(raw) // 2])
    lab2 = nib.load(str(lb / "synthct_002.nii.gz"))
    shifted = lab2.affine.copy()
    shifted[0, 3] += 5
    _write(lb / "synthct_002.nii.gz", np.asarray(lab2.dataobj), shifted)
    # case 3: two channels where one is declared, and missing label file
    _write(tr / "synthct_003.nii.gz", np.stack([data, data], -1), aff)
    (lb / "synthct_003.nii.gz").unlink()
    # test case: too small on an axis
    _write(root / "imagesTs" / "synthct_004.nii.gz", data[:, :, :5], aff)
    # an entry escaping the folder
    meta["training"].append({"image": "../outside.nii.gz", "label": "../outside_lab.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))

    problems = [str(p) for p in check_dataset(root)]
    text = "\n".join(problems)

    def has(case, file_part, msg):
        return any(p.startswith(case) and file_part in p and msg in p for p in problems)

    assert has("synthct_000", "imagesTr/synthct_000.nii.gz", "NaN/Inf"), text
    assert has("synthct_000", "labelsTr/synthct_000.nii.gz", "label values [7] not declared"), text
    assert has("synthct_001", "labelsTr/synthct_001.nii.gz", "differs from image shape"), text
    assert has("synthct_002", "imagesTr/synthct_002.nii.gz", "truncated or corrupt"), text
    assert has("synthct_003", "imagesTr/synthct_003.nii.gz", "2 channel(s), dataset.json declares 1"), text
    assert has("synthct_003", "labelsTr/synthct_003.nii.gz", "file not found"), text
    assert has("synthct_004", "imagesTs/synthct_004.nii.gz", "smaller than 8 voxels on axis [2]"), text
    assert has("dataset", "dataset.json", "leaves the dataset folder"), text
    assert has("outside", "outside.nii.gz", "file not found"), text
    # the label with a shifted affine on a truncated image is still checked against nothing:
    # fix the image and the affine mismatch must show
    shutil.copy(ct_task / "imagesTr" / "synthct_002.nii.gz", tr / "synthct_002.nii.gz")
    assert any("synthct_002" in str(p) and "affine differs" in str(p) for p in check_dataset(root))

    assert main(["check", str(root), "-q"]) == 1
    out = capsys.readouterr().out
    assert "problem(s) found" in out and "synthct_003" in out


def test_empty_training_list(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ"}, "training": [], "test": []}))
    problems = check_dataset(tmp_path)
    assert len(problems) == 1 and "training list is empty" in problems[0].message


def test_check_cli_ok(ct_task, capsys):
    assert main(["check", str(ct_task), "-q"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_structure_problems_of_both_layouts_are_listed(ct_task, tmp_path):
    from rog.data.synthetic import make_task
    # nnU-Net v2: a stray file, a channel the dataset does not have, a wrong count, another ending
    root = make_task(tmp_path / "nn", cases=3, test_cases=0, seed=1, size=(24, 28), layout="nnunet")
    first = sorted((root / "imagesTr").glob("*_0000.nii.gz"))[0]
    shutil.copy(first, root / "imagesTr" / first.name.replace("_0000", "_0003"))
    shutil.copy(first, root / "imagesTr" / first.name.replace("_0000.nii.gz", "_0000.nii"))
    (root / "imagesTr" / "notes.txt").write_text("x")
    meta = json.loads((root / "dataset.json").read_text())
    meta["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(meta))
    text = "\n".join(map(str, check_dataset(root)))
    assert "_0003.nii.gz: no channel of a case" in text
    assert "_0000.nii: file ending not the dataset's file_ending '.nii.gz'" in text
    assert "notes.txt: file ending" in text and "numTraining is 5 but 3 training case(s) are in imagesTr" in text
    meta["file_ending"] = ".png"
    (root / "dataset.json").write_text(json.dumps(meta))
    assert "file_ending '.png': rog reads .nii.gz, .nii, .nrrd" in "\n".join(map(str, check_dataset(root)))
    # MSD: a case listed twice, and the count that says otherwise
    msd = tmp_path / "msd"
    shutil.copytree(ct_task, msd)
    meta = json.loads((msd / "dataset.json").read_text())
    meta["training"].append(meta["training"][0])
    (msd / "dataset.json").write_text(json.dumps(meta))
    text = "\n".join(map(str, check_dataset(msd)))
    assert f"training case name(s) ['{meta['training'][0]['image'].split('/')[-1][:-7]}'] appear more than once" in text
    assert f"numTraining is {meta['numTraining']} but {len(meta['training'])} training case(s) are listed" in text


def test_a_case_name_in_both_training_and_test_is_refused(ct_task, tmp_path, capsys):
    """Preprocessed cases are stored by name: a training and a test case of one name would
    overwrite each other (which survived depended on timing)."""
    import shutil
    root = tmp_path / "dup"
    shutil.copytree(ct_task, root)
    meta = json.loads((root / "dataset.json").read_text())
    first = meta["training"][0]["image"]
    shutil.copy(root / first, root / "imagesTs" / Path(first).name)
    meta["test"].append(f"./imagesTs/{Path(first).name}")
    (root / "dataset.json").write_text(json.dumps(meta))
    name = Path(first).name[: -len(".nii.gz")]
    assert any(f"case name(s) ['{name}'] in both the training and the test cases" in str(p)
               for p in check_dataset(root))
    assert main(["preprocess", str(root), "-w", str(tmp_path / "w")]) == 2
    assert f"['{name}'] in both the training and the test cases" in capsys.readouterr().err


def test_an_evaluation_only_dataset_is_accepted_where_nothing_is_trained(ct_task, tmp_path, capsys):
    root = tmp_path / "evalonly"
    shutil.copytree(ct_task, root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"], meta["numTraining"] = [], 0
    (root / "dataset.json").write_text(json.dumps(meta))
    assert check_dataset(root) == [] and main(["check", str(root)]) == 0
    assert all(c.label is not None for c in load_dataset(root).test)  # labelled: it can be attacked and scored
    capsys.readouterr()
    assert main(["plan", str(root), "-w", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the training list is empty: a plan needs training cases" in err
