"""nnU-Net v2 results folders as benchmark models: a folder built offline by nnU-Net's own
planner, a network from its plans saved in nnU-Net's checkpoint format."""
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rog.cli import main
from rog.infer.sliding_window import tile

nnunetv2 = pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed (scripts/setup.sh --test installs it)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from nnunet_model import add_configuration, add_folds, build  # noqa: E402 - the folder builders the benchmark uses too


@pytest.fixture(scope="module")
def nnunet_model(tmp_path_factory):
    """(model folder, raw dataset folder) of a 3d_fullres nnU-Net model of a CT task
    (`nnunet_model.build`): percentile clipping, anisotropic resampling slice by slice."""
    return build(tmp_path_factory.mktemp("nnunet"), narrower=4)


@pytest.fixture(scope="module")
def nnunet_mr(tmp_path_factory):
    """The same for skull-stripped two-channel MR: cropped to the non-zero box, z-scored inside
    the non-zero mask, resampled in 3-D."""
    return build(tmp_path_factory.mktemp("nnunet_mr"), size=(28, 34), kind="mri", narrower=4)


def _predictor(model_dir, mirroring=True, folds=(0,)):
    """nnU-Net's predictor with its defaults (`folds` None: every fold it finds)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    theirs = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                             perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    theirs.initialize_from_trained_model_folder(str(model_dir), use_folds=folds)
    return theirs


@pytest.fixture(scope="module")
def nnunet_folds(nnunet_model, tmp_path_factory):
    """The CT model folder with five folds: fold 0's weights and four variations of them (as
    five trainings would differ), plus a fold_all that nnU-Net's default leaves out. Mirroring
    is allowed along one axis (2 passes per window, not 8: the test's cost)."""
    import shutil
    model_dir, raw = nnunet_model
    folder = tmp_path_factory.mktemp("folds") / "Dataset001_Synth" / model_dir.name
    shutil.copytree(model_dir, folder)
    add_folds(folder, (1, 2, 3, 4, "all"), mirror_axes=(2,))
    return folder, raw


def _write_like(x: np.ndarray, reference: Path, out: Path) -> Path:
    """x in nnU-Net's (SimpleITK's) axis order written as a NIfTI with `reference`'s geometry."""
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(x.astype(np.float32))
    image.CopyInformation(sitk.ReadImage(str(reference)))
    sitk.WriteImage(image, str(out))
    return out


@pytest.mark.parametrize("which", ["ct", "mr"])
def test_the_attacked_function_is_nnunets_predictor_on_the_perturbed_scan(nnunet_model, nnunet_mr, which, tmp_path):
    from rog.external.nnunet import load_nnunet
    model_dir, raw = nnunet_model if which == "ct" else nnunet_mr
    # mirroring on the CT model, as `rog attack` runs by default; the MR model without (--disable-tta)
    ours, theirs = load_nnunet(model_dir, [0], tta=which == "ct"), _predictor(model_dir, mirroring=which == "ct")
    reader = theirs.plans_manager.image_reader_writer_class()
    rng = np.random.default_rng(0)
    # one CT case (mirroring makes it the slow one), both MR cases
    for case in ours.load_cases(raw / "imagesTs", raw / "labelsTs", max_cases=1 if which == "ct" else None):
        files = sorted((raw / "imagesTs").glob(f"{case.name}_*.nii.gz"))
        model = case.around(tile(ours.network, ours.patch, **ours.window))
        span = case.hi - case.lo
        noise = torch.from_numpy(rng.choice([-8 / 255, 8 / 255], size=case.x.shape)).float()
        for x in (case.x, torch.minimum(torch.maximum(case.x + noise * span, case.lo), case.hi)):
            written = [_write_like(x[0, c].numpy(), f, tmp_path / f.name) for c, f in enumerate(files)]
            data, props = reader.read_images([str(f) for f in written])
            assert np.array_equal(data, x[0].numpy())
            seg, probabilities = theirs.predict_single_npy_array(data, props, None, None, True)
            with torch.no_grad():
                mine = model(x).softmax(1)[0].numpy()
            assert len(np.unique(seg)) == ours.num_classes  # every class drawn: boundaries to agree on
            # nnU-Net sums the windows in half precision, rog's replica too: agreement to that rounding
            diff = np.abs(mine - probabilities).max()
            agreement = (mine.argmax(0) == seg).mean()
            print(f"{which} {case.name}: probabilities within {diff:.1e}, labels {agreement:.5f}")  # docs/benchmarks.md
            assert diff < 5e-3 and agreement >= 0.999, (case.name, diff, agreement)
        if which == "mr":  # the perturbation made background voxels non-zero: nnU-Net's crop box grew
            assert (case.x == 0).any() and (x != 0).sum() > (case.x != 0).sum()


def _probabilities(predictor, previous=None):
    """nnU-Net's (label map, probabilities `[K or R, ...]`) of a scan (data, properties as its
    reader gives them) by `predictor`; on the segmentation of the predictor `previous` (a
    cascade's first stage), as float32 `[1, ...]`, how nnU-Net's reader reads the file that
    stage wrote."""
    def predict(data, props):
        seg = previous.predict_single_npy_array(data, copy.deepcopy(props), None, None, False) if previous else None
        seg, probabilities = predictor.predict_single_npy_array(
            data, copy.deepcopy(props), None if seg is None else seg[None].astype(np.float32), None, True)
        return seg, probabilities.astype(np.float32)
    return predict


def _against_predictor(ours, predict, raw: Path, tmp_path: Path, seed: int, what: str):
    """One test case of `raw`, perturbed by +-8/255 of its range, through rog's attacked function
    of `ours` and through nnU-Net (`predict(data, properties)`, its probabilities, on the scan
    written as NIfTI and read back by nnU-Net's reader; a list of them: the probabilities
    averaged, as `nnUNetv2_ensemble` does); asserts that they agree, and returns the input
    gradient of CE."""
    predicts = predict if isinstance(predict, list) else [predict]
    reader = ours.plans.image_reader_writer_class()
    (case,) = ours.load_cases(raw / "imagesTs", raw / "labelsTs", max_cases=1)
    model = case.around(ours.whole())
    noise = torch.from_numpy(np.random.default_rng(seed).choice([-8 / 255, 8 / 255], size=case.x.shape)).float()
    x = torch.minimum(torch.maximum(case.x + noise * (case.hi - case.lo), case.lo), case.hi)
    files = sorted((raw / "imagesTs").glob(f"{case.name}_*.nii.gz"))
    written = [_write_like(x[0, c].numpy(), f, tmp_path / f.name) for c, f in enumerate(files)]
    data, props = reader.read_images([str(f) for f in written])
    outputs = [p(data, props) for p in predicts]
    seg, probabilities = outputs[0]
    if len(outputs) > 1:
        probabilities = sum(p for _, p in outputs) / len(outputs)
        seg = probabilities.argmax(0)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    mine = logits.detach().softmax(1)[0].numpy()
    agreement = (mine.argmax(0) == seg).mean()
    # a region-based model's probabilities are its regions' sigmoids: only the label maps compare
    regions = len(probabilities) != ours.num_classes
    diff = 0.0 if regions else np.abs(mine - probabilities).max()
    print(f"{what}, {case.name}: " + ("" if regions else f"probabilities within {diff:.1e}, ")  # docs/benchmarks.md
          + f"labels {agreement:.5f}")
    assert len(np.unique(seg)) == ours.num_classes and diff < 5e-3 and agreement >= 0.999
    grad = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, case.y.long()), xg)[0]
    assert bool(torch.isfinite(grad).all())
    return grad


