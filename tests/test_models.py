import pytest
import torch

from rog.models import ROG, build_model, count_parameters, lattice
from rog.models.registry import dynunet_stages
from rog.models.summary import gflops
from rog.plan import plan_for

# s0 / s1 / s2 of the ten MSD tasks (REFERENCE section 2)
MSD_STRIDES = {
    "01": (1, 2, 2), "02": ((2, 2, 1), 2, 2), "03": ((2, 2, 1), 2, 2), "04": (1, 1, 2),
    "05": (1, (2, 2, 1), (2, 2, 1)), "06": ((2, 2, 1), 2, 2), "07": ((2, 1, 1), (2, 2, 1), 2),
    "08": (1, (2, 2, 1), 2), "09": ((2, 2, 1), (2, 2, 1), 2), "10": ((2, 2, 1), (2, 2, 1), 2),
}


def _triple(s):
    return (s,) * 3 if isinstance(s, int) else tuple(s)


@pytest.mark.parametrize("task", sorted(MSD_STRIDES))
def test_output_shape_equals_input_shape_for_every_msd_plan(task):
    strides = [_triple(s) for s in MSD_STRIDES[task]]
    model = ROG(2, 3, strides, width=4).eval()
    size = [2 * t for t in model.total_stride]
    with torch.no_grad():
        out = model(torch.randn(1, 2, *size))
    assert out.shape == (1, 3, *size)
    plan = plan_for(2, 3, strides, patch_size=size, width=8)
    with torch.no_grad():
        assert build_model(plan, "dynunet").eval()(torch.randn(1, 2, *size)).shape == (1, 3, *size)


def test_parameter_counts_match_the_published_module():
    assert count_parameters(ROG(1, 3)) == 2_596_347
    assert count_parameters(ROG(4, 4)) == 2_596_556
    assert count_parameters(ROG(1, 2)) == 2_596_315
    assert count_parameters(ROG(1, 2).nodes) == 2_561_472


def test_flops_match_the_published_module():
    assert gflops(ROG(4, 4), [4, 96, 96, 96]) == pytest.approx(79.31, rel=0.005)
    assert gflops(ROG(1, 2, ((2, 2, 1), 2, 2)), [1, 96, 96, 96]) == pytest.approx(19.88, rel=0.005)
    assert gflops(ROG(1, 3, (1, 1, 2)), [1, 32, 48, 32]) == pytest.approx(13.36, rel=0.005)


def test_lattice_is_the_papers_14_nodes():
    nodes, edges = lattice()
    assert [(n.level, n.column) for n in nodes if n.level == 0] == [(0, 0), (0, 2), (0, 4), (0, 6), (0, 8)]
    assert len(nodes) == 14 and sorted({n.level for n in nodes}) == [0, 1, 2, 3]
    into = lambda lv, d: sorted((e.src.level, e.src.column, e.kind) for e in edges
                                if (e.dst.level, e.dst.column) == (lv, d))
    assert into(1, 3) == [(0, 2, "down"), (1, 1, "same"), (2, 2, "up")]
    assert into(3, 5) == [(2, 4, "down"), (3, 3, "same")]
    assert into(0, 8) == [(0, 6, "same"), (1, 7, "up")]
    model = ROG(1, 2, width=4)
    assert model.nodes["n3_3"].down is None and model.nodes["n0_8"].down is None
    assert model.nodes["n0_0"].up is None and model.nodes["n0_8"].up is not None


@pytest.mark.parametrize("scales,length,nodes", [(3, 1, 6), (4, 1, 10), (4, 3, 18), (5, 2, 20)])
def test_lattice_length_and_scales_are_configurable(scales, length, nodes):
    assert len(lattice(scales, length)[0]) == nodes
    model = ROG(1, 2, width=4, num_scales=scales, length=length).eval()
    size = [2 * t for t in model.total_stride]
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size)).shape == (1, 2, *size)


def test_gradients_reach_the_input_and_every_parameter():
    model = ROG(2, 3, (1, 1, 2), width=4)
    x = torch.randn(2, 2, 16, 24, 16, requires_grad=True)
    model(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_mode_is_deterministic():
    model = ROG(1, 2, (1, 1, 2), width=8).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_indivisible_input_names_the_axis():
    model = ROG(1, 2, ((2, 2, 1), 2, 2), width=4)
    with pytest.raises(ValueError, match="axis 2 is not divisible by the network's total stride 16"):
        model(torch.randn(1, 1, 32, 32, 24))


def test_registry_user_factory_and_errors():
    plan = plan_for(1, 2, patch_size=(32, 32, 32), width=4)
    model = build_model(plan, "tests.factories:tiny")
    assert isinstance(model, torch.nn.Conv3d)
    with pytest.raises(ValueError, match="unknown model"):
        build_model(plan, "nope")
    with pytest.raises(ValueError, match="cannot import"):
        build_model(plan, "tests.factories:missing")


def test_dynunet_is_configured_the_nnunet_way():
    plan = plan_for(1, 3, ((2, 2, 1), 2, 2), patch_size=(64, 64, 32))
    plan.target_spacing = [0.8, 0.8, 2.5]
    kernels, strides = dynunet_stages(plan)
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kernels[0] == [3, 3, 1] and kernels[1] == [3, 3, 3]  # in-plane only while anisotropic
    model = build_model(plan, "dynunet")
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert max(widths) == 320


def test_a_model_factory_that_cannot_be_imported_is_one_line(tmp_path, capsys):
    from rog.cli import main
    from rog.plan import plan_for
    plan_for(1, 3).save(tmp_path / "plan.json")
    (tmp_path / "in").mkdir()
    code = main(["predict", "--model", "nosuch.module:factory", "--plan", str(tmp_path / "plan.json"),
                 "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "--model nosuch.module:factory: cannot import the factory (No module named 'nosuch')" in err
