"""nnU-Net v2's ignore label: parsed out of the classes, left out of the training loss, the
metrics and the attacks' losses and Dice; a dataset with one trains and evaluates without
learning it."""
import json
import shutil

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from rog.attacks import losses
from rog.attacks.apgd import APGD
from rog.attacks.threat import ThreatModel
from rog.checkpoint import load_checkpoint
from rog.cli import main
from rog.data.dataset import DatasetError, load_dataset
from rog.data.io import read_label, write_volume
from rog.evaluate.metrics import case_metrics, dice_batch, dice_per_class
from rog.plan import Plan
from rog.rundir import Workdir
from rog.train.loss import DiceCE


def _nnunet_with_ignore(src, root, ignore_value=3):
    """The MSD task `src` (background, organ, lesion) as an nnU-Net v2 dataset whose labels
    mark the first third of every volume (along its last axis) as "ignore"."""
    ds = load_dataset(src)
    (root / "imagesTr").mkdir(parents=True)
    for case in ds.training:
        shutil.copy(case.images[0], root / "imagesTr" / f"{case.name}_0000.nii.gz")
        label, geometry = read_label(case.label)
        label[..., : label.shape[2] // 3] = 3
        write_volume(root / "labelsTr" / f"{case.name}.nii.gz", label.astype(np.uint8), np.array(geometry.affine))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2, "ignore": ignore_value},
        "numTraining": len(ds.training), "file_ending": ".nii.gz"}))
    return root


def test_the_ignore_label_is_not_a_class_and_must_be_the_highest(ct_task, tmp_path):
    ds = load_dataset(_nnunet_with_ignore(ct_task, tmp_path / "D"))
    assert ds.labels == {0: "background", 1: "organ", 2: "lesion"} and ds.ignore_label == 3
    assert ds.num_classes == 3 and not ds.problems
    assert main(["check", str(tmp_path / "D")]) == 0  # label value 3 is declared
    with pytest.raises(DatasetError, match=r"'ignore' label must be the highest value \(3\), got 7"):
        load_dataset(_nnunet_with_ignore(ct_task, tmp_path / "E", ignore_value=7))


def test_the_loss_is_monais_dice_ce_on_the_scored_voxels_only():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 10, 8, 6, requires_grad=True)
    y = torch.randint(0, 3, (2, 1, 10, 8, 6))
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    assert torch.equal(DiceCE()(logits, y), reference(logits, y))  # nothing ignored: MONAI's, bit for bit
    ignored = torch.rand(2, 1, 10, 8, 6) < 0.3
    y_ignore = torch.where(ignored, 3, y)
    loss = DiceCE()(logits, y_ignore)
    # MONAI's loss on the scored voxels alone, laid out as one batch-wide column (Dice is batch-wide)
    keep = ~ignored[:, 0]
    column = logits.movedim(1, -1)[keep].T[None, :, :, None, None]
    np.testing.assert_allclose(loss.item(), reference(column, y[:, 0][keep][None, None, :, None, None]).item(),
                               rtol=1e-6)
    grad, = torch.autograd.grad(loss, logits)
    assert grad.movedim(1, -1)[ignored[:, 0]].abs().max() == 0  # the ignored voxels teach nothing
    assert DiceCE()(logits, torch.full_like(y, 3)).item() == 0.0  # a patch with nothing scored: no NaN


def test_metrics_do_not_score_the_ignored_voxels():
    ref = np.zeros((12, 12, 12), np.int16)
    ref[2:8, 2:8, 2:8] = 1
    ref[:, :, 10:] = 3  # ignored
    pred = np.where(ref == 3, 1, ref)  # wrong only where ignored
    assert dice_per_class(pred, ref, 3)[0] == 1.0
    assert float(dice_batch(torch.from_numpy(pred)[None], torch.from_numpy(ref)[None], 3)[0]) == 1.0
    m = case_metrics(pred, ref, 3, (1.0, 1.0, 1.0))
    assert m["dice"][0] == 1.0 and m["hd95"][0] == 0.0 and m["missed"] == [False, False]
    pred[2, 2, 2] = 0  # a wrong scored voxel still counts
    assert dice_per_class(pred, ref, 3)[0] < 1.0