def test_the_default_deployment_is_nnunets_five_fold_mirrored_ensemble(nnunet_folds, tmp_path):
    # nnUNetv2_predict's defaults: every fold found (fold_all left out), mirroring on; rog's
    # defaults load the same, and the attacked function is that ensemble on a perturbed scan
    from rog.external.nnunet import load_nnunet
    model_dir, raw = nnunet_folds
    ours, theirs = load_nnunet(model_dir), _predictor(model_dir, mirroring=True, folds=None)
    assert ours.folds == [0, 1, 2, 3, 4] and len(theirs.list_of_parameters) == 5
    assert ours.window["mirror_axes"] == (2,) and ours.name.endswith("folds 0,1,2,3,4")
    assert ours.inference()["folds"] == [0, 1, 2, 3, 4] and "averaged" in ours.inference()["text"]
    grad = _against_predictor(ours, _probabilities(theirs), raw, tmp_path, 1, "5 folds, mirrored")
    # the ensemble's gradient reaches the scan (zero where CT's clipping holds a voxel, the air,
    # and on the slices the nearest-neighbour resampling along z skips); that it is the folds'
    # mean gradient is `FoldMean`'s test in test_sliding_window.py
    assert float((grad != 0).float().mean()) > 0.2


def test_a_2d_model_is_nnunets_prediction_of_the_perturbed_scan(nnunet_model, tmp_path):
    # the usual choice for anisotropic data: each slice tiled in-plane, its windows one slice
    # deep in rog's tiling, mirrored over the slice's two axes
    from rog.external.nnunet import Slicewise, load_nnunet
    model_dir, raw = nnunet_model
    folder = add_configuration(_copy(model_dir, tmp_path), raw, "2d")
    ours, theirs = load_nnunet(folder, [0]), _predictor(folder)
    assert isinstance(ours.network, Slicewise) and ours.patch[0] == 1
    assert ours.window["mirror_axes"] == (1, 2) and len(theirs.configuration_manager.patch_size) == 2
    grad = _against_predictor(ours, _probabilities(theirs), raw, tmp_path, 2, "2d")
    assert float((grad != 0).float().mean()) > 0.2  # the gradient reaches the scan


