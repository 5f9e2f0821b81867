"""The missing- or degraded-modality sweep (`rog modality`): each channel in turn replaced."""
import numpy as np
import pytest
import torch

from rog.attacks import ThreatModel
from rog.bench import BenchCase, ModalityConfig, ModalitySweep
from rog.bench.records import BenchError, dice_score
from rog.cli import main


class Recorder(torch.nn.Module):
    """A two-channel segmenter that keeps every input it is given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Conv3d(2, 3, 3, padding=1)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


def _cases(model, n=2):
    torch.manual_seed(3)
    out = []
    for i in range(n):
        x = torch.randn(1, 2, 10, 10, 10)
        x[:, 1] = x[:, 1] * 3 + 1
        with torch.no_grad():
            y = model.net(x).argmax(1)
        out.append(BenchCase(f"c{i}", x, y, *ThreatModel.channel_range(x)))
    return out


def test_each_channel_is_replaced_alone_and_scored(tmp_path):
    model = Recorder()
    cases = _cases(model)
    cfg = ModalityConfig(replace=["zero", "mean", "noise:3"])
    doc = ModalitySweep(model, 3, cfg, tmp_path, None, [1.0, 1.0, 1.0], progress=False).run(cases)
    assert len(doc.records) == 2 * 2 * 3 and doc.kind == "modality"
    sweep = ModalitySweep(model, 3, cfg, tmp_path / "other", None, [1.0, 1.0, 1.0], progress=False)
    for case in cases:
        for ch in (0, 1):
            other = 1 - ch
            zero, mean, noisy = (sweep.replaced(case, ch, r) for r in ("zero", "mean", "noise:3"))
            assert torch.equal(zero[:, ch], torch.zeros_like(zero[:, ch]))
            assert torch.allclose(mean[:, ch], case.x[:, ch].mean().expand_as(mean[:, ch]))
            assert not torch.equal(noisy[:, ch], case.x[:, ch])
            for x in (zero, mean, noisy):  # the other channel exactly as acquired
                assert torch.equal(x[:, other], case.x[:, other])
            # the record's Dice is the model's on that input
            rec = next(r for r in doc.records if (r.case, r.channel, r.replacement) == (case.name, ch, "zero"))
            with torch.no_grad():
                assert rec.dice == dice_score(model.net(zero).argmax(1), case.y, 3).dice
    s = doc.summary
    assert s.clean_dice == pytest.approx(1.0)  # self-labelled
    for r in ("zero", "mean", "noise:3"):
        per_case = [min(x.dice for x in doc.records if x.case == c.name and x.replacement == r) for c in cases]
        assert s.worst[r] == pytest.approx(np.mean(per_case))
        assert s.dice["0"][r] == pytest.approx(np.mean([x.dice for x in doc.records
                                                        if x.channel == 0 and x.replacement == r]))
    assert s.dice["1"]["zero"] < 1.0  # the model uses the channel
    assert {c.name for c in doc.checks} == {"deterministic model", "finite"}
    # resumed: nothing is run again
    model.seen.clear()
    again = ModalitySweep(model, 3, cfg, tmp_path, None, [1.0, 1.0, 1.0], progress=False).run(cases)
    assert again.records == doc.records and len(model.seen) <= 2 * 2 + 2  # the clean passes and the checks
    # the report shows it: each channel's Dice under each replacement
    from rog.report.build import build_report
    summary = build_report([tmp_path], tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Missing or degraded modality" in html and f"zero: {s.dice['1']['zero']:.3f}" in html
    (name, got), = summary.modalities.items()
    assert got == s


def test_nonsense_is_one_named_error(tmp_path, capsys):
    with pytest.raises(BenchError, match=r"replace \(--replace\) 'blurry'"):
        ModalityConfig(replace=["blurry"])
    with pytest.raises(BenchError, match="severities"):
        ModalityConfig(replace=["noise:9"])
    one = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 6, 6, 6)
    case = BenchCase("c", x, torch.zeros(1, 6, 6, 6, dtype=torch.long), *ThreatModel.channel_range(x))
    with pytest.raises(BenchError, match="1 input channel"):
        ModalitySweep(one, 2, ModalityConfig(), tmp_path, None, None, progress=False).run([case])
    model = Recorder()
    with pytest.raises(BenchError, match="channels 0 to 1"):
        ModalitySweep(model, 3, ModalityConfig(channels=[2]), tmp_path, None, None, progress=False).run(_cases(model))
    assert main(["modality", str(tmp_path / "nowhere"), "--replace", "blurry"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--replace" in err[0]