@pytest.mark.parametrize("loss", [losses.ce, losses.dlr, losses.cospgd, losses.correct_margin,
                                  lambda z, y: losses.segpgd(z, y, 1, 4), lambda z, y: losses.dlr_targeted(z, y, (y + 1) % 3)])
def test_attack_losses_take_nothing_from_ignored_voxels(loss):
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    y = torch.randint(0, 3, (2, 6, 6, 6))
    ignored = torch.zeros_like(y, dtype=torch.bool)
    ignored[..., :2] = True
    value = loss(logits, torch.where(ignored, 3, y))
    assert value.shape == (2,) and torch.isfinite(value).all()
    grad, = torch.autograd.grad(value.sum(), logits)
    assert grad.movedim(1, -1)[ignored].abs().max() == 0
    assert grad.abs().max() > 0


def test_binary_margin_ratio_takes_nothing_from_ignored_voxels():
    logits = torch.randn(1, 2, 5, 5, 5, requires_grad=True)
    y = torch.randint(0, 2, (1, 5, 5, 5))
    y[..., 0] = 2
    grad, = torch.autograd.grad(losses.binary_margin_ratio(logits, y).sum(), logits)
    assert grad[..., 0].abs().max() == 0 and grad.abs().max() > 0


def test_an_attack_runs_on_labels_with_ignored_voxels_and_its_dice_leaves_them_out(segmenter3):
    from tests.trained import sphere_volumes
    model = segmenter3
    x, y = sphere_volumes(2, 16, 3, seed=9)
    y_ignore = y.clone()
    y_ignore[..., :4] = 3
    attack = APGD(model, ThreatModel(8), iters=3, loss="ce", num_classes=3)
    attack(x, y_ignore)
    with torch.no_grad():
        clean = dice_batch(model(x).argmax(1)[..., 4:], y[..., 4:], 3)
    np.testing.assert_allclose(attack.info["clean_dice"], clean.numpy(), rtol=1e-6)
    assert min(attack.info["dice"]) < min(attack.info["clean_dice"])  # and it attacks


def test_a_dataset_with_an_ignore_label_trains_and_evaluates_without_learning_it(ct_task, tmp_path, capsys):
    root = _nnunet_with_ignore(ct_task, tmp_path / "Dataset011_Ignore")
    wd = Workdir(tmp_path / "w")  # one dataset's work directory
    assert main(["train", str(root), "-w", str(wd.root), "--width", "4", "--epochs", "1",
                 "--iterations-per-epoch", "2", "--batch-size", "2", "--device", "cpu", "--no-postprocessing"]) == 0
    run = wd.run("rog")
    plan = Plan.load(run.plan)
    assert plan.num_classes == 3 and plan.ignore_label == 3
    head = [v for k, v in load_checkpoint(run.checkpoint("best"))["model"].items() if v.ndim == 5][-1]
    assert head.shape[0] == 3  # three outputs: the ignore label is no class the model learns
    capsys.readouterr()
    assert main(["predict", str(run.path), "-i", str(root / "imagesTr"), "-o", str(tmp_path / "p"),
                 "--device", "cpu", "--disable-tta"]) == 0
    pred = read_label(next((tmp_path / "p").glob("*.nii.gz")))[0]
    assert pred.max() < 3
    assert main(["evaluate", str(root / "labelsTr"), str(tmp_path / "p")]) == 0
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["num_classes"] == 3 and summary["class_names"] == ["organ", "lesion"]
    # the ignored third is not scored: each Dice is the Dice of the other voxels alone
    for case in summary["cases"]:
        label = read_label(root / "labelsTr" / f"{case['case']}.nii.gz")[0]
        p = read_label(tmp_path / "p" / f"{case['case']}.nii.gz")[0]
        scored = label != 3
        np.testing.assert_allclose(case["dice"], dice_per_class(p[scored], label[scored], 3))


def test_foreground_oversampling_never_centres_on_the_ignore_label():
    from rog.data.sampling import class_locations
    label = np.zeros((8, 8, 8), np.int8)
    label[1:3], label[5:] = 1, 3
    assert sorted(class_locations(label, ignore=3)) == [1]
    assert sorted(class_locations(label)) == [1, 3]  # without one, every value above 0 is a class