def test_a_region_based_model_is_nnunets_label_map_of_the_perturbed_scan(nnunet_model, tmp_path, capsys,
                                                                        monkeypatch):
    # region-based training (BraTS's kind): one sigmoid per region, nnU-Net's label the last
    # region on in regions_class_order; rog's label scores have that label map as argmax
    from batchgenerators.utilities.file_and_folder_operations import save_pickle
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
    from rog.external.nnunet import load_nnunet
    from rog.external.nnunet_scan import label_scores
    model_dir, raw = nnunet_model
    source = _copy(model_dir, tmp_path)
    dataset = json.loads((source / "dataset.json").read_text())
    dataset.update(labels={"background": 0, "organ": [1, 2], "lesion": 2}, regions_class_order=[1, 2])
    (source / "dataset.json").write_text(json.dumps(dataset))
    folder = add_configuration(source, raw, "3d_fullres", into=tmp_path / "Dataset002_Regions" / source.name)
    ours, theirs = load_nnunet(folder, [0], tta=False), _predictor(folder, mirroring=False)
    assert ours.class_names == ["organ", "lesion"] and ours.deployment.regions == (1, 2)
    assert ours.num_classes == 3 and ours.num_classes.members == ((1, 2), (2,))
    grad = _against_predictor(ours, _probabilities(theirs), raw, tmp_path, 4, "regions")
    assert float((grad != 0).float().mean()) > 0.2
    # the command: Dice per region after nnU-Net's post-processing of a region (1, 2), as
    # nnU-Net's evaluation of its own predictor's output post-processed by its own function
    post = ([remove_all_but_largest_component_from_segmentation], [{"labels_or_regions": (1, 2)}])
    (folder / "crossval_results_folds_0").mkdir()
    save_pickle(post, folder / "crossval_results_folds_0" / "postprocessing.pkl")
    monkeypatch.setattr("rog.bench.runner.LARGE_EPS_ITERS", 1)  # the check's cost; it is tested elsewhere
    out = tmp_path / "att"
    capsys.readouterr()
    main(["attack", "--nnunet", str(folder), "--folds", "0", "--disable-tta", "--images", str(raw / "imagesTs"),
          "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "4", "-o", str(out),
          "--max-cases", "1"])
    assert "Dice per region (organ (1, 2), lesion (2,)), the attacks' losses on regions" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    assert doc["num_classes"] == 3 and doc["meta"]["class_names"] == ["organ", "lesion"]
    (rec,) = [r for r in doc["records"] if not r.get("skipped")]
    assert rec["in_ball"] and rec["dice"] < doc["clean"][rec["case"]]["dice"]  # the region loss lowers region Dice
    _clean_dice_is_nnunets_own_evaluation(folder, raw, doc["clean"], tmp_path / "theirs", post, [(1, 2), (2,)])
    # the rule itself, on every order of three regions: argmax = nnU-Net's label map
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    r = torch.randn(1, 3, 9, 10, 11, generator=torch.Generator().manual_seed(0))
    for order in ([1, 2, 3], [3, 1, 2], [2, 3, 1]):
        manager = LabelManager({"background": 0, "a": [1, 2, 3], "b": [2, 3], "c": 3}, order)
        theirs = manager.convert_probabilities_to_segmentation(torch.sigmoid(r[0]))
        assert torch.equal(label_scores(r, tuple(order)).argmax(1)[0], theirs.long())


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    """`model_dir` copied into tmp_path/DATASET/, where sibling configurations may be added."""
    import shutil
    folder = tmp_path / model_dir.parent.name / model_dir.name
    shutil.copytree(model_dir, folder)
    return folder


