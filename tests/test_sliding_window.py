import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from rog.infer import SlidingWindow, importance_map, sliding_window, window_starts


def test_window_starts_cover_with_at_most_half_patch_steps():
    for size, patch in [(70, 32), (32, 32), (33, 32), (100, 48)]:
        starts = window_starts(size, patch, 0.5)
        assert starts[0] == 0 and starts[-1] == size - patch
        assert all(b - a <= patch // 2 for a, b in zip(starts, starts[1:]))
    assert window_starts(20, 32, 0.5) == [0]


@pytest.mark.parametrize("overlap", [0.25, 0.5, 0.7])
@pytest.mark.parametrize("mode", ["gaussian", "inverse_distance", "constant"])
def test_pointwise_network_equals_a_full_volume_pass(overlap, mode):
    net = torch.nn.Conv3d(2, 3, 1)
    x = torch.randn(2, 2, 37, 29, 20)
    with torch.no_grad():
        full = net(x)
        out = sliding_window(net, x, (16, 16, 12), overlap, mode, batch_size=3)
    assert (out - full).abs().max() < 1e-5


def test_smaller_than_patch_is_padded_and_cropped_back():
    net = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 10, 40, 7)
    with torch.no_grad():
        out = sliding_window(net, x, (16, 16, 16), 0.5)
    assert out.shape == (1, 2, 10, 40, 7)
    assert (out - net(x)).abs().max() < 1e-5


def test_agrees_with_monai():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(8, 3, 3, padding=1)).eval()
    x = torch.randn(1, 1, 50, 61, 40)
    with torch.no_grad():
        ours = sliding_window(net, x, (24, 24, 24), 0.5, "gaussian", batch_size=4)
        ref = sliding_window_inference(x, (24, 24, 24), 4, net, overlap=0.5, mode="gaussian")
    assert (ours - ref).abs().max() < 1e-5
    # an even patch whose window corners fall under MONAI's 1e-3 floor of the weights
    x = torch.randn(1, 1, 25, 27, 10)
    with torch.no_grad():
        ours = sliding_window(net, x, (16, 16, 8), 0.25, "gaussian", pad_mode="constant")
        ref = sliding_window_inference(x, (16, 16, 8), 4, net, overlap=0.25, mode="gaussian")
    assert (ours - ref).abs().max() < 1e-5


def test_differentiable_end_to_end():
    net = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 30, 30, 20, requires_grad=True)
    sliding_window(net, x, (16, 16, 16), 0.5)[:, 1].sum().backward()
    expected = net.weight[1, 0].item()  # d(logit_1)/dx per voxel for a 1x1x1 conv
    assert torch.allclose(x.grad, torch.full_like(x, expected), atol=1e-5)


def test_mirroring_keeps_a_flip_equivariant_network_unchanged():
    net = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 20, 20, 20)
    with torch.no_grad():
        plain = sliding_window(net, x, (16, 16, 16))
        tta = sliding_window(net, x, (16, 16, 16), mirror_axes=[0, 1, 2])
    assert (plain - tta).abs().max() < 1e-5
    # and a non-equivariant one is changed (TTA really flips)
    shifted = torch.nn.Conv3d(1, 2, (3, 1, 1), padding=(1, 0, 0))
    with torch.no_grad():
        assert (sliding_window(shifted, x, (16, 16, 16)) -
                sliding_window(shifted, x, (16, 16, 16), mirror_axes=[0])).abs().max() > 1e-4


def test_importance_maps():
    from monai.data.utils import compute_importance_map
    g = importance_map((16, 16, 8))
    assert g.min() >= 1e-3 and g[8, 8, 4] > g[0, 0, 0]
    assert torch.allclose(g, compute_importance_map((16, 16, 8), "gaussian", 0.125), rtol=1e-6, atol=0)
    assert importance_map((9, 9, 9)).max() == 1.0  # an odd patch has its centre voxel
    inv = importance_map((9, 9, 9), "inverse_distance")
    assert inv[4, 4, 4] == 1.0 and inv[4, 4, 0] == pytest.approx(0.25)


