"""nnU-Net's inference as one differentiable function of the scan: its resampling reproduced
in torch, and the whole pipeline's input gradient against finite differences (no model
folder needed; the end-to-end agreement with nnU-Net's predictor is in test_nnunet.py)."""
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed (scripts/setup.sh --test installs it)")

from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape  # noqa: E402

from rog.external.nnunet_scan import OUTSIDE, ChannelNorm, Deployment, ScanPipeline  # noqa: E402
from rog.infer.resample import SUPPORTED, nnunet_resampling  # noqa: E402

DATA = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
LOGITS = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}


@pytest.mark.parametrize("shape,new,spacing,new_spacing,kwargs", [
    ((11, 17, 9), (14, 13, 12), (1.1, 0.9, 1.0), (0.85, 1.2, 0.75), DATA),  # 3-D cubic spline
    ((7, 19, 16), (12, 23, 13), (2.5, 0.8, 0.8), (1.5, 0.66, 1.0), DATA),  # anisotropic: slices, then nearest in z
    ((12, 23, 13), (7, 19, 16), (1.5, 0.66, 1.0), (2.5, 0.8, 0.8), LOGITS),  # logits back, linear
    ((9, 10, 11), (9, 10, 11), (1, 1, 1), (1, 1, 1), DATA),  # same shape: untouched, no clip
])
def test_resampling_is_nnunets_own(shape, new, spacing, new_spacing, kwargs):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, *shape)) * [[[[3.0]]], [[[0.5]]]]).astype(np.float32)
    x[0, 3:5, 4:6] = 7.0  # a step: the cubic spline overshoots and skimage's clip acts
    theirs = resample_data_or_seg_to_shape(x, new, spacing, new_spacing, **kwargs)
    ours = nnunet_resampling(SUPPORTED, kwargs, shape, new, spacing, new_spacing)(torch.from_numpy(x)[None])[0]
    assert ours.shape == theirs.shape
    assert np.abs(ours.numpy() - theirs).max() < 1e-5 * np.abs(theirs).max()


def test_a_missing_resampling_key_takes_nnunets_default():
    # no force_separate_z in the kwargs: nnU-Net's function defaults to False (one 3-D
    # spline), not to None (separate z chosen by anisotropy, as on this 1x1x4 mm case)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 9, 10, 6)).astype(np.float32)
    kwargs = {"is_seg": False, "order": 3, "order_z": 0}
    shape, new, spacing, new_spacing = (9, 10, 6), (9, 10, 12), (1.0, 1.0, 4.0), (1.0, 1.0, 2.0)
    theirs = resample_data_or_seg_to_shape(x, new, spacing, new_spacing, **kwargs)
    ours = nnunet_resampling(SUPPORTED, kwargs, shape, new, spacing, new_spacing)
    assert ours.axis is None
    assert np.abs(ours(torch.from_numpy(x)[None])[0].numpy() - theirs).max() < 1e-5 * np.abs(theirs).max()
    assert nnunet_resampling(SUPPORTED, {**kwargs, "force_separate_z": None}, shape, new, spacing, new_spacing).axis == 2


def test_resampling_other_than_nnunets_default_is_refused():
    with pytest.raises(ValueError, match="only nnU-Net's default"):
        nnunet_resampling("resample_torch_fornnunet", DATA, (4, 4, 4), (5, 5, 5), (1, 1, 1), (1, 1, 1))


def _deployment(norms, spacing, transpose=(2, 0, 1)) -> Deployment:
    return Deployment(transpose, tuple(norms), spacing, (SUPPORTED, DATA), (SUPPORTED, LOGITS))


def _case(masked: bool, rng) -> torch.Tensor:
    """[1, C, 10, 9, 8] float64: a CT-like channel, or two MR-like channels zero outside a
    ball (their non-zero box is smaller than the volume)."""
    if not masked:
        return torch.from_numpy(rng.normal(40, 300, (1, 1, 10, 9, 8)))
    g = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in (10, 9, 8)], indexing="ij"))
    inside = (g ** 2).sum(0) < 3.2 ** 2
    return torch.from_numpy(np.where(inside, rng.normal(400, 80, (1, 2, 10, 9, 8)), 0.0))