def test_a_cascade_is_nnunets_prediction_on_its_low_resolution_stages_segmentation(nnunet_model, tmp_path,
                                                                                   monkeypatch):
    # 3d_lowres (the scan at twice the spacing, the logits back), then 3d_cascade_fullres on
    # its segmentation as nnUNetv2_predict -prev_stage_predictions hands it on
    from rog.external.nnunet import load_nnunet
    from rog.external.nnunet_multi import NnUNetCascade
    model_dir, raw = nnunet_model
    fullres = json.loads((model_dir / "plans.json").read_text())["configurations"]["3d_fullres"]
    # both stages at nnU-Net's own widths (32 features, doubling, at most 320), not the narrowed
    # fixture's: a near-tie in the first stage's label map flips an input voxel of the second, and
    # the narrow random networks have many more near-ties than float rounding should decide
    wide = copy.deepcopy(fullres["architecture"])
    stages = len(wide["arch_kwargs"]["features_per_stage"])
    wide["arch_kwargs"]["features_per_stage"] = [min(32 * 2 ** i, 320) for i in range(stages)]
    planned = {"3d_lowres": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_lowres",
                             "spacing": [2 * s for s in fullres["spacing"]], "next_stage": "3d_cascade_fullres",
                             "architecture": wide},
               "3d_cascade_fullres": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_fullres",
                                      "previous_stage": "3d_lowres", "architecture": wide}}
    folder = _copy(model_dir, tmp_path)
    low = add_configuration(folder, raw, "3d_lowres", planned=planned)
    full = add_configuration(folder, raw, "3d_cascade_fullres", seed=2, planned=planned)
    ours = load_nnunet(full, [0], tta=False)  # mirroring off: 8 passes per window would be the test's cost
    assert isinstance(ours, NnUNetCascade) and ours.folders == [low, full]
    assert "as nnUNetv2_predict of 3d_cascade_fullres (fold 0" in ours.inference()["text"]
    assert "on the segmentation of 3d_lowres (fold 0" in ours.inference()["text"]
    predict = _probabilities(_predictor(full, mirroring=False), previous=_predictor(low, mirroring=False))
    (case,) = ours.load_cases(raw / "imagesTs", raw / "labelsTs", max_cases=1)
    with torch.no_grad():  # the first stage draws every class: its segmentation is an input worth agreeing on
        first = ours.members[0].around(case.spacing)(ours.network[0])(case.x).argmax(1)
    assert len(torch.unique(first)) == ours.num_classes
    grad = _against_predictor(ours, predict, raw, tmp_path, 2, "cascade")
    # the gradient passes the argmax between the stages through the first stage's probabilities:
    # with the label map held constant, the gradient differs
    monkeypatch.setattr("rog.external.nnunet_scan.straight_through", lambda exact, value: value)
    held = _against_predictor(ours, predict, raw, tmp_path, 2, "cascade, previous stage held")
    assert float((grad != 0).float().mean()) > 0.2 and not torch.allclose(grad, held)
    # a cascade stage without its previous stage's folder is one line naming it
    import shutil
    shutil.rmtree(low)
    with pytest.raises(Exception, match="nnUNetTrainer__nnUNetPlans__3d_lowres: missing: .* cascade stage"):
        load_nnunet(full, [0])


def test_an_ensemble_of_configurations_is_nnunets_ensemble_of_their_predictions(nnunet_model, tmp_path, capsys,
                                                                                 monkeypatch):
    # nnUNetv2_ensemble of a 3d_fullres and a 2d model: each predicted as nnUNetv2_predict does,
    # the probabilities averaged, the argmax, then the ensemble's own post-processing
    from batchgenerators.utilities.file_and_folder_operations import save_pickle
    from nnunetv2.ensembling.ensemble import merge_files
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
    from rog.external.nnunet_multi import load_nnunet_ensemble
    model_dir, raw = nnunet_model
    folder = _copy(model_dir, tmp_path)
    dataset = folder.parent
    dirs = [folder, add_configuration(folder, raw, "2d", seed=1)]
    ours = load_nnunet_ensemble(dirs, [0], tta=False, postprocessing=None)
    grad = _against_predictor(ours, [_probabilities(_predictor(d, mirroring=False)) for d in dirs], raw, tmp_path, 3,
                              "ensemble")
    assert float((grad != 0).float().mean()) > 0.2
    # the command: the ensemble's post-processing found where nnUNetv2_find_best_configuration
    # writes it, the first line saying what runs, clean Dice = nnU-Net's tools chained
    post = ([remove_all_but_largest_component_from_segmentation], [{"labels_or_regions": 1}])
    found = dataset / "ensembles" / f"ensemble___{dirs[0].name}___{dirs[1].name}___0"
    found.mkdir(parents=True)
    save_pickle(post, found / "postprocessing.pkl")
    out = tmp_path / "att"
    capsys.readouterr()
    monkeypatch.setattr("rog.bench.runner.LARGE_EPS_ITERS", 1)  # the check's cost; it is tested elsewhere
    main(["attack", "--nnunet", *map(str, dirs), "--folds", "0", "--disable-tta", "--images", str(raw / "imagesTs"),
          "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "1", "-o", str(out),
          "--max-cases", "1"])
    said = capsys.readouterr().out.splitlines()
    assert "as nnUNetv2_ensemble of 3d_fullres (fold 0, mirroring off" in said[0] and "and 2d (fold 0" in said[0]
    assert "probabilities averaged; then nnU-Net's post-processing (largest component of 1)" in said[0]
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["deployment"]["postprocessing"] == str(found / "postprocessing.pkl")
    assert [c["folds"] for c in doc["meta"]["deployment"]["configurations"]] == [[0], [0]]
    recs = [r for r in doc["records"] if not r.get("skipped")]
    assert recs and all(r["in_ball"] and r["dice"] <= doc["clean"][r["case"]]["dice"] + 1e-9 for r in recs)
    # nnU-Net's chain in one process: each configuration's probabilities as nnUNetv2_predict
    # --save_probabilities writes them, merged by nnUNetv2_ensemble's own `merge_files`
    (name,) = doc["clean"]
    theirs = _predictor(dirs[0], mirroring=False)
    reader = theirs.plans_manager.image_reader_writer_class()
    data, props = reader.read_images([str(raw / "imagesTs" / f"{name}_0000.nii.gz")])
    saved = []
    for d in dirs:
        probabilities = _probabilities(_predictor(d, mirroring=False))(data, props)[1]
        saved.append(str(tmp_path / f"{d.name}.npz"))
        np.savez(saved[-1], probabilities=probabilities)
        save_pickle(props, saved[-1][:-4] + ".pkl")
    (tmp_path / "theirs").mkdir()
    merge_files(saved, str(tmp_path / "theirs" / name), ".nii.gz", reader, theirs.label_manager)
    _clean_dice_is_nnunets_own_evaluation(None, raw, doc["clean"], tmp_path / "theirs", post)


