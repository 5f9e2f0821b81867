import pytest
import torch

from rog.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint


def test_atomic_save_and_safe_load(tmp_path):
    model = torch.nn.Conv3d(1, 2, 1)
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "epoch": 3})
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    other = torch.nn.Conv3d(1, 2, 1)
    load_weights(other, tmp_path / "c.pt")
    assert torch.equal(other.weight, model.weight)


def test_bad_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="c.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "c.pt")
    save_checkpoint(tmp_path / "c.pt", {"model": torch.nn.Conv3d(1, 2, 1).state_dict()})
    raw = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="t.pt: unreadable checkpoint"):
        load_checkpoint(tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_weights(torch.nn.Conv3d(1, 3, 1), tmp_path / "c.pt")
