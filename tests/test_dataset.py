import json
import shutil

import numpy as np
import pytest

from rog.data.dataset import DatasetError, load_dataset
from rog.data.io import read_image, read_label
from rog.data.synthetic import make_task


def test_msd_and_nnunet_layouts_give_the_same_cases(tmp_path):
    msd = load_dataset(make_task(tmp_path / "msd", kind="mri", cases=2, test_cases=1, seed=1, size=(16, 20)))
    nnu = load_dataset(make_task(tmp_path / "nnu", kind="mri", cases=2, test_cases=1, seed=1, size=(16, 20),
                                 layout="nnunet"))
    assert msd.layout == "msd" and nnu.layout == "nnunet"
    assert msd.modalities == nnu.modalities == ["T1", "T2"]
    assert msd.labels == nnu.labels == {0: "background", 1: "tumour"}
    assert [c.name for c in msd.training] == [c.name for c in nnu.training]
    assert [c.name for c in msd.test] == [c.name for c in nnu.test]
    assert len(nnu.training[0].images) == 2 and len(msd.training[0].images) == 1
    for a, b in zip(msd.training, nnu.training):
        ia, ga = read_image(a.images)
        ib, gb = read_image(b.images)
        np.testing.assert_array_equal(ia, ib)
        assert ia.shape[0] == 2 and ga.same_grid(gb)
        np.testing.assert_array_equal(read_label(a.label)[0], read_label(b.label)[0])


def test_msd_cases_come_from_the_json_not_from_junk_files(ct_task, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(ct_task, root)
    (root / "imagesTr" / "._synthct_000.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS junk")
    ds = load_dataset(root)
    assert [c.name for c in ds.training] == [f"synthct_{i:03d}" for i in range(4)]


def test_nnunet_hidden_files_ignored(tmp_path):
    root = make_task(tmp_path / "n", kind="ct", cases=2, test_cases=0, seed=0, size=(16, 20), layout="nnunet")
    (root / "imagesTr" / "._synthct_000_0000.nii.gz").write_bytes(b"junk")
    assert [c.name for c in load_dataset(root).training] == ["synthct_000", "synthct_001"]


def test_missing_or_malformed_dataset_json_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json: not found"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: invalid JSON"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "training": []}))
    with pytest.raises(DatasetError, match="missing key 'labels'"):
        load_dataset(tmp_path)


def test_path_leaving_the_folder_is_an_error_in_strict_mode(ct_task, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(ct_task, root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0]["image"] = "../../etc/passwd"
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        load_dataset(root)
    assert any("leaves" in p for p in load_dataset(root, strict=False).problems)


def test_a_dataset_of_symbolic_links_is_fine_and_a_path_written_to_leave_is_not(ct_task, tmp_path):
    from rog.data.check import check_dataset
    root = tmp_path / "linked"
    root.mkdir()
    shutil.copy(ct_task / "dataset.json", root)
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        if (ct_task / folder).is_dir():
            (root / folder).mkdir()
            for f in (ct_task / folder).iterdir():  # each file a link to a file outside the folder
                (root / folder / f.name).symlink_to(f.resolve())
    ds = load_dataset(root)
    assert len(ds.training) == len(load_dataset(ct_task).training) and check_dataset(root) == []
    assert all(c.images[0].is_symlink() for c in ds.training)


def test_an_nnunet_dataset_id_is_taken_where_a_folder_is(tmp_path, monkeypatch, capsys):
    from rog.cli import main
    from rog.data.synthetic import make_task
    raw = tmp_path / "nnUNet_raw"
    make_task(raw / "Dataset004_Synth", cases=2, test_cases=0, seed=3, size=(24, 28), layout="nnunet")
    monkeypatch.setenv("nnUNet_raw", str(raw))
    for given in ("4", "004", "Dataset004", "Dataset004_Synth"):
        assert load_dataset(given).root == (raw / "Dataset004_Synth").resolve(), given
    with pytest.raises(DatasetError, match="no dataset Dataset005_\\* under \\$nnUNet_raw"):
        load_dataset("5")
    assert main(["check", "4", "-q"]) == 0 and "no problems found" in capsys.readouterr().out