def test_trainers_are_found_without_importing_every_trainer_module(nnunet_model, tmp_path, monkeypatch):
    # nnU-Net's own lookup imports every trainer module, Primus's among them (timm, then
    # torchvision); rog imports the one that defines the trainer
    from rog.external.model import ExternalError
    from rog.external.nnunet import trainer_class
    primus = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"
    monkeypatch.delitem(sys.modules, primus, raising=False)
    ckpt = tmp_path / "checkpoint_final.pth"
    found = trainer_class("nnUNetTrainerNoMirroring", ckpt)
    assert found.__name__ == "nnUNetTrainerNoMirroring" and primus not in sys.modules
    with pytest.raises(ExternalError, match="trainer nnUNetTrainerNoSuch is not among nnU-Net's trainers"):
        trainer_class("nnUNetTrainerNoSuch", ckpt)
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "mine.py").write_text("import package_that_is_not_installed\n\nclass MyTrainer:\n    pass\n")
    (ext / "good.py").write_text("from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
                                 "class GoodTrainer(nnUNetTrainer):\n    pass\n")
    monkeypatch.setenv("nnUNet_extTrainer", str(ext))
    assert trainer_class("GoodTrainer", ckpt).__name__ == "GoodTrainer"
    with pytest.raises(ExternalError, match="module mine cannot be imported .*package_that_is_not_installed"):
        trainer_class("MyTrainer", ckpt)


def test_torchvision_is_absent_or_loads():
    # the set-up never leaves a torchvision built for another torch (timm imports it)
    import importlib.util
    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401 - the import is the test
        assert hasattr(torch.ops.torchvision, "nms")