@pytest.mark.parametrize("masked", [False, True], ids=["ct-clipped", "mr-masked"])
def test_the_pipelines_input_gradient_is_its_finite_difference(masked):
    rng = np.random.default_rng(0)
    x = _case(masked, rng)
    if masked:
        norms, spacing = [ChannelNorm("ZScoreNormalization", masked=True)] * 2, (1.3, 0.8, 1.1)
    else:  # clip limits inside the intensity range: some voxels clipped, their gradient 0
        norms, spacing = [ChannelNorm("CTNormalization", False, 30.0, 250.0, -300.0, 400.0)], (3.2, 0.7, 0.9)
    net = nn.Conv3d(x.shape[1], 3, 3, padding=1).double()
    pipeline = ScanPipeline(net, (0.9, 1.0, 2.5) if not masked else (1.0, 1.0, 1.0), _deployment(norms, spacing))
    out = pipeline(x)
    assert out.shape == (1, 3, *x.shape[2:])
    if masked:  # outside the crop box: background, as nnU-Net's reverted cropping
        assert (out[0, 0, 0] == 0).all() and (out[0, 1:, 0] == OUTSIDE).all()
    else:
        assert ((x < -300) | (x > 400)).any()
    weight = torch.from_numpy(rng.standard_normal(out.shape))
    free = x != 0  # a zero voxel made non-zero moves the mask and the box: a step, no derivative

    def loss(v):
        return (pipeline(x.masked_scatter(free, v)) * weight).sum()

    assert torch.autograd.gradcheck(loss, (x[free].clone().requires_grad_(),), eps=1e-4, atol=1e-6, rtol=1e-4)


def test_a_perturbed_zero_background_moves_the_crop_box_as_nnunet_would():
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    x = _case(True, np.random.default_rng(0)).float()
    d = _deployment([ChannelNorm("ZScoreNormalization", masked=True)] * 2, (1.0, 1.0, 1.0), transpose=(0, 1, 2))
    y = x.clone()
    y[0, 1, 0, 0, 0] = 1.0  # one background voxel of one channel made non-zero
    boxes = []
    for v in (x, y):
        box, mask = d.crop_box(v)
        _, seg, bbox = crop_to_nonzero(v[0].numpy().copy())
        assert [[s.start, s.stop] for s in box] == [list(b) for b in bbox]
        assert torch.equal(mask, torch.from_numpy(seg[0] >= 0))
        boxes.append(box)
    assert boxes[0] != boxes[1] and boxes[1][0].start == 0


def test_with_the_zero_background_fixed_the_gradient_is_the_finite_difference_everywhere():
    # a skull-stripped case: zeros outside the head. Perturbed, a zero voxel joins nnU-Net's
    # mask and box (a step no gradient sees); held fixed (the default), the finite difference
    # agrees with the gradient on every voxel, the background's (both zero) included
    from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask

    from rog.bench.cases import Fixed
    rng = np.random.default_rng(0)
    x = _case(True, rng)
    net = nn.Conv3d(2, 3, 3, padding=1).double()
    pipeline = ScanPipeline(net, (1.0, 1.0, 1.0), _deployment([ChannelNorm("ZScoreNormalization", masked=True)] * 2,
                                                              (1.3, 0.8, 1.1)))
    fixed = ~torch.from_numpy(create_nonzero_mask(x[0].numpy()))[None, None]
    assert fixed.any() and not fixed.all()
    weight = torch.from_numpy(rng.standard_normal((1, 3, *x.shape[2:])))
    held = Fixed(pipeline, x, fixed)
    ok = torch.autograd.gradcheck(lambda v: (held(v) * weight).sum(), (x.clone().requires_grad_(),),
                                  eps=1e-4, atol=1e-6, rtol=1e-4)
    assert ok
    free = torch.autograd.gradcheck(lambda v: (pipeline(v) * weight).sum(), (x.clone().requires_grad_(),),
                                    eps=1e-4, atol=1e-6, rtol=1e-4, raise_exception=False)
    assert not free  # the threat at the mask's edge, undefined without the fixed background