def test_wrapper_is_a_volume_model():
    net = torch.nn.Conv3d(1, 2, 1)
    vol = SlidingWindow(net, (8, 8, 8))
    x = torch.randn(1, 1, 12, 12, 12)
    with torch.no_grad():
        assert torch.allclose(vol(x), net(x), atol=1e-5)


def test_padding_repeats_the_border_instead_of_inserting_the_mean():
    import numpy as np

    from rog.data.sampling import centred_patch
    image = np.full((1, 6, 6, 6), -3.0, np.float32)  # background after normalisation
    label = np.zeros((6, 6, 6), np.int64)
    image[0, 2:4, 2:4, 2:4], label[2:4, 2:4, 2:4] = 1.0, 1
    pimg, plab = centred_patch(image, label, (10, 10, 10))
    assert pimg.shape == (1, 10, 10, 10) and pimg.min() == -3.0 and (pimg == 0).sum() == 0
    assert plab.sum() == label.sum()
    seen = []
    net = torch.nn.Conv3d(1, 2, 1)
    original = net.forward
    net.forward = lambda w: seen.append(w.min().item()) or original(w)
    sliding_window(net, torch.from_numpy(image)[None], (10, 10, 10))
    assert seen == [-3.0]  # the padded window holds no zeros


class _CountingNet(torch.nn.Module):
    """A 3x3x3 conv (so that windows see their neighbourhood) that counts the windows it runs."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)
        self.windows = 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.conv(x)


@pytest.mark.parametrize("shape", [(2, 1, 40, 36, 30), (1, 1, 12, 40, 30)])  # the second is padded
def test_window_cache_reruns_only_the_windows_a_box_touches(shape):
    torch.manual_seed(0)
    net = _CountingNet()
    sw = SlidingWindow(net, (16, 16, 16), batch_size=3)
    base = torch.randn(shape)
    cache = sw.window_cache(base)
    with torch.no_grad():
        torch.testing.assert_close(cache.volume(range(shape[0])), sw(base), rtol=0, atol=1e-5)
        box = (slice(2, 5), slice(30, 33), slice(1, 4))
        owners = [shape[0] - 1, 0]
        x = base[owners].clone()
        x[(slice(None), slice(None), *box)] += 3.0
        n_windows, net.windows = len(cache.starts), 0
        out = cache.evaluate(x, [box, box], owners)
        padded = shape[2] < 16
        assert net.windows == (2 * n_windows if padded else 2 * 2)  # this box lies in 2 windows
        torch.testing.assert_close(out, sw(x), rtol=0, atol=1e-5)
    cache.commit(1, 0)  # input 1 becomes base volume 0
    with torch.no_grad():
        torch.testing.assert_close(cache.volume([0]), sw(x[1:]), rtol=0, atol=1e-5)


def test_tiling_and_weighting_names_are_checked_and_overlap_is_bounded():
    from rog.infer import SlidingWindow
    from rog.infer.sliding_window import Tiling, sliding_window
    net = torch.nn.Conv3d(1, 2, 1)
    with pytest.raises(ValueError, match="nnunet"):  # a misspelt style names the valid ones
        SlidingWindow(net, (8, 8, 8), style="nnUnet-ish")
    with pytest.raises(ValueError, match="gaussian"):
        SlidingWindow(net, (8, 8, 8), mode="gauss")
    for overlap in (1.0, -0.1):
        with pytest.raises(ValueError, match="overlap"):
            sliding_window(net, torch.zeros(1, 1, 12, 12, 12), (8, 8, 8), overlap=overlap)
    assert SlidingWindow(net, (8, 8, 8), style="nnunet").style is Tiling.NNUNET


@pytest.mark.parametrize("shape", [(20, 18, 16), (8, 18, 6)])  # a volume larger than the patch, one smaller
def test_a_centred_patch_pastes_back_where_it_was_taken(shape):
    from rog.data.sampling import centred_origin, centred_patch, paste
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    label = np.zeros(shape, np.int64)
    label[2:6, 4:9, 1:4] = 1
    size = (10, 10, 10)
    patch, _ = centred_patch(image, label, size)
    origin = centred_origin(label, size)
    np.testing.assert_array_equal(paste(image, patch, origin), image)  # the patch holds the volume's own voxels
    inside = tuple(slice(max(o, 0), min(o + p, s)) for o, p, s in zip(origin, size, shape))
    changed = paste(image, patch + 1, origin)
    assert np.all(changed[(slice(None), *inside)] == image[(slice(None), *inside)] + 1)
    assert np.sum(changed != image) == 2 * np.prod([s.stop - s.start for s in inside])


def _pointwise_case(shape, seed=0):
    """A confident 1x1x1 conv segmenter, a volume and a label that it gets wrong on one slice in 7."""
    torch.manual_seed(seed)
    net = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([-4.0, 4.0]).view(2, 1, 1, 1, 1))
        net.bias.copy_(torch.tensor([2.0, -2.0]))
    net.requires_grad_(False)
    x = torch.rand(1, 1, *shape)
    y = (x[:, 0] > 0.5).long()
    y[:, ::7] = 1 - y[:, ::7]
    return net, x, y


@pytest.mark.parametrize("voxels", [3e7, 3e8])
def test_nnunet_tiling_keeps_the_gradient_of_a_clinical_size_scan(voxels):
    # The gradient of a loss averaged over N voxels is (p - y) / N per voxel: a 12x40x40 volume
    # whose mean loss is scaled by its N / `voxels` has, voxel for voxel, the gradient of a
    # `voxels`-voxel scan (3e7: a 512x512x122 CT), where half-precision sums flush it to zero.
    # A pointwise network's whole-volume logits are its full-volume pass: the fp32 reference.
    net, x, y = _pointwise_case((12, 40, 40))
    scale = x[0, 0].numel() / voxels
    xg = x.clone().requires_grad_(True)
    out = sliding_window(net, xg, (8, 16, 16), 0.5, style="nnunet")
    grad = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y) * scale, xg)[0].double()
    xr = x.clone().requires_grad_(True)
    ref = torch.autograd.grad(torch.nn.functional.cross_entropy(net(xr), y) * scale, xr)[0].double()
    assert bool((ref != 0).all())
    assert int((grad == 0).sum()) == 0  # no voxel zeroed that fp32 keeps
    assert float(torch.nn.functional.cosine_similarity(grad.flatten(), ref.flatten(), 0)) > 0.999
    with torch.no_grad():  # the values are still nnU-Net's half-precision sums, bit for bit
        assert torch.equal(out.detach(), sliding_window(net, x, (8, 16, 16), 0.5, style="nnunet"))



@pytest.mark.parametrize("style", ["monai", "nnunet"])
def test_fold_mean_averages_values_as_the_tool_and_gradients_exactly(style):
    from rog.infer.sliding_window import FoldMean, tile
    nets = torch.nn.ModuleList([torch.nn.Conv3d(1, 2, 1) for _ in range(3)])
    x = torch.randn(1, 1, 20, 24, 12, requires_grad=True)
    ensemble = tile(nets, (8, 16, 8), style=style)
    assert isinstance(ensemble, FoldMean)
    singles = [SlidingWindow(n, (8, 16, 8), style=style) for n in nets]
    out = ensemble(x)
    w = torch.randn_like(out)
    grad = torch.autograd.grad((out * w).sum(), x)[0]
    each = [torch.autograd.grad((s(x) * w).sum(), x)[0] for s in singles]
    assert torch.allclose(grad, sum(each) / 3, atol=1e-6)  # the mean's gradient, in fp32
    with torch.no_grad():
        values = [s(x) for s in singles]
    if style == "nnunet":  # nnU-Net: prediction += fold's (half), then /= folds (half)
        expected = values[0].half()
        for v in values[1:]:
            expected += v.half()
        assert torch.equal(out.detach(), (expected / 3).float())
    else:
        assert torch.allclose(out.detach(), sum(values) / 3, atol=1e-6)
    assert isinstance(tile(torch.nn.ModuleList([nets[0]]), (8, 16, 8)), SlidingWindow)