def test_attack_lowers_dice_stays_in_the_raw_ball_and_resumes(nnunet_model, tmp_path, capsys):
    model_dir, raw = nnunet_model
    out = tmp_path / "att"
    args = ["attack", "--nnunet", str(model_dir), "--fold", "0", "--images", str(raw / "imagesTs"),
            "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "2", "-o", str(out),
            "--save-volumes", "--disable-tta"]
    code = main(args)
    doc = json.loads((out / "results.json").read_text())
    said = capsys.readouterr().out.splitlines()
    assert "as nnUNetv2_predict: fold 0, mirroring off, tile step 0.5" in said[0]  # the first line says what runs
    assert doc["meta"]["deployment"]["folds"] == [0] and doc["meta"]["deployment"]["mirror_axes"] is None
    # a briefly trained toy model may fail the large-eps check: the exit code says so
    failed = any(c["status"] == "fail" for c in doc["checks"])
    assert code == (1 if failed else 0)
    assert doc["threat"]["scale"].startswith("/255 of each channel")
    assert doc["config"]["scope"] == "volume" and doc["meta"]["model"]["parameters"] > 0
    recs = [r for r in doc["records"] if not r.get("skipped")]
    assert len(recs) == 2 and all(r["in_ball"] and r["in_box"] and r["finite"] for r in recs)
    clean = {c: v["dice"] for c, v in doc["clean"].items()}
    assert all(r["dice"] <= clean[r["case"]] for r in recs) and any(r["dice"] < clean[r["case"]] for r in recs)
    assert {c["name"]: c["status"] for c in doc["checks"]}["ball, box and finite"] == "pass"
    _clean_dice_is_nnunets_own_evaluation(model_dir, raw, doc["clean"], tmp_path / "theirs")
    _saved_volumes_are_on_the_scan(raw, out, recs, 8)
    capsys.readouterr()
    before = (out / "results.json").read_bytes()
    assert main(args) == code  # resume: every record exists, nothing is recomputed
    assert json.loads((out / "results.json").read_text())["records"] == doc["records"]
    assert before  # the finished results were kept
    # the report lists the model with its size and curves, as it does rog's own
    assert main(["report", str(out), "-o", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    (name, entry), = summary["models"].items()
    assert name.startswith("nnU-Net Dataset001_Synth/nnUNetTrainer__nnUNetPlans__3d_fullres fold 0")
    assert entry["parameters"] > 1000 and entry["gflops"] > 0 and "8.0" in entry["eps"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "nnU-Net Dataset001_Synth" in html and "perturbation on: the scan as stored" in html
    assert "Volumes that broke the models" in html and "eps8.0.nii.gz" in html  # --save-volumes, linked


def test_worst_case_artefacts_run_on_the_nnunet_model_in_its_raw_intensities(nnunet_model, tmp_path, capsys):
    model_dir, raw = nnunet_model
    out = tmp_path / "art"
    code = main(["artefact", "--nnunet", str(model_dir), "--fold", "0", "--disable-tta", "--images", str(raw / "imagesTs"),
                 "--labels", str(raw / "labelsTs"), "--artefacts", "bias", "--severities", "3", "--draws", "2",
                 "--iterations", "2", "--restarts", "1", "-o", str(out)])
    doc = json.loads((out / "results.json").read_text())
    assert code == (1 if any(c["status"] == "fail" for c in doc["checks"]) else 0)
    assert doc["kind"] == "artefact" and doc["meta"]["label"].startswith("nnU-Net Dataset001_Synth")
    clean = {c: v["dice"] for c, v in doc["clean"].items()}
    assert len(doc["records"]) == len(clean) == 2
    for r in doc["records"]:  # the worst case never above clean, its parameters in bound, the input finite
        assert r["dice"] <= clean[r["case"]] + 1e-9 and r["in_bound"] and r["finite"]
        assert len(r["parameters"]["coefficients"]) == 20


def _clean_dice_is_nnunets_own_evaluation(model_dir, raw, clean: dict, out: Path, post=None,
                                          scored=(1, 2)) -> None:
    """The results' clean Dice per case and class equal nnU-Net's evaluation of its own
    predictor's output on the same files (without mirroring, as `rog attack --disable-tta`),
    post-processed by nnU-Net's `apply_postprocessing` with `post` ((functions, kwargs)) if given;
    `model_dir` None: the predictions are in `out` already (nnUNetv2_ensemble's). `scored`: the
    labels or regions nnU-Net's evaluation scores."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    if model_dir is not None:
        _predictor(model_dir, mirroring=False).predict_from_files(
            str(raw / "imagesTs"), str(out), save_probabilities=False, overwrite=True, num_processes_preprocessing=1,
            num_processes_segmentation_export=1)
    rw = SimpleITKIO()  # the reader nnU-Net planned for these NIfTI files
    if post is not None:
        from nnunetv2.postprocessing.remove_connected_components import load_postprocess_save
        for name in clean:
            load_postprocess_save(str(out / f"{name}.nii.gz"), str(out / f"{name}.nii.gz"), rw, *post)
    for name, score in clean.items():
        metrics = compute_metrics(str(raw / "labelsTs" / f"{name}.nii.gz"), str(out / f"{name}.nii.gz"), rw,
                                  list(scored), None)["metrics"]
        print(f"{name}: Dice rog {score['dice_per_class']}, nnU-Net {[metrics[k]['Dice'] for k in scored]}")
        for i, k in enumerate(scored):
            assert abs(score["dice_per_class"][i] - metrics[k]["Dice"]) <= 1e-3, (name, k)


def test_nnunets_postprocessing_is_applied_before_dice(nnunet_model, tmp_path, capsys, monkeypatch):
    # the post-processing nnUNetv2_find_best_configuration writes (pickle and json) is found
    # beside the folds and applied: the clean Dice is nnU-Net's after its own post-processing
    monkeypatch.setattr("rog.bench.runner.LARGE_EPS_ITERS", 1)  # the check's cost; it is tested elsewhere
    import shutil
    from batchgenerators.utilities.file_and_folder_operations import save_pickle
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
    model_dir, raw = nnunet_model
    folder = tmp_path / "Dataset001_Synth" / model_dir.name
    shutil.copytree(model_dir, folder)
    post = ([remove_all_but_largest_component_from_segmentation] * 2, [{"labels_or_regions": 1}, {"labels_or_regions": 2}])
    (folder / "crossval_results_folds_0").mkdir()
    save_pickle(post, folder / "crossval_results_folds_0" / "postprocessing.pkl")
    results = {}
    for which in ("pkl", "none"):
        out = tmp_path / which
        extra = ["--postprocessing", "none"] if which == "none" else []
        main(["attack", "--nnunet", str(folder), "--folds", "0", "--disable-tta", "--images", str(raw / "imagesTs"),
              "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "1", "-o", str(out),
              *extra])
        results[which] = json.loads((out / "results.json").read_text())
    said = capsys.readouterr().out
    assert "then nnU-Net's post-processing (largest component of 1; largest component of 2)" in said
    deployment = results["pkl"]["meta"]["deployment"]
    assert deployment["postprocessing"].endswith("crossval_results_folds_0/postprocessing.pkl")
    assert results["none"]["meta"]["deployment"]["postprocessing"] is None
    assert results["pkl"]["clean"] != results["none"]["clean"]  # it acted on this model's scattered labels
    _clean_dice_is_nnunets_own_evaluation(folder, raw, results["pkl"]["clean"], tmp_path / "theirs", post)
    recs = [r for r in results["pkl"]["records"] if not r.get("skipped")]
    assert all(r["in_ball"] and r["dice"] <= results["pkl"]["clean"][r["case"]]["dice"] + 1e-9 for r in recs)
    # results of one deployment are never continued by another (same weights, no post-processing)
    before = (tmp_path / "pkl" / "results.json").read_bytes()
    capsys.readouterr()
    code = main(["attack", "--nnunet", str(folder), "--folds", "0", "--disable-tta", "--images", str(raw / "imagesTs"),
                 "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "1",
                 "-o", str(tmp_path / "pkl"), "--postprocessing", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "another deployment of the model" in err[-1]
    assert (tmp_path / "pkl" / "results.json").read_bytes() == before


def test_a_skull_stripped_scans_zero_background_is_left_unperturbed(nnunet_mr, tmp_path, capsys):
    import nibabel as nib
    model_dir, raw = nnunet_mr
    out = tmp_path / "att"
    common = ["attack", "--nnunet", str(model_dir), "--folds", "0", "--disable-tta", "--images", str(raw / "imagesTs"),
              "--labels", str(raw / "labelsTs"), "--eps", "8", "--attacks", "apgd-ce", "--iterations", "1",
              "--max-cases", "1", "--save-volumes"]
    main([*common, "-o", str(out)])
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["deployment"]["background_fixed"] and "left unperturbed" in capsys.readouterr().out
    (rec,) = [r for r in doc["records"] if not r.get("skipped")]
    folder = out / "volumes" / rec["case"]
    clean = nib.load(str(folder / "clean.nii.gz")).get_fdata()  # [X, Y, Z, C]: the two channels
    adv = nib.load(str(folder / "eps8.0.nii.gz")).get_fdata()
    zero = (clean == 0).all(-1)
    assert clean.shape[-1] == 2 and zero.any() and (adv[zero] == 0).all()
    assert (adv != clean).any()  # inside the head the attack acted
    # a corruption's noise in the background is saved as the model saw it: not there
    main(["corrupt", *common[1:10], "--max-cases", "1", "--save-volumes", "--corruptions", "noise", "--severities", "3",
          "-o", str(tmp_path / "cor")])
    noisy = nib.load(str(tmp_path / "cor" / "volumes" / rec["case"] / "noise_s3.nii.gz")).get_fdata()
    assert (noisy[zero] == 0).all() and (noisy[~zero] != clean[~zero]).any()
    main([*common, "-o", str(tmp_path / "free"), "--perturb-background"])
    assert not json.loads((tmp_path / "free" / "results.json").read_text())["meta"]["deployment"]["background_fixed"]


def test_a_postprocessing_pickle_naming_another_callable_is_refused(nnunet_model, tmp_path, capsys):
    import os
    import pickle
    import shutil
    model_dir, raw = nnunet_model
    folder = tmp_path / "Dataset001_Synth" / model_dir.name
    shutil.copytree(model_dir, folder)
    (folder / "crossval_results_folds_0").mkdir()
    (folder / "crossval_results_folds_0" / "postprocessing.pkl").write_bytes(pickle.dumps(([os.system], [{}])))
    out = tmp_path / "out"
    code = main(["attack", "--nnunet", str(folder), "--folds", "0", "--images", str(raw / "imagesTs"), "--labels",
                 str(raw / "labelsTs"), "--eps", "8", "--attacks", "pgd", "--iterations", "1", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "postprocessing.pkl: not a readable nnU-Net postprocessing.pkl" in err[0]
    assert "system is not one of nnU-Net's post-processing functions" in err[0] and not out.exists()


def _saved_volumes_are_on_the_scan(raw: Path, out: Path, recs: list, eps: float) -> None:
    """--save-volumes: the worst attacked scan opens with SimpleITK on the scan's own grid,
    within the ball and box of the scan's raw range; the clean one is the scan itself."""
    import SimpleITK as sitk
    for r in recs:
        scan = sitk.ReadImage(str(raw / "imagesTs" / f"{r['case']}_0000.nii.gz"))
        folder = out / "volumes" / r["case"]
        for name in ("clean", f"eps{eps:.1f}", f"pred_eps{eps:.1f}"):
            image = sitk.ReadImage(str(folder / f"{name}.nii.gz"))
            assert image.GetSize() == scan.GetSize() and image.GetSpacing() == pytest.approx(scan.GetSpacing())
            assert image.GetOrigin() == pytest.approx(scan.GetOrigin())
            assert image.GetDirection() == pytest.approx(scan.GetDirection())
        x = sitk.GetArrayFromImage(scan).astype(np.float32)
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "clean.nii.gz"))), x)
        adv = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"eps{eps:.1f}.nii.gz")))
        delta = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"eps{eps:.1f}_delta.nii.gz")))
        radius = eps / 255 * (x.max() - x.min())
        assert 0 < np.abs(adv - x).max() <= radius * (1 + 1e-5) and np.allclose(delta, adv - x, atol=1e-3)
        slack = 1e-6 * (x.max() - x.min())  # float32 rounding of x + delta, as the records' in_box allows
        assert adv.min() >= x.min() - slack and adv.max() <= x.max() + slack


def test_cases_are_the_scans_as_stored(nnunet_model):
    import SimpleITK as sitk
    from rog.external.nnunet import load_nnunet
    model_dir, raw = nnunet_model
    model = load_nnunet(model_dir, [0])
    (case,) = model.load_cases(raw / "imagesTs", raw / "labelsTs", ["synthct_004"])
    image = sitk.ReadImage(str(raw / "imagesTs" / "synthct_004_0000.nii.gz"))
    assert np.array_equal(case.x[0, 0].numpy(), sitk.GetArrayFromImage(image).astype(np.float32))
    assert case.spacing == list(image.GetSpacing()[::-1])  # the reader's axis order, as its array
    assert case.lo.min() <= -900 and case.hi.max() > 300  # Hounsfield units: air and spine
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTs" / "synthct_004.nii.gz")))
    assert np.array_equal(case.y[0].numpy(), label)


@pytest.mark.parametrize("problem", ["not_a_model", "missing_fold", "channels", "reader", "preprocessor", "ignore"])
def test_bad_input_is_one_line_and_writes_nothing(nnunet_model, tmp_path, capsys, problem):
    import shutil
    model_dir, raw = nnunet_model
    images, folder, fold, extra = raw / "imagesTs", model_dir, "0", []
    if problem == "not_a_model":
        folder = raw
    elif problem == "missing_fold":
        fold = "3"
    elif problem == "reader":  # --save-volumes with a reader whose voxel order rog does not know
        folder = tmp_path / "model"
        shutil.copytree(model_dir, folder)
        plans = json.loads((folder / "plans.json").read_text())
        (folder / "plans.json").write_text(json.dumps({**plans, "image_reader_writer": "NibabelIO"}))
        extra = ["--save-volumes"]
    elif problem == "preprocessor":  # a custom preprocessor
        folder = tmp_path / "model"
        shutil.copytree(model_dir, folder)
        plans = json.loads((folder / "plans.json").read_text())
        plans["configurations"]["3d_fullres"]["preprocessor_name"] = "MyPreprocessor"
        (folder / "plans.json").write_text(json.dumps(plans))
    elif problem == "ignore":  # an ignore label (sparse annotations): not yet
        folder = tmp_path / "model"
        shutil.copytree(model_dir, folder)
        dataset = json.loads((folder / "dataset.json").read_text())
        dataset["labels"]["ignore"] = 3
        (folder / "dataset.json").write_text(json.dumps(dataset))
    else:  # a second channel the model does not take
        images = tmp_path / "images"
        images.mkdir()
        for f in (raw / "imagesTs").iterdir():
            (images / f.name).write_bytes(f.read_bytes())
            (images / f.name.replace("_0000", "_0001")).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    code = main(["attack", "--nnunet", str(folder), "--fold", fold, "--images", str(images), "--labels",
                 str(raw / "labelsTs"), "--eps", "8", "--attacks", "pgd", "--iters", "1", "-o", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    expected = {"not_a_model": "not an nnU-Net model folder", "missing_fold": "fold_3/checkpoint_final.pth: missing",
                "channels": "more channels than the model's 1",
                "reader": "--save-volumes: nnU-Net reads this dataset with NibabelIO",
                "preprocessor": "preprocessor MyPreprocessor: rog reproduces nnU-Net's DefaultPreprocessor only",
                "ignore": "nnU-Net models with an ignore label are not supported yet"}[problem]
    assert expected in err[0], err[0]
    assert not (out / "results.json").exists()
